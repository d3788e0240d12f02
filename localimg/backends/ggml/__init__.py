"""localimg.backends.ggml."""
