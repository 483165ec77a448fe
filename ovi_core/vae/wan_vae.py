"""Wan2.2 video VAE (the ``Wan2.2_VAE.pth`` of Wan-AI/Wan2.2-TI2V-5B), as used by Ovi.

Video ``[B, 3, F, H, W]`` in [-1, 1]  <->  latent ``[B, 48, 1 + (F - 1) // 4, H / 16, W / 16]``.

* 2x2 pixel-unshuffle ("patchify", 3 -> 12 channels) then three spatial /2 stages: 16x in space.
* Two of those stages also halve time with causal strided convolutions: 4x in time, the first frame
  alone in its own latent frame.
* Causal 3D convolutions (time padding only on the past side), RMS norms with a learned ``gamma``,
  residual blocks, one single-head spatial attention per frame in the middle of encoder and decoder,
  and parameter-free "average down / duplicate up" shortcuts around every resolution change.
* The latent is the posterior mean normalised per channel with the official 48 mean/std constants.

Streaming. Both directions run through time in causal chunks, as the official code does: the encoder
takes the first frame, then groups of 4 frames; the decoder takes one latent frame at a time. Every
causal convolution keeps the last frames of its input in a per-call cache (a dict owned by the call,
never by the module), so a chunk sees exactly the context a whole-video pass would. The result equals
the official chunked computation; decoding the first k latent frames gives a prefix of the full decode.

Spatial tiling. The decoder's latent-resolution trunk (``conv1`` + ``middle``, which holds the only
non-local operation, the per-frame attention) always runs on whole frames; its output for all latent
frames is kept (``[B, 1024, T, h, w]``: 0.25 GB for 121 frames at 704 x 704, 0.9 GB for 241 at 960 x 960,
fp32). The up-sampling stages, which are purely convolutional, then run tile by tile:
``decode(..., tile_latent=N)`` decodes overlapping N x N latent tiles one after the other (each through
all frames with its own cache) and blends them with linear ramps across the overlaps. Tiles agree with
the untiled decode exactly except within a few latent pixels of a tile border. Without
``tile_latent``, the decode runs untiled (exactly like the reference) unless its estimated peak memory
exceeds what is free on the device; only then is it tiled, with the largest tiles that fit (at most
``AUTO_TILE_AREA`` latent pixels, overlap ``AUTO_TILE_OVERLAP``; see ``ovi_core.vae.decode_plan``).

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
weights when they are stored in bf16, the kept trunk output (above), convolution workspace, and the
output video itself (121 x 704 x 704: 0.7 GB; 241 x 960 x 960: 2.7 GB). So both 121 frames at 704 x 704
and 241 frames at 960 x 960 stay around 11-14 GB tiled; untiled, 241 x 960 x 960 needs about 15 GB of
activations. The decode tiles by itself only when the free memory requires it; pass ``tile_latent``
(e.g. 24: ~2.4 GB per tile) to force tiles. The per-tile peak does not grow with the number of frames.

Precision. The official pipeline stores the VAE weights in bf16 and computes in fp32. Here the weights
keep whatever dtype they were loaded in and every layer casts them to ``compute_dtype`` (default
float32) explicitly, so CPU and GPU compute the same thing.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ovi_core import checkpoints as ck
from ovi_core.checkpoint_id import identify

logger = logging.getLogger(__name__)

__all__ = [
        "AUTO_TILE_AREA",
    "AUTO_TILE_OVERLAP",
    "LATENT_MEAN",
    "LATENT_STD",
    "WanVAE",
    "WanVAEConfig",
    "config_from_shapes",
    "estimate_decode_memory",
    "full_size_shapes",
    "load_wan_vae",
    "shapes_for",
    "write_tiny_wan_vae",
]

# Official per-channel statistics of the 48-channel latent (Wan2.2 ``vae2_2.py``; OVI_REFERENCE §4.1).
LATENT_MEAN: tuple[float, ...] = (
    -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557, -0.1382, 0.0542, 0.2813, 0.0891,
    0.1570, -0.0098, 0.0375, -0.1825, -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
    -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230, -0.0313, -0.1649, 0.0117, 0.0723,
    -0.2839, -0.2083, -0.0520, 0.3748, 0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667,
)  # fmt: skip
LATENT_STD: tuple[float, ...] = (
    0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013, 0.8158, 1.0344, 0.5894, 1.0901,
    0.6885, 0.6165, 0.8454, 0.4978, 0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
    0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093, 0.5709, 0.6065, 0.6415, 0.4944,
    0.5726, 1.2042, 0.5458, 1.6887, 0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
)  # fmt: skip

PATCH = 2  # pixel-unshuffle factor in front of the encoder / behind the decoder

# Automatic spatial tiling of decode (latent units), used only when the untiled decode does not fit in memory
# (ovi_core.vae.decode_plan): tiles of at most AUTO_TILE_AREA latent pixels (smaller when needed) overlapping
# by AUTO_TILE_OVERLAP.
AUTO_TILE_AREA = 48 * 48
AUTO_TILE_OVERLAP = 8

# Per-call streaming state: module -> the trailing input frames it needs next time (or a start marker).
Cache = dict[nn.Module, Any]
_STARTED = object()  # marker: an upsample3d time conv has seen its first chunk (which it passes through)


# ----------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WanVAEConfig:
    """Hyper-parameters under the official argument names of Wan2.2's ``WanVAE_``."""

    dim: int = 160
    dec_dim: int = 256
    z_dim: int = 48
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attn_scales: tuple[float, ...] = ()  # accepted for fidelity; the official model never reads it
    temperal_downsample: tuple[bool, ...] = (False, True, True)
    dropout: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "dim_mult", tuple(int(m) for m in self.dim_mult))
        object.__setattr__(self, "attn_scales", tuple(self.attn_scales))
        object.__setattr__(self, "temperal_downsample", tuple(bool(t) for t in self.temperal_downsample))
        if self.dim <= 0 or self.dec_dim <= 0 or self.z_dim <= 0 or not self.dim_mult:
            raise ValueError(f"invalid Wan VAE config {self}: dims must be positive and dim_mult non-empty")

    @classmethod
    def full(cls) -> WanVAEConfig:
        """The official Wan2.2 VAE (``Wan2.2_VAE.pth``)."""
        return cls()

    @classmethod
    def tiny(cls) -> WanVAEConfig:
        """Tiny widths for tests (the configuration of the ``wan_vae`` golden case)."""
        return cls(dim=8, dec_dim=8)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> WanVAEConfig:
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown Wan VAE config fields {sorted(unknown)}; known: {sorted(names)}")
        return cls(**dict(d))

    @property
    def temporal_factor(self) -> int:
        return 2 ** sum(self.temperal_downsample[: len(self.dim_mult) - 1])

    @property
    def spatial_factor(self) -> int:
        return PATCH * 2 ** (len(self.dim_mult) - 1)


# ----------------------------------------------------------------------------------------------
# Layers
# ----------------------------------------------------------------------------------------------


def _triple(v: int | Sequence[int]) -> tuple[int, int, int]:
    return (v, v, v) if isinstance(v, int) else tuple(v)  # type: ignore[return-value]


class CausalConv3d(nn.Conv3d):
    """3D convolution padded in time on the past side only (``2 * padding_t`` frames), zeros in space.

    With a ``cache`` the missing past frames come from the previous chunk of the same stream instead
    of zeros, and the trailing ``2 * padding_t`` frames of this chunk are stored for the next one.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        *,
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] = 0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0, device=device, dtype=dtype)
        pt, ph, pw = _triple(padding)
        self.time_context = 2 * pt
        self.spatial_padding = (0, ph, pw)

    def forward(self, x: Tensor, cache: Cache | None = None) -> Tensor:
        """``x [B, C_in, T, H, W]`` -> ``[B, C_out, T', H', W']`` (T' = T for stride 1)."""
        ctx = self.time_context
        if ctx:
            past = cache.get(self) if cache is not None else None
            if past is None:
                b, c, _, h, w = x.shape
                past = x.new_zeros(b, c, ctx, h, w)
            x = torch.cat([past, x], dim=2)  # [B, C_in, ctx + T, H, W]
            if cache is not None:
                cache[self] = x[:, :, -ctx:].clone()
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.conv3d(x, self.weight.to(x.dtype), bias, self.stride, self.spatial_padding)


class RMS_norm(nn.Module):  # noqa: N801  (official class name)
    """``normalize(x over channels) * sqrt(C) * gamma`` (no bias, as in the checkpoint)."""

    def __init__(self, dim: int, *, images: bool, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        shape = (dim, 1, 1) if images else (dim, 1, 1, 1)
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones(shape, device=device, dtype=dtype))

    def forward(self, x: Tensor) -> Tensor:
        """``x [N, C, ...]`` (4D with images=True, 5D otherwise) -> same shape."""
        return F.normalize(x, dim=1) * self.scale * self.gamma.to(x.dtype)


class _Upsample2x(nn.Module):
    """Nearest-exact x2 in H and W of a ``[B, C, T, H, W]`` tensor (no parameters)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.interpolate(x, scale_factor=(1.0, 2.0, 2.0), mode="nearest-exact")


class Resample(nn.Module):
    """Spatial x2 up/down sampling, optionally with a causal x2 in time (``time_conv``).

    ``upsample3d``: ``time_conv`` maps C -> 2C channels, read as two output frames per input frame. The
    first chunk of a stream passes through without it (the first frame stays a single frame); later
    chunks are convolved causally as one stream that starts after that first chunk.
    ``downsample3d``: ``time_conv`` is a stride-2, 3-tap conv over (last frame of the previous chunk,
    this chunk). The first chunk passes through unchanged.
    """

    def __init__(self, dim: int, mode: str, *, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if mode not in ("upsample2d", "upsample3d", "downsample2d", "downsample3d"):
            raise ValueError(f"unknown resample mode {mode!r}")
        self.mode = mode
        kw = {"device": device, "dtype": dtype}
        if mode.startswith("upsample"):
            self.resample = nn.Sequential(_Upsample2x(), nn.Conv2d(dim, dim, 3, padding=1, **kw))
        else:
            self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(dim, dim, 3, stride=2, **kw))
        if mode == "upsample3d":
            self.time_conv = CausalConv3d(dim, dim * 2, (3, 1, 1), padding=(1, 0, 0), **kw)
        elif mode == "downsample3d":
            self.time_conv = CausalConv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1), **kw)

    def _spatial(self, x: Tensor) -> Tensor:
        conv: nn.Conv2d = self.resample[1]
        w = conv.weight.to(x.dtype).unsqueeze(2)  # [C, C, 1, 3, 3]: the 2D conv applied to every frame
        b = conv.bias.to(x.dtype)
        if self.mode.startswith("upsample"):
            x = self.resample[0](x)  # [B, C, T, 2H, 2W]
            return F.conv3d(x, w, b, padding=(0, 1, 1))
        x = F.pad(x, (0, 1, 0, 1))  # [B, C, T, H+1, W+1]: zero pad right and bottom
        return F.conv3d(x, w, b, stride=(1, 2, 2))  # [B, C, T, H/2, W/2]

    def forward(self, x: Tensor, cache: Cache) -> Tensor:
        """``x [B, C, T, H, W]`` -> ``[B, C, T', 2H, 2W]`` (up) or ``[B, C, T', H/2, W/2]`` (down)."""
        if self.mode == "upsample3d":
            if cache.get(self) is None:
                cache[self] = _STARTED
            else:
                b, c, t, h, w = x.shape
                y = self.time_conv(x, cache)  # [B, 2C, T, H, W]
                x = y.view(b, 2, c, t, h, w).permute(0, 2, 3, 1, 4, 5).reshape(b, c, 2 * t, h, w)
        x = self._spatial(x)
        if self.mode == "downsample3d":
            past = cache.get(self)
            cache[self] = x[:, :, -1:].clone()
            if past is not None:
                x = self.time_conv(torch.cat([past, x], dim=2))  # [B, C, T/2, H, W]
        return x


class ResidualBlock(nn.Module):
    """``residual(x) + shortcut(x)``; residual = norm, SiLU, conv3, norm, SiLU, dropout, conv3."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float = 0.0, *,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.residual = nn.Sequential(
            RMS_norm(in_dim, images=False, **kw),
            nn.SiLU(),
            CausalConv3d(in_dim, out_dim, 3, padding=1, **kw),
            RMS_norm(out_dim, images=False, **kw),
            nn.SiLU(),
            nn.Dropout(dropout),
            CausalConv3d(out_dim, out_dim, 3, padding=1, **kw),
        )
        self.shortcut = CausalConv3d(in_dim, out_dim, 1, **kw) if in_dim != out_dim else nn.Identity()

    def forward(self, x: Tensor, cache: Cache) -> Tensor:
        """``x [B, C_in, T, H, W]`` -> ``[B, C_out, T, H, W]``."""
        h = self.shortcut(x)
        for layer in self.residual:
            x = layer(x, cache) if isinstance(layer, CausalConv3d) else layer(x)
        return x + h


class AttentionBlock(nn.Module):
    """Single-head self-attention over the H*W positions of each frame separately, plus identity."""

    def __init__(self, dim: int, *, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.norm = RMS_norm(dim, images=True, **kw)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1, **kw)
        self.proj = nn.Conv2d(dim, dim, 1, **kw)

    def forward(self, x: Tensor) -> Tensor:
        """``x [B, C, T, H, W]`` -> same shape."""
        b, c, t, h, w = x.shape
        y = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)  # [B*T, C, H, W]
        y = self.norm(y)
        qkv = F.conv2d(y, self.to_qkv.weight.to(y.dtype), self.to_qkv.bias.to(y.dtype))  # [B*T, 3C, H, W]
        qkv = qkv.reshape(b * t, 1, 3 * c, h * w).transpose(2, 3)  # [B*T, 1, H*W, 3C]
        q, k, v = qkv.chunk(3, dim=-1)  # each [B*T, 1, H*W, C]
        y = F.scaled_dot_product_attention(q, k, v)  # [B*T, 1, H*W, C]
        y = y.squeeze(1).transpose(1, 2).reshape(b * t, c, h, w)  # [B*T, C, H, W]
        y = F.conv2d(y, self.proj.weight.to(y.dtype), self.proj.bias.to(y.dtype))
        y = y.view(b, t, c, h, w).permute(0, 2, 1, 3, 4)  # [B, C, T, H, W]
        return x + y


class AvgDown3D(nn.Module):
    """Parameter-free shortcut: fold (ft x fs x fs) neighbourhoods into channels, average channel groups.

    A chunk whose length is not a multiple of ``factor_t`` is zero-padded at the front (the first frame).
    """

    def __init__(self, in_channels: int, out_channels: int, factor_t: int, factor_s: int = 1) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.factor_t = factor_t
        self.factor_s = factor_s
        factor = factor_t * factor_s * factor_s
        assert in_channels * factor % out_channels == 0
        self.group_size = in_channels * factor // out_channels

    def forward(self, x: Tensor) -> Tensor:
        """``x [B, C_in, T, H, W]`` -> ``[B, C_out, ceil(T / ft), H / fs, W / fs]``."""
        ft, fs = self.factor_t, self.factor_s
        if ft == 1 and fs == 1 and self.group_size == 1:
            return x
        pad_t = (-x.shape[2]) % ft
        if pad_t:
            x = F.pad(x, (0, 0, 0, 0, pad_t, 0))
        b, c, t, h, w = x.shape
        x = x.view(b, c, t // ft, ft, h // fs, fs, w // fs, fs)
        x = x.permute(0, 1, 3, 5, 7, 2, 4, 6)  # [B, C, ft, fs, fs, T', H', W']
        x = x.reshape(b, self.out_channels, self.group_size, t // ft, h // fs, w // fs)
        return x.mean(dim=2)


class DupUp3D(nn.Module):
    """Parameter-free shortcut, the inverse layout of :class:`AvgDown3D`: repeat channels, unfold them
    into (ft x fs x fs) neighbourhoods. On the first chunk the first ``ft - 1`` frames are dropped."""

    def __init__(self, in_channels: int, out_channels: int, factor_t: int, factor_s: int = 1) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.factor_t = factor_t
        self.factor_s = factor_s
        factor = factor_t * factor_s * factor_s
        assert out_channels * factor % in_channels == 0
        self.repeats = out_channels * factor // in_channels

    def forward(self, x: Tensor, first_chunk: bool = False) -> Tensor:
        """``x [B, C_in, T, H, W]`` -> ``[B, C_out, T * ft (- (ft-1) on the first chunk), H * fs, W * fs]``."""
        ft, fs = self.factor_t, self.factor_s
        b, _, t, h, w = x.shape
        x = x.repeat_interleave(self.repeats, dim=1)  # [B, C_out * ft * fs * fs, T, H, W]
        x = x.view(b, self.out_channels, ft, fs, fs, t, h, w)
        x = x.permute(0, 1, 5, 2, 6, 3, 7, 4).reshape(b, self.out_channels, t * ft, h * fs, w * fs)
        if first_chunk and ft > 1:
            x = x[:, :, ft - 1 :]
        return x


class Down_ResidualBlock(nn.Module):  # noqa: N801  (official class name)
    """``num_res_blocks`` residual blocks + optional down-sampling, plus the :class:`AvgDown3D` shortcut."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float, mult: int, *, temperal_downsample: bool,
                 down_flag: bool, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.avg_shortcut = AvgDown3D(in_dim, out_dim, factor_t=2 if temperal_downsample else 1,
                                      factor_s=2 if down_flag else 1)
        blocks: list[nn.Module] = []
        for _ in range(mult):
            blocks.append(ResidualBlock(in_dim, out_dim, dropout, **kw))
            in_dim = out_dim
        if down_flag:
            blocks.append(Resample(out_dim, "downsample3d" if temperal_downsample else "downsample2d", **kw))
        self.downsamples = nn.Sequential(*blocks)

    def forward(self, x: Tensor, cache: Cache) -> Tensor:
        """``x [B, C_in, T, H, W]`` -> ``[B, C_out, T', H', W']``."""
        y = x
        for m in self.downsamples:
            y = m(y, cache)
        return y + self.avg_shortcut(x)


class Up_ResidualBlock(nn.Module):  # noqa: N801  (official class name)
    """``num_res_blocks + 1`` residual blocks + optional up-sampling, plus the :class:`DupUp3D` shortcut
    when up-sampling (no shortcut around a stage without up-sampling)."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float, mult: int, *, temperal_upsample: bool,
                 up_flag: bool, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.avg_shortcut = (
            DupUp3D(in_dim, out_dim, factor_t=2 if temperal_upsample else 1, factor_s=2) if up_flag else None
        )
        blocks: list[nn.Module] = []
        for _ in range(mult):
            blocks.append(ResidualBlock(in_dim, out_dim, dropout, **kw))
            in_dim = out_dim
        if up_flag:
            blocks.append(Resample(out_dim, "upsample3d" if temperal_upsample else "upsample2d", **kw))
        self.upsamples = nn.Sequential(*blocks)

    def forward(self, x: Tensor, cache: Cache, first_chunk: bool) -> Tensor:
        """``x [B, C_in, T, H, W]`` -> ``[B, C_out, T', H', W']``."""
        y = x
        for m in self.upsamples:
            y = m(y, cache)
        if self.avg_shortcut is not None:
            y = y + self.avg_shortcut(x, first_chunk)
        return y


class Encoder3d(nn.Module):
    """Patchified video chunk ``[B, 12, T, H/2, W/2]`` -> ``[B, 2 z, T_lat, H/16, W/16]`` (mean, log-var)."""

    def __init__(self, cfg: WanVAEConfig, *, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        dims = [cfg.dim * u for u in (1, *cfg.dim_mult)]
        td = cfg.temperal_downsample
        self.conv1 = CausalConv3d(3 * PATCH * PATCH, dims[0], 3, padding=1, **kw)
        self.downsamples = nn.Sequential(*[
            Down_ResidualBlock(dims[i], dims[i + 1], cfg.dropout, cfg.num_res_blocks,
                               temperal_downsample=td[i] if i < len(td) else False,
                               down_flag=i != len(cfg.dim_mult) - 1, **kw)
            for i in range(len(cfg.dim_mult))
        ])
        out_dim = dims[-1]
        self.middle = nn.Sequential(
            ResidualBlock(out_dim, out_dim, cfg.dropout, **kw),
            AttentionBlock(out_dim, **kw),
            ResidualBlock(out_dim, out_dim, cfg.dropout, **kw),
        )
        self.head = nn.Sequential(
            RMS_norm(out_dim, images=False, **kw), nn.SiLU(), CausalConv3d(out_dim, cfg.z_dim * 2, 3, padding=1, **kw)
        )

    def forward(self, x: Tensor, cache: Cache) -> Tensor:
        """One causal chunk ``[B, 12, T, h, w]`` -> ``[B, 2 z, T', h/8, w/8]``."""
        x = self.conv1(x, cache)
        for block in self.downsamples:
            x = block(x, cache)
        x = self.middle[0](x, cache)
        x = self.middle[1](x)
        x = self.middle[2](x, cache)
        x = F.silu(self.head[0](x))
        return self.head[2](x, cache)


class Decoder3d(nn.Module):
    """Latent chunk ``[B, z, T, h, w]`` -> patchified video chunk ``[B, 12, T', 8h, 8w]``."""

    def __init__(self, cfg: WanVAEConfig, *, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        dims = [cfg.dec_dim * u for u in (cfg.dim_mult[-1], *cfg.dim_mult[::-1])]
        tu = cfg.temperal_downsample[::-1]
        self.conv1 = CausalConv3d(cfg.z_dim, dims[0], 3, padding=1, **kw)
        self.middle = nn.Sequential(
            ResidualBlock(dims[0], dims[0], cfg.dropout, **kw),
            AttentionBlock(dims[0], **kw),
            ResidualBlock(dims[0], dims[0], cfg.dropout, **kw),
        )
        self.upsamples = nn.Sequential(*[
            Up_ResidualBlock(dims[i], dims[i + 1], cfg.dropout, cfg.num_res_blocks + 1,
                             temperal_upsample=tu[i] if i < len(tu) else False,
                             up_flag=i != len(cfg.dim_mult) - 1, **kw)
            for i in range(len(cfg.dim_mult))
        ])
        out_dim = dims[-1]
        self.head = nn.Sequential(
            RMS_norm(out_dim, images=False, **kw), nn.SiLU(), CausalConv3d(out_dim, 3 * PATCH * PATCH, 3, padding=1, **kw)
        )

    def trunk(self, x: Tensor, cache: Cache) -> Tensor:
        """Latent-resolution part (``conv1`` + ``middle``): ``[B, z, T, h, w]`` -> ``[B, C0, T, h, w]``."""
        x = self.conv1(x, cache)
        x = self.middle[0](x, cache)
        x = self.middle[1](x)
        return self.middle[2](x, cache)

    def upper(self, x: Tensor, cache: Cache, first_chunk: bool) -> Tensor:
        """Up-sampling stages + head: ``[B, C0, 1, h, w]`` -> ``[B, 12, 1 or 4, 8h, 8w]`` (1 on the first chunk).

        Only local (convolutional) operations, so spatial tiles of the trunk output decode almost
        exactly like the whole frame.
        """
        for block in self.upsamples:
            x = block(x, cache, first_chunk)
        x = F.silu(self.head[0](x))
        return self.head[2](x, cache)

    def forward(self, x: Tensor, cache: Cache, first_chunk: bool) -> Tensor:
        """One latent frame ``[B, z, 1, h, w]`` -> ``[B, 12, 1 or 4, 8h, 8w]`` (1 frame on the first chunk)."""
        return self.upper(self.trunk(x, cache), cache, first_chunk)


def patchify(x: Tensor) -> Tensor:
    """``[B, C, F, 2h, 2w]`` -> ``[B, 4C, F, h, w]``; channel = c*4 + col_offset*2 + row_offset."""
    b, c, f, hh, ww = x.shape
    x = x.view(b, c, f, hh // PATCH, PATCH, ww // PATCH, PATCH)  # [B, C, F, h, q, w, r]
    return x.permute(0, 1, 6, 4, 2, 3, 5).reshape(b, c * PATCH * PATCH, f, hh // PATCH, ww // PATCH)


def unpatchify(x: Tensor) -> Tensor:
    """Inverse of :func:`patchify`: ``[B, 4C, F, h, w]`` -> ``[B, C, F, 2h, 2w]``."""
    b, cc, f, h, w = x.shape
    c = cc // (PATCH * PATCH)
    x = x.view(b, c, PATCH, PATCH, f, h, w)  # [B, C, r, q, F, h, w]
    return x.permute(0, 1, 4, 5, 3, 6, 2).reshape(b, c, f, h * PATCH, w * PATCH)


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


# ----------------------------------------------------------------------------------------------
# The VAE
# ----------------------------------------------------------------------------------------------


class WanVAE(nn.Module):
    """Wan2.2 VAE: ``encoder``, ``conv1`` (posterior 1x1x1), ``conv2`` (latent 1x1x1), ``decoder``.

    Attribute names equal the official tensor names, so ``Wan2.2_VAE.pth`` loads with ``strict=True``.
    """

    def __init__(self, config: WanVAEConfig | None = None, *, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None, compute_dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.config = cfg = config or WanVAEConfig.full()
        self.compute_dtype = compute_dtype
        kw = {"device": device, "dtype": dtype}
        self.encoder = Encoder3d(cfg, **kw)
        self.conv1 = CausalConv3d(cfg.z_dim * 2, cfg.z_dim * 2, 1, **kw)
        self.conv2 = CausalConv3d(cfg.z_dim, cfg.z_dim, 1, **kw)
        self.decoder = Decoder3d(cfg, **kw)

    # -- helpers --------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self.conv2.weight.device

    def _scale(self, like: Tensor) -> tuple[Tensor, Tensor]:
        """``(mean, 1/std)`` as ``[1, z, 1, 1, 1]`` in float32 on ``like``'s device (official ``scale``)."""
        z = self.config.z_dim
        if z != len(LATENT_MEAN):
            raise ValueError(f"the latent normalisation has {len(LATENT_MEAN)} channels, this VAE has z_dim {z}")
        mean = torch.tensor(LATENT_MEAN, dtype=torch.float32, device=like.device).view(1, z, 1, 1, 1)
        inv_std = 1.0 / torch.tensor(LATENT_STD, dtype=torch.float32, device=like.device).view(1, z, 1, 1, 1)
        return mean.to(like.dtype), inv_std.to(like.dtype)

    # -- encode ---------------------------------------------------------------------------------

    @torch.no_grad()
    def encode(self, video: Tensor) -> Tensor:
        """Normalised posterior mean of a video.

        video: ``[B, 3, F, H, W]`` in [-1, 1], H and W multiples of 16, F = 1 + 4k (extra trailing
        frames are ignored, as in the official code).
        Returns ``[B, 48, 1 + (F - 1) // 4, H / 16, W / 16]`` in ``compute_dtype``.
        """
        cfg = self.config
        s, tf = cfg.spatial_factor, cfg.temporal_factor
        if video.dim() != 5 or video.shape[1] != 3:
            raise ValueError(f"encode expects a video [B, 3, F, H, W], got shape {tuple(video.shape)}")
        b, _, f, h, w = video.shape
        if h % s or w % s or f < 1:
            raise ValueError(f"video height and width must be multiples of {s} (got {h}x{w}, {f} frames); "
                             f"resize or crop it first")
        n = 1 + (f - 1) // tf
        if (f - 1) % tf:
            logger.warning("encode: %d frames is not 1 + %dk; the last %d frames are ignored", f, tf, (f - 1) % tf)
        x = patchify(video.to(device=self.device, dtype=self.compute_dtype))  # [B, 12, F, H/2, W/2]
        cache: Cache = {}
        outs = []
        for i in range(n):
            chunk = x[:, :, :1] if i == 0 else x[:, :, 1 + tf * (i - 1) : 1 + tf * i]
            outs.append(self.encoder(chunk, cache))  # [B, 2z, 1, H/16, W/16]
        del cache
        hidden = torch.cat(outs, dim=2)  # [B, 2z, n, H/16, W/16]
        mu = self.conv1(hidden)[:, : cfg.z_dim]  # [B, z, n, H/16, W/16]
        mean, inv_std = self._scale(mu)
        return (mu - mean) * inv_std

    # -- decode ---------------------------------------------------------------------------------

    def plan_decode(self, shape: tuple[int, ...] | torch.Size, *, tile_latent: int | None = None,
                    tile_overlap: int = AUTO_TILE_OVERLAP, memory_budget: int | None = None):
        """The :class:`~ovi_core.vae.decode_plan.DecodePlan` of a decode of a latent ``[B, 48, T, h, w]``:
        untiled unless its estimated peak exceeds the free memory of this VAE's device (or ``memory_budget``
        bytes), or ``tile_latent`` asks for tiles."""
        from ovi_core.vae.decode_plan import plan_decode

        return plan_decode(shape, config=self.config, compute_dtype=self.compute_dtype, device=self.device,
                           tile_latent=tile_latent, tile_overlap=tile_overlap, memory_budget=memory_budget)

    @torch.no_grad()
    def decode(
        self,
        latent: Tensor,
        *,
        tile_latent: int | None = None,
        tile_overlap: int = AUTO_TILE_OVERLAP,
        progress: Callable[[int, int], None] | None = None,
        memory_budget: int | None = None,
        plan=None,
    ) -> Tensor:
        """Video from a normalised latent, decoded causally one latent frame at a time.

        latent: ``[B, 48, T, h, w]``. Returns ``[B, 3, 1 + 4 (T - 1), 16 h, 16 w]`` clamped to [-1, 1],
        in ``compute_dtype``.
        tile_latent: decode overlapping ``tile_latent x tile_latent`` latent tiles and blend them (lower
        peak memory; output equal to the untiled decode up to small differences near the seams). None:
        untiled unless it would not fit in the free memory of the device (or in ``memory_budget`` bytes),
        then the largest tiles that fit (see :meth:`plan_decode`; logged).
        tile_overlap: overlap of neighbouring tiles in latent pixels (< tile_latent).
        progress: called as ``progress(done, total)`` after each decoded latent frame of each tile.
        plan: a plan from :meth:`plan_decode` (then ``tile_latent``/``memory_budget`` are not used).
        """
        cfg = self.config
        if latent.dim() != 5 or latent.shape[1] != cfg.z_dim:
            raise ValueError(f"decode expects a latent [B, {cfg.z_dim}, T, h, w], got shape {tuple(latent.shape)}")
        b, _, t, h, w = latent.shape
        if plan is None:
            plan = self.plan_decode(latent.shape, tile_latent=tile_latent, tile_overlap=tile_overlap,
                                    memory_budget=memory_budget)
            if plan.tiled and not plan.requested:
                logger.info("decode: %s", plan.message())
        th, tw, tile_overlap = plan.tile_h, plan.tile_w, plan.overlap
        ys = _tile_starts(h, th, tile_overlap)
        xs = _tile_starts(w, tw, tile_overlap)

        z = latent.to(device=self.device, dtype=self.compute_dtype)
        mean, inv_std = self._scale(z)
        z = self.conv2(z / inv_std + mean)  # [B, z, T, h, w]
        # The latent-resolution trunk (with the only non-local op, the per-frame attention) runs on whole
        # frames; its output for all frames is small ([B, C0, T, h, w]) and is then decoded tile by tile.
        trunk_cache: Cache = {}
        trunk = torch.cat([self.decoder.trunk(z[:, :, i : i + 1], trunk_cache) for i in range(t)], dim=2)
        del trunk_cache, z

        s, tf = cfg.spatial_factor, cfg.temporal_factor
        frames = 1 + tf * (t - 1)
        out = torch.zeros(b, 3, frames, h * s, w * s, device=trunk.device, dtype=trunk.dtype)
        tiled = len(ys) * len(xs) > 1
        wsum = torch.zeros(h * s, w * s, device=out.device, dtype=torch.float64) if tiled else None
        total, done = len(ys) * len(xs) * t, 0
        for iy, y0 in enumerate(ys):
            for ix, x0 in enumerate(xs):
                y1, x1 = min(y0 + th, h), min(x0 + tw, w)
                mask = None
                if tiled:
                    wy = _ramp_weights(ys, th, h, s, iy)
                    wx = _ramp_weights(xs, tw, w, s, ix)
                    mask64 = wy[:, None] * wx[None, :]  # [th*s, tw*s]
                    wsum[y0 * s : y1 * s, x0 * s : x1 * s] += mask64.to(wsum.device)
                    mask = mask64.to(device=out.device, dtype=out.dtype)
                cache: Cache = {}
                f0 = 0
                for i in range(t):
                    y = self.decoder.upper(trunk[:, :, i : i + 1, y0:y1, x0:x1], cache, i == 0)
                    y = unpatchify(y)  # [B, 3, f, (y1 - y0) * 16, (x1 - x0) * 16]
                    f1 = f0 + y.shape[2]
                    region = out[:, :, f0:f1, y0 * s : y1 * s, x0 * s : x1 * s]
                    if mask is None:
                        region.copy_(y)
                    else:
                        region.add_(y * mask)
                    f0 = f1
                    done += 1
                    if progress is not None:
                        progress(done, total)
                assert f0 == frames, (f0, frames)
                del cache
        if wsum is not None:  # ramps of two neighbours sum to 1; where three tiles overlap, renormalise
            out /= wsum.to(out.dtype)
        return out.clamp_(-1.0, 1.0)

    def forward(self, video: Tensor) -> tuple[Tensor, Tensor]:
        """``video [B, 3, F, H, W]`` -> ``(reconstruction [B, 3, F', H, W], latent [B, 48, T, H/16, W/16])``."""
        latent = self.encode(video)
        return self.decode(latent), latent


# ----------------------------------------------------------------------------------------------
# Shapes, loading, tiny weights
# ----------------------------------------------------------------------------------------------


def full_size_shapes() -> dict[str, list[int]]:
    """State-dict names and shapes of the official Wan2.2 VAE (built on the meta device)."""
    return ck.meta_shapes(WanVAE(WanVAEConfig.full(), device="meta"))


def config_from_shapes(shapes: Mapping[str, Sequence[int]], *, path: str = "<state dict>") -> WanVAEConfig:
    """Infer the :class:`WanVAEConfig` of a Wan VAE state dict from its tensor shapes.

    Raises :class:`~ovi_core.checkpoints.CheckpointError` (a ValueError) for a Wan2.1 VAE or any file
    that is not a Wan VAE.
    """
    shapes = {k: tuple(v) for k, v in shapes.items()}
    needed = ("encoder.conv1.weight", "decoder.head.2.weight", "conv1.weight", "conv2.weight")
    if not all(k in shapes for k in needed):
        infos = {k: ck.TensorInfo(tuple(v), torch.float32) for k, v in shapes.items()}
        ident = identify(infos, path=path)
        missing = [k for k in needed if k not in shapes]
        raise ck.CheckpointError(
            f"{path!r} is not a Wan VAE (it looks like: {ident.description}); missing {', '.join(missing)}. "
            "Ovi needs Wan2.2_VAE.pth from Wan-AI/Wan2.2-TI2V-5B."
        )
    z = shapes["conv2.weight"][0]
    enc_in = shapes["encoder.conv1.weight"][1]
    if z == 16 or shapes["conv1.weight"][0] == 32 or enc_in == 3:
        raise ck.CheckpointError(
            f"{path!r} is a Wan2.1 VAE (z_dim {z}, 8x spatial compression, e.g. Wan2.1_VAE.pth or "
            "wan_2.1_vae.safetensors). Ovi uses the Wan2.2 VAE (z_dim 48, 16x): put Wan2.2_VAE.pth from "
            "Wan-AI/Wan2.2-TI2V-5B (or ComfyUI's wan2.2_vae.safetensors) in its place."
        )
    if z != len(LATENT_MEAN) or enc_in != 3 * PATCH * PATCH:
        raise ck.CheckpointError(
            f"{path!r} is a Wan-style VAE with z_dim {z} and {enc_in} input channels; Ovi needs the Wan2.2 VAE "
            f"(z_dim 48, 12 input channels): Wan2.2_VAE.pth from Wan-AI/Wan2.2-TI2V-5B."
        )
    keys = set(shapes)
    try:
        dim = shapes["encoder.conv1.weight"][0]
        dec_dim = shapes["decoder.head.2.weight"][1]
        levels = ck.count_indexed(keys, "encoder.downsamples.")
        nrb = 0
        while f"encoder.downsamples.0.downsamples.{nrb}.residual.0.gamma" in keys:
            nrb += 1
        dim_mult = tuple(
            shapes[f"encoder.downsamples.{i}.downsamples.0.residual.2.weight"][0] // dim for i in range(levels)
        )
        td = tuple(f"encoder.downsamples.{i}.downsamples.{nrb}.time_conv.weight" in keys for i in range(levels - 1))
        return WanVAEConfig(dim=dim, dec_dim=dec_dim, z_dim=z, dim_mult=dim_mult, num_res_blocks=nrb,
                            temperal_downsample=td)
    except (KeyError, IndexError, ValueError, ZeroDivisionError) as e:
        raise ck.CheckpointError(
            f"{path!r}: could not infer the Wan VAE configuration from its tensors ({type(e).__name__}: {e}); "
            "the file is damaged or not Wan2.2_VAE.pth."
        ) from e


def shapes_for(shapes: Mapping[str, Sequence[int]]) -> dict[str, list[int]]:
    """Expected ``{name: shape}`` of the Wan VAE whose config is inferred from ``shapes`` (ValueError if none)."""
    return ck.meta_shapes(WanVAE(config_from_shapes(shapes), device="meta"))


def load_wan_vae(
    path: str | os.PathLike,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    compute_dtype: torch.dtype = torch.float32,
) -> WanVAE:
    """Load ``Wan2.2_VAE.pth`` (or a safetensors copy) strictly; weights stored in ``dtype`` on ``device``,
    computation in ``compute_dtype``. Returns the module in eval mode without gradients."""
    path = os.fspath(path)
    sd = ck.load_state_dict(path)
    cfg = config_from_shapes({k: tuple(v.shape) for k, v in sd.items()}, path=path)
    model = WanVAE(cfg, device="meta", dtype=dtype, compute_dtype=compute_dtype)
    sd = {k: v.to(device=device, dtype=dtype) if v.is_floating_point() else v.to(device) for k, v in sd.items()}
    ck.load_strict(model, sd, path=path, what="Wan2.2 VAE")
    logger.info("loaded Wan2.2 VAE from %s (dim %d, dec_dim %d, %s)", path, cfg.dim, cfg.dec_dim, dtype)
    return model.eval().requires_grad_(False)


def write_tiny_wan_vae(path: str | os.PathLike, *, seed: int = 0, config: WanVAEConfig | None = None,
                       dtype: torch.dtype = torch.float32) -> str:
    """Write a tiny random ``Wan2.2_VAE.pth`` in the official format (a plain state dict, ``torch.save``).

    Deterministic for a given seed: convolution weights ~ N(0, 1/fan_in), biases ~ N(0, 0.02^2),
    norm gains 1 + N(0, 0.1^2). Returns the path written.
    """
    cfg = config or WanVAEConfig.tiny()
    model = WanVAE(cfg, device="meta")
    gen = torch.Generator().manual_seed(seed)
    sd: dict[str, Tensor] = {}
    for name, shape in ck.meta_shapes(model).items():
        t = torch.randn(shape, generator=gen, dtype=torch.float32)
        if name.endswith("gamma"):
            t = 1.0 + 0.1 * t
        elif name.endswith("bias"):
            t = 0.02 * t
        else:
            t = t / math.sqrt(max(1, math.prod(shape[1:])))
        sd[name] = t.to(dtype).contiguous()
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    torch.save(sd, path)
    return path
