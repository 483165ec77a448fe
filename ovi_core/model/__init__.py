"""The Ovi twin-tower fusion DiT: configs, towers, fusion model, loading."""
