"""Layers of the Wan2.2 video VAE: causal 3D convolutions, RMS norms, resampling, residual and attention
blocks, the parameter-free shortcuts, ``Encoder3d`` / ``Decoder3d``, and ``patchify`` / ``unpatchify``.

Streaming. Every causal convolution (and every time-resampling layer) keeps the last frames of its input
in a per-call cache (:data:`Cache`, a dict owned by the call, never by the module), so a chunk sees exactly
the context a whole-video pass would. Class and attribute names equal the official ones, so the
state-dict keys of :class:`~ovi_core.vae.wan_vae.WanVAE` are the official tensor names.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ovi_core.vae.wan_config import PATCH, WanVAEConfig

# Per-call streaming state: module -> the trailing input frames it needs next time (or a start marker).
Cache = dict[nn.Module, Any]
_STARTED = object()  # marker: an upsample3d time conv has seen its first chunk (which it passes through)


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

