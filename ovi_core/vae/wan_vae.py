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

Peak memory per tile and the memory table: :mod:`ovi_core.vae.wan_tiling`. The layers (causal convolutions
and their per-call caches, ``Encoder3d`` / ``Decoder3d``): :mod:`ovi_core.vae.wan_layers`.

Precision. The official pipeline stores the VAE weights in bf16 and computes in fp32. Here the weights
keep whatever dtype they were loaded in and every layer casts them to ``compute_dtype`` (default
float32) explicitly, so CPU and GPU compute the same thing.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from ovi_core.io import checkpoints as ck
from ovi_core.io.checkpoint_id import TensorInfo, identify
from ovi_core.vae.wan_config import PATCH, WanVAEConfig
from ovi_core.vae.wan_layers import Cache, CausalConv3d, Decoder3d, Encoder3d, patchify, unpatchify
from ovi_core.vae.wan_tiling import (
    AUTO_TILE_AREA,
    AUTO_TILE_OVERLAP,
    _ramp_weights,
    _tile_starts,
    estimate_decode_memory,
)

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
        tiled = len(ys) * len(xs) > 1
        # tile blends accumulate in float32 (bf16 sums would round again at every seam); untiled: no sums
        acc = torch.float32 if tiled and trunk.dtype in (torch.bfloat16, torch.float16) else trunk.dtype
        out = torch.zeros(b, 3, frames, h * s, w * s, device=trunk.device, dtype=acc)
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
        return out.clamp_(-1.0, 1.0).to(trunk.dtype)

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

    Raises :class:`~ovi_core.io.checkpoints.CheckpointError` (a ValueError) for a Wan2.1 VAE or any file
    that is not a Wan VAE.
    """
    shapes = {k: tuple(v) for k, v in shapes.items()}
    needed = ("encoder.conv1.weight", "decoder.head.2.weight", "conv1.weight", "conv2.weight")
    if not all(k in shapes for k in needed):
        infos = {k: TensorInfo(tuple(v), torch.float32) for k, v in shapes.items()}
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
