"""Shared helpers of the quantization tests: a tiny config whose block widths split into GGML K-blocks."""

import dataclasses

import torch

from ovi_core.model.config import TINY
from ovi_core.model.loader import random_fusion, save_fusion

# dim 256 / ffn 512: every block Linear row is a whole number of 256-value K-blocks
CFG = dataclasses.replace(TINY, video=dataclasses.replace(TINY.video, dim=256, ffn_dim=512),
                          audio=dataclasses.replace(TINY.audio, dim=256, ffn_dim=512))


def write_source(path, *, seed=0, dtype=torch.bfloat16):
    """A tiny random fusion model in the official layout; returns the float32 model it came from."""
    model = random_fusion(CFG, seed=seed)
    save_fusion(model, path, dtype=dtype)
    return model


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    video = torch.randn(1, 48, 3, 4, 4, generator=g)
    audio = torch.randn(1, 10, 20, generator=g)
    ctx = [torch.randn(5, CFG.video.text_dim, generator=g)]
    return video, audio, torch.tensor([500.0]), ctx


def forward(model, seed=0):
    video, audio, t, ctx = inputs(seed)
    with torch.no_grad():
        return model(video, audio, t, ctx, ctx)


def rel(a, b):
    return float((a.float() - b.float()).norm() / b.float().norm())
