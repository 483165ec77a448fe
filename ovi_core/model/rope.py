"""Rotary position embeddings of the Ovi towers (OVI_REFERENCE.md §2.6).

Pairs are interleaved: head dims ``(2j, 2j+1)`` form complex pair ``j``. With ``c = head_dim // 2`` pairs:

* video (3-D): pairs ``[0, c - 2*(c//3))`` rotate by the latent frame index f, the next ``c//3`` by row h,
  the last ``c//3`` by column w. Each axis has its own frequencies ``theta^(-2j/d_axis)`` with
  ``d_axis = 2 * pairs_axis`` (the official ``rope_params(1024, d_axis)``).
* audio (1-D): only the temporal share (the first ``c - 2*(c//3)`` pairs, same frequencies as the video
  temporal axis) rotates, by ``i * temporal_rope_scaling_factor * w_j`` for token i; the other pairs pass
  through. The audio/video phase difference on those pairs is thus ``(f - 0.19676 i) * w_j``.

Tables are ``cos``/``sin`` of float64 angles (float32 on devices without float64, i.e. MPS), computed
per (grid, device) and cached; they are not module buffers and never enter a state dict. Rotation is done
in that precision and the result rounded to the compute dtype, as the official code does (float64 -> bf16).
"""

from __future__ import annotations

import functools

import torch

THETA = 10000.0


def axis_pairs(head_dim: int) -> tuple[int, int, int]:
    """Complex pairs per axis (temporal, height, width), e.g. 128 -> (22, 21, 21), 16 -> (4, 2, 2)."""
    c = head_dim // 2
    return c - 2 * (c // 3), c // 3, c // 3


def _table_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


def _angles(positions: torch.Tensor, pairs: int, scale: float = 1.0) -> torch.Tensor:
    """``[len(positions), pairs]`` angles ``pos * scale * theta^(-2j / (2*pairs))`` in float64."""
    dim = 2 * pairs
    inv = 1.0 / torch.pow(THETA, torch.arange(0, dim, 2, dtype=torch.float64) / dim)  # [pairs]
    return torch.outer(positions.to(torch.float64), scale * inv)


@functools.lru_cache(maxsize=64)
def _video_table(f: int, h: int, w: int, head_dim: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    pf, ph, pw = axis_pairs(head_dim)
    af = _angles(torch.arange(f), pf)  # [f, pf]
    ah = _angles(torch.arange(h), ph)  # [h, ph]
    aw = _angles(torch.arange(w), pw)  # [w, pw]
    ang = torch.cat(
        [
            af[:, None, None, :].expand(f, h, w, pf),
            ah[None, :, None, :].expand(f, h, w, ph),
            aw[None, None, :, :].expand(f, h, w, pw),
        ],
        dim=-1,
    ).reshape(f * h * w, 1, pf + ph + pw)  # [L, 1, c]
    dt = _table_dtype(device)
    return ang.cos().to(device=device, dtype=dt), ang.sin().to(device=device, dtype=dt)


@functools.lru_cache(maxsize=64)
def _audio_table(length: int, head_dim: int, scale: float, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    c = head_dim // 2
    pt = axis_pairs(head_dim)[0]
    ang = torch.zeros(length, c, dtype=torch.float64)
    ang[:, :pt] = _angles(torch.arange(length), pt, scale)  # pairs >= pt stay at angle 0 (pass through)
    ang = ang[:, None, :]  # [L, 1, c]
    dt = _table_dtype(device)
    return ang.cos().to(device=device, dtype=dt), ang.sin().to(device=device, dtype=dt)


def video_rope(grid: tuple[int, int, int], head_dim: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cos, sin)``, each ``[F*h*w, 1, head_dim//2]``, for a video token grid ``(F, h, w)``."""
    f, h, w = (int(g) for g in grid)
    return _video_table(f, h, w, int(head_dim), torch.device(device))


def audio_rope(
    length: int, head_dim: int, scale: float, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cos, sin)``, each ``[L, 1, head_dim//2]``, for ``L`` audio tokens with temporal scale ``scale``."""
    return _audio_table(int(length), int(head_dim), float(scale), torch.device(device))


def apply_rope(x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Rotate interleaved pairs of ``x`` ``[B, L, H, D]`` by ``rope = (cos, sin)`` (each ``[L, 1, D/2]``).

    Computed in the table's precision (float64, or float32 on MPS) and returned in ``x``'s dtype.
    """
    cos, sin = rope
    b, n, h, d = x.shape
    xp = x.to(cos.dtype).reshape(b, n, h, d // 2, 2)  # [B, L, H, D/2, 2]
    a, bb = xp[..., 0], xp[..., 1]
    out = torch.stack([a * cos - bb * sin, a * sin + bb * cos], dim=-1)  # [B, L, H, D/2, 2]
    return out.reshape(b, n, h, d).to(x.dtype)
