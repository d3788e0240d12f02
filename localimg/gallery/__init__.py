"""localimg.gallery."""
