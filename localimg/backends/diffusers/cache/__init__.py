"""Step caches (diffusers' denoiser hooks): the knobs of each method, which pipelines can use
them, and the per-backend state that plans and applies them around a call."""
