"""localimg: local image generation as a CLI and an OpenAI-compatible server."""

__version__ = "0.2.0"
