"""The training objective: noise levels, the joint flow-matching loss and the learning-rate schedule.

    s ~ sampling(uniform | logit-normal) then shifted      one s per clip, shared by both towers
    x_v = (1 - s) z_v + s n_v,  x_a = (1 - s) z_a + s n_a   independent noises n_v, n_a
    loss = w_v |v_v - (n_v - z_v)|^2 + w_a |v_a - (n_a - z_a)|^2     (w_v 0.85, w_a 0.15)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch


def shift_sigma(sigma: torch.Tensor, shift: float) -> torch.Tensor:
    """``s' = k s / (1 + (k - 1) s)`` (k = 1: unchanged; k > 1 favours high noise)."""
    if shift == 1.0:
        return sigma
    return shift * sigma / (1.0 + (shift - 1.0) * sigma)


def sample_sigmas(n: int, *, generator: torch.Generator, mode: str = "uniform", logit_mean: float = 0.0,
                  logit_std: float = 1.0, shift: float = 1.0) -> torch.Tensor:
    """``n`` noise levels in (0, 1), float32 on CPU."""
    if mode == "uniform":
        s = torch.rand(n, generator=generator, dtype=torch.float32)
    elif mode == "logit_normal":
        s = torch.sigmoid(torch.randn(n, generator=generator, dtype=torch.float32) * logit_std + logit_mean)
    else:
        raise ValueError(f"Unknown timestep sampling {mode!r}; use 'uniform' or 'logit_normal'.")
    return shift_sigma(s, shift)


def flow_matching_loss(
    model: Callable,
    video: torch.Tensor,
    audio: torch.Tensor,
    video_context: list[torch.Tensor],
    audio_context: list[torch.Tensor],
    *,
    sigma: torch.Tensor,
    video_noise: torch.Tensor,
    audio_noise: torch.Tensor,
    video_weight: float = 0.85,
    audio_weight: float = 0.15,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Joint flow-matching loss of one batch. Returns ``(total, video_mse, audio_mse)`` (fp32 scalars).

    Shapes: ``video``/``video_noise`` ``[B, 48, F, h, w]``, ``audio``/``audio_noise`` ``[B, L, 20]``, ``sigma``
    ``[B]`` in [0, 1]; clean latents and noise in fp32, the model sees ``dtype``.
    """
    sv = sigma.view(-1, 1, 1, 1, 1)  # [B, 1, 1, 1, 1]
    sa = sigma.view(-1, 1, 1)  # [B, 1, 1]
    xv = (1 - sv) * video + sv * video_noise
    xa = (1 - sa) * audio + sa * audio_noise
    tv, ta = video_noise - video, audio_noise - audio
    pv, pa = model(xv.to(dtype), xa.to(dtype), sigma * 1000.0, [c.to(dtype) for c in video_context],
                   [c.to(dtype) for c in audio_context])
    lv = torch.mean((pv.float() - tv) ** 2)
    la = torch.mean((pa.float() - ta) ** 2)
    return video_weight * lv + audio_weight * la, lv, la


def lr_lambda(step: int, *, warmup: int, total: int, schedule: str) -> float:
    """Multiplier of the learning rate before optimizer step ``step`` (0-based)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant" or total <= warmup:
        return 1.0
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1 + math.cos(math.pi * p)) if schedule == "cosine" else 1.0 - p


