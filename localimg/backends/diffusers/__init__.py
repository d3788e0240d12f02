"""localimg.backends.diffusers."""
