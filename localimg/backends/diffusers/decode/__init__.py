"""From latents to pixels: step previews and the tiny autoencoder (TAESD) swapped in for the VAE."""
