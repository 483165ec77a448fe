"""When to tile the Wan2.2 VAE decode: only when the untiled decode would not fit in memory.

Tiles blend across their overlaps, so a tiled decode differs from the untiled one near the seams (up to
about 1e-2 at 960 x 960). The untiled decode is the reference; :func:`plan_decode` picks it whenever its
estimated peak (:func:`ovi_core.vae.wan_tiling.estimate_decode_memory` plus the kept trunk output and the
output video) fits in the memory free on the decode device (CUDA: free device memory plus what PyTorch has
reserved but not used; CPU: the kernel's ``MemAvailable``), and otherwise the largest tiles that fit. The
chosen :class:`DecodePlan` says whether it tiled, and why, so the caller can tell the user.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch

from ovi_core.vae.wan_tiling import _auto_tile, _tile_starts, estimate_decode_memory

logger = logging.getLogger(__name__)

# tile sides tried, largest first, when the untiled decode does not fit (latent pixels)
TILE_SIDES = (48, 40, 32, 24, 16, 12, 8)
SAFETY = 0.9  # use at most this fraction of the free memory
SLACK_BYTES = 256 << 20  # weight casts and convolution workspace
OUTPUT_COPIES = 4  # the output video plus the caller's conversions (float, clamp/scale, channel-last copy)


@dataclass(frozen=True)
class DecodePlan:
    """How one decode runs: tiles of ``tile_h x tile_w`` latents overlapping by ``overlap``."""

    tile_h: int
    tile_w: int
    overlap: int
    tiles: int
    estimated_bytes: int  # estimated peak of this plan
    untiled_bytes: int  # estimated peak of the untiled decode
    available_bytes: int | None  # free memory seen (None: unknown, assumed enough)
    requested: bool = False  # the caller asked for tile_latent

    @property
    def tiled(self) -> bool:
        return self.tiles > 1

    @property
    def fits(self) -> bool:
        return self.available_bytes is None or self.estimated_bytes <= self.available_bytes * SAFETY

    def message(self) -> str:
        """One line for the user; empty for an untiled decode."""
        if not self.tiled:
            return ""
        gb = lambda b: f"{b / 1e9:.1f} GB"  # noqa: E731
        if self.requested:
            why = "as requested (tile size set)"
        else:
            free = "unknown" if self.available_bytes is None else gb(self.available_bytes)
            why = f"because the untiled decode needs about {gb(self.untiled_bytes)} and {free} is free"
        text = (f"Video decoded in {self.tiles} tiles of {self.tile_h}x{self.tile_w} latents {why}; "
                "small seams are possible where tiles overlap.")
        if not self.fits:
            text += f" Even these tiles need about {gb(self.estimated_bytes)}: the decode may run out of memory."
        return text


def available_memory(device: torch.device | str) -> int | None:
    """Bytes free for a new allocation on ``device`` (None when unknown)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            return None
        free, _total = torch.cuda.mem_get_info(dev)
        return int(free + torch.cuda.memory_reserved(dev) - torch.cuda.memory_allocated(dev))
    if dev.type == "cpu":
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        try:
            import psutil  # noqa: PLC0415  (optional)

            return int(psutil.virtual_memory().available)
        except ImportError:
            pass
        try:
            return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            return None
    return None


def plan_decode(
    shape: tuple[int, ...] | torch.Size,
    *,
    config,
    compute_dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    tile_latent: int | None = None,
    tile_overlap: int = 8,
    memory_budget: int | None = None,
) -> DecodePlan:
    """Choose the tiling of a decode of a latent of ``shape`` ``[B, z, T, h, w]``.

    ``tile_latent`` forces square tiles of that size (``tile_overlap`` apart). Otherwise untiled when it fits
    in ``memory_budget`` bytes (default: what :func:`available_memory` reports for ``device``), else the
    largest tiles from :data:`TILE_SIDES` that fit (the smallest when none does, with a warning).
    """
    b, _, t, h, w = (int(x) for x in shape)
    isz = torch.empty((), dtype=compute_dtype).element_size()
    s, tf = config.spatial_factor, config.temporal_factor
    frames = 1 + tf * (t - 1)
    c0 = config.dec_dim * config.dim_mult[-1]
    fixed = b * c0 * t * h * w * isz + OUTPUT_COPIES * b * 3 * frames * h * s * w * s * isz + SLACK_BYTES

    def need(th: int, tw: int, tiled: bool) -> int:
        blend = (h * s) * (w * s) * 8 if tiled else 0  # float64 weight sum
        if tiled and isz < 4:  # the float32 blend accumulator, next to the output it is cast to at the end
            blend += b * 3 * frames * (h * s) * (w * s) * 4
        return fixed + blend + estimate_decode_memory(min(th, h), min(tw, w), config=config, bytes_per_value=isz,
                                                      batch=b)

    def plan(th: int, tw: int, overlap: int, requested: bool = False) -> DecodePlan:
        n = len(_tile_starts(h, th, overlap)) * len(_tile_starts(w, tw, overlap))
        return DecodePlan(th, tw, overlap, n, need(th, tw, n > 1), untiled, avail, requested)

    untiled = need(h, w, False)
    if tile_latent is not None:
        if tile_latent < 1:
            raise ValueError(f"tile_latent must be a positive number of latent pixels, got {tile_latent}")
        if not 0 <= tile_overlap < tile_latent:
            raise ValueError(
                f"tile_overlap must be in [0, tile_latent) = [0, {tile_latent}), got {tile_overlap}; "
                f"pass e.g. tile_overlap={tile_latent // 4}"
            )
        avail = memory_budget
        return plan(tile_latent, tile_latent, tile_overlap, requested=True)
    avail = available_memory(device) if memory_budget is None else int(memory_budget)
    best = plan(h, w, 0)
    if best.fits:
        return best
    for side in TILE_SIDES:
        if side * side >= h * w:
            continue
        overlap = min(tile_overlap, side // 4)
        th, tw = _auto_tile(h, w, area=side * side, overlap=overlap)
        best = plan(th, tw, overlap)
        if best.fits:
            break
    return best
