"""Video VAE (Wan2.2, 48-channel latent, 4x time / 16x space)."""
