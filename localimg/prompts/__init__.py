"""Prompt languages shared by the engines: A1111 weights, LoRA tags, embeddings."""
