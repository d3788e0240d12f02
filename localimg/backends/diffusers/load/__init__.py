"""Loading a diffusers pipeline: the hub, the pipeline class, precision, GGUF files, quantization,
and the components localimg swaps in; everything that runs once per model load."""
