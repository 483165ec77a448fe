"""BigVGAN (v1) vocoder as shipped with MMAudio for 16 kHz: log-mel ``[B, 80, F]`` -> waveform ``[B, 1, 256 F]``.

Architecture (official ``bigvgan_vocoder.yml``): weight-normed ``conv_pre`` (k7), six transposed-conv upsamplers
(rates 4,4,2,2,2,2; kernels 8,8,4,4,4,4; channels halve from 1536), after each a sum of three AMP residual blocks
(kernels 3/7/11, dilations 1/3/5) divided by three, anti-aliased SnakeBeta activations (2x kaiser-sinc up-sampling,
activation, low-pass + 2x down-sampling; alpha/beta stored in log scale), a final activation, ``conv_post`` (k7)
and ``tanh``.

The checkpoint (``best_netG.pt``) holds ``{'generator': state_dict}``; weight-normed convolutions appear as
``NAME.weight_g`` / ``NAME.weight_v`` (or, from newer torch, ``NAME.parametrizations.weight.original0`` /
``original1``). :func:`load_bigvgan` accepts both and folds ``g * v / ||v||`` into plain ``NAME.weight`` tensors, as
the official ``remove_weight_norm`` does. The kaiser-sinc filters are buffers stored in the checkpoint.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ovi_core.io import checkpoints as ck
from ovi_core.io.checkpoint_id import TensorInfo, identify

logger = logging.getLogger(__name__)

__all__ = [
    "BigVGANConfig",
    "BigVGAN",
    "kaiser_sinc_filter1d",
    "fold_weight_norm",
    "to_classic_weight_norm_names",
    "load_bigvgan",
    "config_from_shapes",
    "full_size_shapes",
    "shapes_for",
    "write_tiny_bigvgan",
]

_PARAM_G = ".parametrizations.weight.original0"
_PARAM_V = ".parametrizations.weight.original1"
_SNAKE_EPS = 1e-9
_TRAINING_ONLY = {
    "num_gpus", "batch_size", "learning_rate", "adam_b1", "adam_b2", "lr_decay", "seed", "resolutions",
    "mpd_reshapes", "use_spectral_norm", "discriminator_channel_mult", "num_workers", "dist_config",
    "segment_size", "n_fft", "hop_size", "win_size", "sampling_rate", "fmin", "fmax", "fmax_for_loss",
    "num_freq",
}


@dataclass(frozen=True)
class BigVGANConfig:
    """Generator hyper-parameters, with the field names of the official ``bigvgan_vocoder.yml``."""

    resblock: str = "1"
    num_mels: int = 80
    upsample_rates: tuple[int, ...] = (4, 4, 2, 2, 2, 2)
    upsample_kernel_sizes: tuple[int, ...] = (8, 8, 4, 4, 4, 4)
    upsample_initial_channel: int = 1536
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    activation: str = "snakebeta"
    snake_logscale: bool = True

    def __post_init__(self) -> None:
        if self.resblock not in ("1", "2"):
            raise ValueError(f"BigVGAN resblock must be '1' or '2', got {self.resblock!r}")
        if self.activation not in ("snake", "snakebeta"):
            raise ValueError(f"BigVGAN activation must be 'snake' or 'snakebeta', got {self.activation!r}")
        if len(self.upsample_rates) != len(self.upsample_kernel_sizes):
            raise ValueError("upsample_rates and upsample_kernel_sizes must have the same length")
        if self.upsample_initial_channel // 2 ** len(self.upsample_rates) < 1:
            raise ValueError(
                f"upsample_initial_channel {self.upsample_initial_channel} is too small for "
                f"{len(self.upsample_rates)} halvings; use at least {2 ** len(self.upsample_rates)}"
            )

    @classmethod
    def full_size(cls) -> BigVGANConfig:
        return cls()

    @classmethod
    def tiny(cls) -> BigVGANConfig:
        """Official layout with ``upsample_initial_channel`` 64 (channels 32, 16, ..., 1)."""
        return cls(upsample_initial_channel=64)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BigVGANConfig:
        """From the official YAML/JSON dict (training-only fields are ignored)."""
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names - _TRAINING_ONLY
        if unknown:
            raise ValueError(f"unknown BigVGAN config fields: {sorted(unknown)}")
        kw: dict[str, Any] = {}
        for k in names & set(d):
            v = d[k]
            if k == "resblock_dilation_sizes":
                v = tuple(tuple(int(x) for x in row) for row in v)
            elif isinstance(v, list | tuple):
                v = tuple(int(x) for x in v)
            elif k == "resblock":
                v = str(v)
            kw[k] = v
        return cls(**kw)

    @property
    def hop_length(self) -> int:
        return math.prod(self.upsample_rates)


# ----------------------------------------------------------------------------------------------
# Anti-aliased activation
# ----------------------------------------------------------------------------------------------


def kaiser_sinc_filter1d(cutoff: float, half_width: float, kernel_size: int) -> torch.Tensor:
    """Kaiser-windowed sinc low-pass filter ``[1, 1, kernel_size]`` normalised to unit DC gain.

    ``cutoff`` and ``half_width`` are in cycles per sample; the Kaiser beta follows the usual attenuation
    rule for a transition band of ``4 * half_width``.
    """
    even = kernel_size % 2 == 0
    half = kernel_size // 2
    atten = 2.285 * (half - 1) * math.pi * 4 * half_width + 7.95
    if atten > 50.0:
        beta = 0.1102 * (atten - 8.7)
    elif atten >= 21.0:
        beta = 0.5842 * (atten - 21.0) ** 0.4 + 0.07886 * (atten - 21.0)
    else:
        beta = 0.0
    window = torch.kaiser_window(kernel_size, periodic=False, beta=beta)
    t = torch.arange(-half, half) + 0.5 if even else torch.arange(kernel_size) - half
    filt = 2 * cutoff * window * torch.sinc(2 * cutoff * t)
    return (filt / filt.sum()).view(1, 1, kernel_size)


class UpSample1d(nn.Module):
    """2x up-sampling by zero-stuffing and kaiser-sinc interpolation, replicate-padded at the ends."""

    def __init__(self, ratio: int = 2, kernel_size: int = 12, *, device=None, dtype=None) -> None:
        super().__init__()
        self.ratio, self.kernel_size = ratio, kernel_size
        self.pad = kernel_size // ratio - 1
        self.crop_left = self.pad * ratio + (kernel_size - ratio) // 2
        self.crop_right = self.pad * ratio + (kernel_size - ratio + 1) // 2
        self.register_buffer("filter", torch.empty(1, 1, kernel_size, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, T]`` -> ``[B, C, ratio * T]``."""
        c = x.shape[1]
        x = F.pad(x, (self.pad, self.pad), mode="replicate")
        x = self.ratio * F.conv_transpose1d(x, self.filter.expand(c, -1, -1), stride=self.ratio, groups=c)
        return x[..., self.crop_left : x.shape[-1] - self.crop_right]


class LowPassFilter1d(nn.Module):
    def __init__(self, stride: int = 2, kernel_size: int = 12, *, device=None, dtype=None) -> None:
        super().__init__()
        self.stride = stride
        self.pad_left = kernel_size // 2 - int(kernel_size % 2 == 0)
        self.pad_right = kernel_size // 2
        self.register_buffer("filter", torch.empty(1, 1, kernel_size, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, T]`` -> ``[B, C, ceil(T / stride)]`` (replicate padding)."""
        c = x.shape[1]
        x = F.pad(x, (self.pad_left, self.pad_right), mode="replicate")
        return F.conv1d(x, self.filter.expand(c, -1, -1), stride=self.stride, groups=c)


class DownSample1d(nn.Module):
    def __init__(self, ratio: int = 2, kernel_size: int = 12, *, device=None, dtype=None) -> None:
        super().__init__()
        self.lowpass = LowPassFilter1d(ratio, kernel_size, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lowpass(x)


class Snake(nn.Module):
    """``x + sin^2(alpha x) / beta`` per channel (``beta = alpha`` for plain Snake); log-scale parameters."""

    def __init__(self, channels: int, *, with_beta: bool, logscale: bool, device=None, dtype=None) -> None:
        super().__init__()
        self.logscale = logscale
        self.alpha = nn.Parameter(torch.empty(channels, device=device, dtype=dtype))
        if with_beta:
            self.beta = nn.Parameter(torch.empty(channels, device=device, dtype=dtype))
        else:
            self.beta = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, T]`` -> ``[B, C, T]``."""
        alpha = self.alpha[None, :, None]
        beta = alpha if self.beta is None else self.beta[None, :, None]
        if self.logscale:
            alpha, beta = alpha.exp(), beta.exp()
        return x + (1.0 / (beta + _SNAKE_EPS)) * torch.sin(x * alpha).pow(2)


class Activation1d(nn.Module):
    def __init__(self, channels: int, cfg: BigVGANConfig, *, device=None, dtype=None) -> None:
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.act = Snake(channels, with_beta=cfg.activation == "snakebeta", logscale=cfg.snake_logscale, **kw)
        self.upsample = UpSample1d(2, 12, **kw)
        self.downsample = DownSample1d(2, 12, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, T]`` -> ``[B, C, T]`` (activation evaluated at twice the rate)."""
        return self.downsample(self.act(self.upsample(x)))


_ACT_RADIUS = 8  # input samples an Activation1d reads on each side (6 plus margin)


class AMPBlock(nn.Module):
    """Anti-aliased multi-periodicity residual block (type '1': dilated conv + plain conv per dilation)."""

    def __init__(self, channels: int, kernel_size: int, dilation: tuple[int, ...], cfg: BigVGANConfig, *,
                 device=None, dtype=None) -> None:
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.type1 = cfg.resblock == "1"
        self.kernel_size, self.dilation = kernel_size, tuple(dilation)

        def conv(d: int) -> nn.Conv1d:
            return nn.Conv1d(channels, channels, kernel_size, 1, dilation=d, padding=(kernel_size * d - d) // 2, **kw)

        if self.type1:
            self.convs1 = nn.ModuleList([conv(d) for d in dilation])
            self.convs2 = nn.ModuleList([conv(1) for _ in dilation])
            n_act = 2 * len(dilation)
        else:
            self.convs = nn.ModuleList([conv(d) for d in dilation])
            n_act = len(dilation)
        self.activations = nn.ModuleList([Activation1d(channels, cfg, **kw) for _ in range(n_act)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, T]`` -> ``[B, C, T]``."""
        if self.type1:
            acts = list(self.activations)
            for c1, c2, a1, a2 in zip(self.convs1, self.convs2, acts[0::2], acts[1::2], strict=True):
                x = x + c2(a2(c1(a1(x))))
        else:
            for c, a in zip(self.convs, self.activations, strict=True):
                x = x + c(a(x))
        return x

    def radius(self) -> int:
        half = (self.kernel_size - 1) // 2
        if self.type1:
            return sum(2 * _ACT_RADIUS + half * d + half for d in self.dilation)
        return sum(_ACT_RADIUS + half * d for d in self.dilation)


class BigVGAN(nn.Module):
    """BigVGAN generator with weight norm folded (plain ``weight`` tensors); see :func:`load_bigvgan`."""

    def __init__(self, config: BigVGANConfig | None = None, *, device=None, dtype=None) -> None:
        super().__init__()
        self.config = cfg = config or BigVGANConfig.full_size()
        kw = dict(device=device, dtype=dtype)
        ch0 = cfg.upsample_initial_channel
        self.num_kernels = len(cfg.resblock_kernel_sizes)
        self.conv_pre = nn.Conv1d(cfg.num_mels, ch0, 7, 1, padding=3, **kw)
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        ch = ch0
        for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes, strict=True)):
            ch = ch0 // 2 ** (i + 1)
            self.ups.append(nn.ModuleList([nn.ConvTranspose1d(ch0 // 2**i, ch, k, u, padding=(k - u) // 2, **kw)]))
            for rk, rd in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes, strict=True):
                self.resblocks.append(AMPBlock(ch, rk, rd, cfg, **kw))
        self.activation_post = Activation1d(ch, cfg, **kw)
        self.conv_post = nn.Conv1d(ch, 1, 7, 1, padding=3, **kw)

    @property
    def dtype(self) -> torch.dtype:
        return self.conv_pre.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.conv_pre.weight.device

    def _generate(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_pre(x)  # [B, C0, F]
        for i, up in enumerate(self.ups):
            x = up[0](x)  # [B, C0 / 2^(i+1), F * prod(rates[:i+1])]
            blocks = self.resblocks[i * self.num_kernels : (i + 1) * self.num_kernels]
            xs = blocks[0](x)
            for block in blocks[1:]:
                xs = xs + block(x)
            x = xs / self.num_kernels
        x = self.conv_post(self.activation_post(x))  # [B, 1, F * hop]
        return torch.tanh(x)

    def receptive_radius(self) -> int:
        """Mel frames on each side of a frame that influence its output samples (a safe upper bound)."""
        cfg = self.config
        radius, rate = 3.0, 1  # conv_pre reads 3 frames each side
        for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes, strict=True)):
            radius += (math.ceil(k / u) + 1) / rate
            rate *= u
            blocks = self.resblocks[i * self.num_kernels : (i + 1) * self.num_kernels]
            radius += max(b.radius() for b in blocks) / rate
        radius += (_ACT_RADIUS + 3) / rate
        return int(math.ceil(radius)) + 2

    def forward(self, mel: torch.Tensor, *, chunk_size: int | None = None) -> torch.Tensor:
        """Log-mel ``[B, num_mels, F]`` -> waveform ``[B, 1, F * hop]`` in [-1, 1] (module dtype).

        ``chunk_size`` (mel frames) vocodes in time chunks, each with :meth:`receptive_radius` frames of context
        on both sides, so the result equals the unchunked one up to float rounding while the activation
        memory stays bounded by the chunk size.
        """
        x = mel.to(device=self.device, dtype=self.dtype)
        frames = x.shape[-1]
        if chunk_size is None or chunk_size >= frames:
            return self._generate(x)
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive number of mel frames, got {chunk_size}")
        hop, ctx = self.config.hop_length, self.receptive_radius()
        win = min(frames, chunk_size + 2 * ctx)  # every window has the same length (one kernel shape)
        parts = []
        for start in range(0, frames, chunk_size):
            end = min(start + chunk_size, frames)
            lo = min(max(0, start - ctx), frames - win)
            y = self._generate(x[..., lo : lo + win])  # [B, 1, win * hop]
            parts.append(y[..., (start - lo) * hop : (end - lo) * hop])
        return torch.cat(parts, dim=-1)  # [B, 1, F * hop]


# ----------------------------------------------------------------------------------------------
# Weight-norm names, folding, shapes
# ----------------------------------------------------------------------------------------------


def _conv_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.Conv1d | nn.ConvTranspose1d)]


def to_classic_weight_norm_names(sd: Mapping[str, Any]) -> dict[str, Any]:
    """Rename ``X.parametrizations.weight.original0/1`` to ``X.weight_g`` / ``X.weight_v`` (others unchanged)."""
    out: dict[str, Any] = {}
    for k, v in sd.items():
        if k.endswith(_PARAM_G):
            k = k[: -len(_PARAM_G)] + ".weight_g"
        elif k.endswith(_PARAM_V):
            k = k[: -len(_PARAM_V)] + ".weight_v"
        out[k] = v
    return out


def fold_weight_norm(weight_g: torch.Tensor, weight_v: torch.Tensor) -> torch.Tensor:
    """``g * v / ||v||`` with the norm over every dim but 0 (``weight_norm(dim=0)``), computed in float32."""
    v = weight_v.to(torch.float32)
    norm = torch.linalg.vector_norm(v, dim=list(range(1, v.ndim)), keepdim=True)
    return (v * (weight_g.to(torch.float32) / norm)).to(weight_v.dtype)


def _classic_shapes(model: BigVGAN) -> dict[str, list[int]]:
    shapes = ck.meta_shapes(model)
    for name in _conv_names(model):
        w = shapes.pop(f"{name}.weight")
        shapes[f"{name}.weight_g"] = [w[0]] + [1] * (len(w) - 1)
        shapes[f"{name}.weight_v"] = w
    return dict(sorted(shapes.items()))


def full_size_shapes() -> dict[str, list[int]]:
    """Official generator ``{name: shape}`` (no ``generator.`` prefix, classic ``weight_g``/``weight_v`` names)."""
    return _classic_shapes(BigVGAN(BigVGANConfig.full_size(), device="meta"))


def _split_prefix(keys: Any) -> str:
    return "generator." if any(str(k).startswith("generator.") for k in keys) else ""


def config_from_shapes(shapes: Mapping[str, Any]) -> BigVGANConfig:
    """Infer the generator configuration from ``{name: shape}`` (prefixed or not, either weight-norm form).

    Upsample strides and dilations are not visible in shapes: the official values are used (strides
    ``kernel // 2`` for a non-standard kernel list). ``ValueError`` if these are not BigVGAN generator weights.
    """
    prefix = _split_prefix(shapes)
    shp = {k: tuple(v.shape) if hasattr(v, "shape") else tuple(v) for k, v in shapes.items()}
    shp = to_classic_weight_norm_names(ck.strip_prefix(shp, prefix) if prefix else shp)
    if "conv_pre.weight_v" not in shp or "ups.0.0.weight_v" not in shp:
        raise ValueError("not BigVGAN generator weights: no conv_pre.weight_v / ups.0.0.weight_v")
    ch0, mels = shp["conv_pre.weight_v"][:2]
    n_up = ck.count_indexed(shp, "ups.")
    kernels = tuple(shp[f"ups.{i}.0.weight_v"][-1] for i in range(n_up))
    full = BigVGANConfig.full_size()
    rates = full.upsample_rates if kernels == full.upsample_kernel_sizes else tuple(max(1, k // 2) for k in kernels)
    n_res = ck.count_indexed(shp, "resblocks.")
    if n_up == 0 or n_res % n_up:
        raise ValueError(f"BigVGAN weights with {n_res} residual blocks for {n_up} upsamplers")
    n_k = n_res // n_up
    type1 = "resblocks.0.convs1.0.weight_v" in shp
    first = "convs1" if type1 else "convs"
    res_kernels = tuple(shp[f"resblocks.{j}.{first}.0.weight_v"][-1] for j in range(n_k))
    n_dil = ck.count_indexed(shp, f"resblocks.0.{first}.")
    official = (1, 3, 5) if type1 else (1, 3)
    dil = tuple(official[:n_dil] if n_dil <= len(official) else tuple(range(1, 2 * n_dil, 2)) for _ in range(n_k))
    beta = any(k.endswith(".act.beta") for k in shp)
    return BigVGANConfig(
        resblock="1" if type1 else "2", num_mels=mels, upsample_rates=rates, upsample_kernel_sizes=kernels,
        upsample_initial_channel=ch0, resblock_kernel_sizes=res_kernels, resblock_dilation_sizes=dil,
        activation="snakebeta" if beta else "snake", snake_logscale=True,
    )


def shapes_for(shapes: Mapping[str, Any]) -> dict[str, list[int]]:
    """Expected ``{name: shape}`` for the configuration a file's shapes imply, named as the file names them
    (with ``generator.`` if the file has it; parametrization names if the file uses them)."""
    prefix = _split_prefix(shapes)
    parametrized = any(str(k).endswith(_PARAM_G) for k in shapes)
    expected = _classic_shapes(BigVGAN(config_from_shapes(shapes), device="meta"))
    out: dict[str, list[int]] = {}
    for k, v in expected.items():
        if parametrized and k.endswith(".weight_g"):
            k = k[: -len(".weight_g")] + _PARAM_G
        elif parametrized and k.endswith(".weight_v"):
            k = k[: -len(".weight_v")] + _PARAM_V
        out[prefix + k] = v
    return out


def load_bigvgan(
    path: str | os.PathLike, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> BigVGAN:
    """Load ``best_netG.pt`` (``{'generator': ...}``; a bare generator state dict or safetensors copy also works),
    either weight-norm naming, strictly; weight norm is folded into plain weights.

    Raises :class:`ovi_core.io.checkpoints.CheckpointError` naming the file, what it looks like and the first
    missing / unexpected tensors when it is not a matching BigVGAN generator.
    """
    path = os.fspath(path)
    raw = ck.load_state_dict(path)
    ident = identify({k: TensorInfo(tuple(v.shape), v.dtype) for k, v in raw.items()}, path=path)
    if ident.component == "bigvgan":  # a BigVGAN for another mel layout (e.g. 100 bands)
        raise ck.CheckpointError(
            f"{path!r} is {ident.description}; Ovi needs the 80-band 16 kHz BigVGAN "
            "(ext_weights/best_netG.pt from hkchengrex/MMAudio)."
        )
    prefix = _split_prefix(raw)
    sd = to_classic_weight_norm_names(ck.strip_prefix(raw, prefix) if prefix else raw)
    try:
        cfg = config_from_shapes(sd)
    except (ValueError, KeyError):
        cfg = BigVGANConfig.full_size()  # the strict check below says what is wrong
    model = BigVGAN(cfg, device="meta")
    what = "BigVGAN 16 kHz vocoder (best_netG.pt)"
    ck.check_shapes(_classic_shapes(model), sd, path=path, what=what, ident=ident)
    folded: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        if k.endswith(".weight_g"):
            base = k[: -len(".weight_g")]
            folded[base + ".weight"] = fold_weight_norm(v, sd[base + ".weight_v"])
        elif not k.endswith(".weight_v"):
            folded[k] = v
    ck.load_strict(model, folded, path=path, what=what)
    if cfg != BigVGANConfig.full_size():
        logger.info("%s: non-standard BigVGAN config %s", path, cfg)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def write_tiny_bigvgan(path: str | os.PathLike, *, seed: int = 0) -> BigVGANConfig:
    """Write a random small generator (``upsample_initial_channel`` 64) as ``{'generator': state_dict}`` with
    classic ``weight_g``/``weight_v`` names, like ``best_netG.pt``."""
    cfg = BigVGANConfig.tiny()
    g = torch.Generator().manual_seed(seed)
    filt = kaiser_sinc_filter1d(0.25, 0.3, 12)  # cutoff 0.5 / ratio, half width 0.6 / ratio, ratio 2
    sd: dict[str, torch.Tensor] = {}
    for name, shape in _classic_shapes(BigVGAN(cfg, device="meta")).items():
        if name.endswith(".filter"):
            sd[name] = filt.clone()
        elif name.endswith(".weight_g"):
            sd[name] = 0.7 * (1.0 + 0.1 * torch.randn(shape, generator=g))  # keeps the random net unsaturated
        elif name.endswith(".weight_v"):
            sd[name] = torch.randn(shape, generator=g)
        elif name.endswith(".alpha") or name.endswith(".beta"):
            sd[name] = 0.1 * torch.randn(shape, generator=g)  # log scale
        else:  # biases
            sd[name] = 0.01 * torch.randn(shape, generator=g)
    torch.save({"generator": sd}, os.fspath(path))
    return cfg
