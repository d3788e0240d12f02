"""localimg.engine."""
