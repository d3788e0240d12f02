"""localimg.download."""
