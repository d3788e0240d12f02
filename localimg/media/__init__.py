"""localimg.media."""
