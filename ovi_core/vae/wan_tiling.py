"""Spatial tiling of the Wan2.2 VAE decode: tile placement, blend ramps, and the peak-memory estimate.

Peak memory of a decode (full-size model, float32 compute, batch 1, one tile of th x tw latents).
The largest activations live at the last decoder stage (8th x 8tw, 4 frames per chunk, 512 -> 256
channels); about 2,300 channel-frames of that size are alive at the peak, ~0.6 M * th * tw values.
The causal caches hold 2 frames of every 3-tap convolution input at every stage, ~0.46 M * th * tw
values. Together about 1.05 M floats = ~4.2 MB per latent pixel of the tile
(:func:`estimate_decode_memory`, an estimate, not measured on a GPU here):

===========================  ==============  ===================
video                        tile (latent)   activations+caches
===========================  ==============  ===================
any, tile_latent=32          32 x 32         ~4.4 GB
121 x 704 x 704 (untiled)    44 x 44         ~8.3 GB
241 x 960 x 960 (tiled)      34 x 60         ~8.8 GB
121 x 704 x 1280 (tiled)     44 x 44         ~8.3 GB
===========================  ==============  ===================

plus the weights (0.70 G parameters: 1.4 GB bf16 / 2.8 GB fp32), a transient fp32 copy of one layer's
weights when they are stored in bf16, the kept trunk output (sized in :mod:`ovi_core.vae.wan_vae`),
convolution workspace, and the output video itself (121 x 704 x 704: 0.7 GB; 241 x 960 x 960: 2.7 GB).
So both 121 frames at 704 x 704 and 241 frames at 960 x 960 stay around 11-14 GB tiled; untiled,
241 x 960 x 960 needs about 15 GB of activations. The decode tiles by itself only when the free memory
requires it; pass ``tile_latent`` (e.g. 24: ~2.4 GB per tile) to force tiles. The per-tile peak does not
grow with the number of frames.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ovi_core.vae.wan_config import WanVAEConfig

# Automatic spatial tiling of decode (latent units), used only when the untiled decode does not fit in memory
# (ovi_core.vae.decode_plan): tiles of at most AUTO_TILE_AREA latent pixels (smaller when needed) overlapping
# by AUTO_TILE_OVERLAP.
AUTO_TILE_AREA = 48 * 48
AUTO_TILE_OVERLAP = 8


# ----------------------------------------------------------------------------------------------
# Tiling helpers
# ----------------------------------------------------------------------------------------------


def _tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Evenly spread starts of tiles of size ``tile`` covering ``[0, length)``, neighbours overlapping by
    at least ``overlap``."""
    if tile >= length:
        return [0]
    n = math.ceil((length - overlap) / (tile - overlap))
    return [round(k * (length - tile) / (n - 1)) for k in range(n)]


def _auto_tile(h: int, w: int, *, area: int, overlap: int) -> tuple[int, int]:
    """Tile height and width (latent units) of at most ``area`` latent pixels that cover ``h x w`` with the
    least decoded area (overlaps included); ties go to fewer tiles."""

    def size(length: int, n: int) -> int:
        return length if n == 1 else math.ceil((length + (n - 1) * overlap) / n)

    best: tuple[int, int, int, int] | None = None
    for ny in range(1, h + 1):
        th = size(h, ny)
        if th <= overlap and ny > 1:
            break
        for nx in range(1, w + 1):
            tw = size(w, nx)
            if tw <= overlap and nx > 1:
                break
            if th * tw <= area:
                cand = (ny * th * nx * tw, ny * nx, th, tw)
                if best is None or cand < best:
                    best = cand
                break  # more tiles along x only add work
    if best is None:  # overlap too large for the area: fall back to square tiles
        side = max(overlap + 1, math.isqrt(area))
        return side, side
    return best[2], best[3]


def _ramp_weights(starts: list[int], tile: int, length: int, scale: int, k: int) -> Tensor:
    """1D blend weights (pixel units) of tile ``k``: linear ramps over the overlaps with its neighbours,
    so that the two ramps of an overlap sum to 1."""
    size = min(tile, length) * scale
    w = torch.ones(size, dtype=torch.float64)
    if k > 0:
        n = (starts[k - 1] + tile - starts[k]) * scale
        if n > 0:
            w[:n] *= (torch.arange(n, dtype=torch.float64) + 0.5) / n
    if k + 1 < len(starts):
        n = (starts[k] + tile - starts[k + 1]) * scale
        if n > 0:
            w[size - n :] *= 1.0 - (torch.arange(n, dtype=torch.float64) + 0.5) / n
    return w


def estimate_decode_memory(tile_h: int, tile_w: int, *, config: WanVAEConfig | None = None,
                           bytes_per_value: int = 4, batch: int = 1) -> int:
    """Rough peak bytes of decoder activations + causal caches for one ``tile_h x tile_w`` latent tile.

    Counts, at every decoder stage, 2 cached frames per 3-tap causal conv input (plus the time conv
    caches) and, at the last and largest stage, about 4.5x the stage input alive at once (input, norm,
    SiLU, time-padded copy, shortcut, conv output) for the 4 frames of a chunk. An estimate, not a bound.
    """
    cfg = config or WanVAEConfig.full()
    dims = [cfg.dec_dim * u for u in (cfg.dim_mult[-1], *cfg.dim_mult[::-1])]
    n = len(cfg.dim_mult)
    tu = cfg.temperal_downsample[::-1]
    area = tile_h * tile_w
    frames = 1
    cache = 2 * (cfg.z_dim + 4 * dims[0]) * area  # conv1 + middle
    peak = 0
    for i in range(n):
        c_in, c_out = dims[i], dims[i + 1]
        conv_in = c_in + c_out + (2 * cfg.num_res_blocks + 1) * c_out  # 2 convs per res block
        cache += 2 * conv_in * area
        live = (c_in + c_out / 2 + c_in + c_in * 1.5 + c_out) * frames * area
        if i != n - 1:
            if i < len(tu) and tu[i]:
                cache += 2 * c_out * area  # time_conv cache
                frames *= 2
            area *= 4
        peak = max(peak, live)
    cache += 2 * dims[-1] * area  # head conv
    return int((cache + peak) * bytes_per_value * batch)

