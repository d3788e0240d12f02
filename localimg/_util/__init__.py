"""localimg._util."""
