"""Video VAE (Wan2.2, 48-channel latent, 4x time / 16x space)."""

from ovi_core.vae.wan_vae import (
    WanVAE,
    WanVAEConfig,
    full_size_shapes,
    load_wan_vae,
    shapes_for,
    write_tiny_wan_vae,
)

__all__ = ["WanVAE", "WanVAEConfig", "full_size_shapes", "load_wan_vae", "shapes_for", "write_tiny_wan_vae"]
