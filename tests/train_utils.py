"""Helpers shared by the training tests: tiny fusion files and synthetic prepared datasets."""

from __future__ import annotations

import dataclasses
import json
import os

import torch
from safetensors.torch import save_file


def write_latent_dataset(root: str, *, n: int = 2, seed: int = 0, frames: int = 3, hw: int = 4, audio_len: int = 15,
                         text_len: int = 5, text_dim: int = 32, offset: float = 0.0) -> str:
    """Write ``n`` synthetic clips in the prepared format (index.json + one safetensors per clip).

    ``offset`` adds a per-clip, per-channel constant of that scale (real latents have such structure;
    it gives the LoRA something learnable beyond the noise)."""
    os.makedirs(root, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    items = []
    for i in range(n):
        v_off = offset * torch.randn(48, 1, 1, 1, generator=g)
        a_off = offset * torch.randn(1, 20, generator=g)
        scale = 0.3 if offset else 1.0
        t = {
            "video_latent": (v_off + scale * torch.randn(48, frames, hw, hw, generator=g)).contiguous(),
            "audio_latent": (a_off + scale * torch.randn(audio_len, 20, generator=g)).contiguous(),
            "text_embedding": torch.randn(text_len, text_dim, generator=g),
        }
        save_file(t, os.path.join(root, f"clip{i}.safetensors"))
        items.append({"name": f"clip{i}", "file": f"clip{i}.safetensors", "caption": f"clip {i}"})
    with open(os.path.join(root, "index.json"), "w") as f:
        json.dump({"format": 1, "items": items, "skipped": []}, f)
    return root


def write_tiny_model(path: str, *, seed: int = 0) -> str:
    """The TINY preset (dim 64, 2 blocks) in the official file format."""
    from ovi_core.model.loader import write_tiny_fusion

    return write_tiny_fusion(path, seed=seed)


def write_fit_model(path: str, *, seed: int = 0, head_gain: float = 3.0) -> str:
    """A tiny model that can fit data: width 192 (so the video head, 192 outputs per token, is square)
    and a head with trained-like gain. TINY's 64-wide head can only reach a 64-dim slice of the
    192-dim video token outputs."""
    from ovi_core.model.config import TINY, FusionConfig
    from ovi_core.model.loader import random_fusion, save_fusion

    kw = dict(dim=192, num_heads=12, ffn_dim=128, num_layers=2)
    cfg = FusionConfig(video=dataclasses.replace(TINY.video, **kw), audio=dataclasses.replace(TINY.audio, **kw))
    m = random_fusion(cfg, seed=seed)
    with torch.no_grad():
        m.video_model.head.head.weight.mul_(head_gain)
        m.audio_model.head.head.weight.mul_(head_gain)
    save_fusion(m, path, dtype=torch.bfloat16)
    return path
