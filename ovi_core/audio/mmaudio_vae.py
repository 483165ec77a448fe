"""MMAudio 16 kHz audio VAE (``VAE_16k``: 80 mel bins <-> 20-channel latent at half the mel frame rate).

Built from EDM2 magnitude-preserving layers: ``MPConv1D`` convolutions whose weight is normalised to unit
norm per output channel and divided by ``sqrt(fan_in)``, ``mp_silu`` and ``mp_sum(t=0.3)`` residuals, pixel
norm at the start of every residual block, activations clipped to +-256. The official checkpoint
(``ext_weights/v1-16.pth``) stores the *raw* weights; the official code folds the normalisation into the
weights once (``remove_weight_norm``). :func:`load_mmaudio_vae` does the same at load, so inference here is a
plain convolution.

Shapes: mel ``[B, 80, T]`` -> posterior mean ``[B, 20, T // 2]``; latent ``[B, 20, L]`` -> mel ``[B, 80, 2L]``.
The latent is the raw posterior mean (Ovi applies no latent normalisation); the mel is normalised with the
``data_mean`` / ``data_std`` buffers (stored in the checkpoint) before encoding and un-normalised after decoding.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ovi_core.io import checkpoints as ck
from ovi_core.io.checkpoint_id import TensorInfo, identify

logger = logging.getLogger(__name__)

__all__ = [
    "MMAudioVAEConfig",
    "MMAudioVAE",
    "MPConv1D",
    "fold_mp_weight",
    "load_mmaudio_vae",
    "config_from_shapes",
    "full_size_shapes",
    "shapes_for",
    "write_tiny_mmaudio_vae",
    "DATA_MEAN_80D",
    "DATA_STD_80D",
]

# Per-mel-bin statistics of the 16 kHz training data (official constants; also stored in the checkpoint).
DATA_MEAN_80D = (
    -1.6058, -1.3676, -1.2520, -1.2453, -1.2078, -1.2224, -1.2419, -1.2439, -1.2922, -1.2927,
    -1.3170, -1.3543, -1.3401, -1.3836, -1.3907, -1.3912, -1.4313, -1.4152, -1.4527, -1.4728,
    -1.4568, -1.5101, -1.5051, -1.5172, -1.5623, -1.5373, -1.5746, -1.5687, -1.6032, -1.6131,
    -1.6081, -1.6331, -1.6489, -1.6489, -1.6700, -1.6738, -1.6953, -1.6969, -1.7048, -1.7280,
    -1.7361, -1.7495, -1.7658, -1.7814, -1.7889, -1.8064, -1.8221, -1.8377, -1.8417, -1.8643,
    -1.8857, -1.8929, -1.9173, -1.9379, -1.9531, -1.9673, -1.9824, -2.0042, -2.0215, -2.0436,
    -2.0766, -2.1064, -2.1418, -2.1855, -2.2319, -2.2767, -2.3161, -2.3572, -2.3954, -2.4282,
    -2.4659, -2.5072, -2.5552, -2.6074, -2.6584, -2.7107, -2.7634, -2.8266, -2.8981, -2.9673,
)
DATA_STD_80D = (
    1.0291, 1.0411, 1.0043, 0.9820, 0.9677, 0.9543, 0.9450, 0.9392, 0.9343, 0.9297,
    0.9276, 0.9263, 0.9242, 0.9254, 0.9232, 0.9281, 0.9263, 0.9315, 0.9274, 0.9247,
    0.9277, 0.9199, 0.9188, 0.9194, 0.9160, 0.9161, 0.9146, 0.9161, 0.9100, 0.9095,
    0.9145, 0.9076, 0.9066, 0.9095, 0.9032, 0.9043, 0.9038, 0.9011, 0.9019, 0.9010,
    0.8984, 0.8983, 0.8986, 0.8961, 0.8962, 0.8978, 0.8962, 0.8973, 0.8993, 0.8976,
    0.8995, 0.9016, 0.8982, 0.8972, 0.8974, 0.8949, 0.8940, 0.8947, 0.8936, 0.8939,
    0.8951, 0.8956, 0.9017, 0.9167, 0.9436, 0.9690, 1.0003, 1.0225, 1.0381, 1.0491,
    1.0545, 1.0604, 1.0761, 1.0929, 1.1089, 1.1196, 1.1176, 1.1156, 1.1117, 1.1070,
)

_MP_SILU_SCALE = 0.596  # EDM2: silu(x) / 0.596 keeps unit magnitude
_RES_T = 0.3  # mp_sum blend of every residual connection
_NORM_EPS = 1e-4


@dataclass(frozen=True)
class MMAudioVAEConfig:
    """Configuration of the MMAudio 1-D VAE (field names follow the official constructor)."""

    data_dim: int = 80
    embed_dim: int = 20
    hidden_dim: int = 384
    ch_mult: tuple[int, ...] = (1, 2, 4)
    num_res_blocks: int = 2
    down_layers: tuple[int, ...] = (0,)
    kernel_size: int = 3
    clip_act: float = 256.0

    @classmethod
    def full_size(cls) -> MMAudioVAEConfig:
        """``VAE_16k`` of MMAudio, used by Ovi (``v1-16.pth``)."""
        return cls()

    @classmethod
    def tiny(cls) -> MMAudioVAEConfig:
        """The golden test configuration (hidden_dim 32)."""
        return cls(hidden_dim=32)

    @property
    def temporal_downsample(self) -> int:
        return 2 ** len(self.down_layers)


# ----------------------------------------------------------------------------------------------
# Magnitude-preserving building blocks
# ----------------------------------------------------------------------------------------------


def _pixel_norm(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Scale ``x`` to unit RMS along ``dim`` (EDM2 ``normalize``; the norm is computed in at least float32)."""
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    norm = torch.linalg.vector_norm(x, dim=dim, keepdim=True, dtype=acc)
    norm = _NORM_EPS + norm / math.sqrt(x.shape[dim])
    return x / norm.to(x.dtype)


def mp_silu(x: torch.Tensor) -> torch.Tensor:
    return F.silu(x) / _MP_SILU_SCALE


def mp_sum(a: torch.Tensor, b: torch.Tensor, t: float = 0.5) -> torch.Tensor:
    """Magnitude-preserving blend ``((1 - t) a + t b) / sqrt((1 - t)^2 + t^2)``."""
    return a.lerp(b, t) / math.sqrt((1.0 - t) ** 2 + t**2)


def fold_mp_weight(weight: torch.Tensor) -> torch.Tensor:
    """Raw ``MPConv1D`` weight ``[O, I, K]`` -> the weight a plain convolution uses.

    Each output filter is scaled to unit RMS (``w / (eps + ||w|| / sqrt(I*K))``) and then divided by
    ``sqrt(I*K)``; computed in float32 and returned in the input dtype (what ``remove_weight_norm`` does).
    """
    w = weight.to(torch.float32)
    fan_in = w[0].numel()
    norm = torch.linalg.vector_norm(w, dim=list(range(1, w.ndim)), keepdim=True)
    w = w / (_NORM_EPS + norm / math.sqrt(fan_in))
    w = w / math.sqrt(fan_in)
    return w.to(weight.dtype)


class MPConv1D(nn.Module):
    """Convolution with a folded magnitude-preserving weight ``[O, I, K]``, 'same' padding, no bias."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, device=None, dtype=None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor, gain: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` ``[B, I, T]`` -> ``[B, O, T]``; ``gain`` (scalar) multiplies the weight."""
        w = self.weight if gain is None else self.weight * gain.to(self.weight.dtype)
        return F.conv1d(x, w, padding=w.shape[-1] // 2)


class ResnetBlock1D(nn.Module):
    def __init__(self, *, in_dim: int, out_dim: int, kernel_size: int = 3, device=None, dtype=None) -> None:
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.in_dim, self.out_dim = in_dim, out_dim
        self.conv1 = MPConv1D(in_dim, out_dim, kernel_size, **kw)
        self.conv2 = MPConv1D(out_dim, out_dim, kernel_size, **kw)
        if in_dim != out_dim:
            self.nin_shortcut = MPConv1D(in_dim, out_dim, 1, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in_dim, T]`` -> ``[B, out_dim, T]``."""
        x = _pixel_norm(x, dim=1)
        h = self.conv2(mp_silu(self.conv1(mp_silu(x))))
        if self.in_dim != self.out_dim:
            x = self.nin_shortcut(x)
        return mp_sum(x, h, _RES_T)


class AttnBlock1D(nn.Module):
    """Single-head self-attention over time with cosine-normalised q, k, v."""

    def __init__(self, channels: int, *, device=None, dtype=None) -> None:
        super().__init__()
        self.qkv = MPConv1D(channels, channels * 3, 1, device=device, dtype=dtype)
        self.proj_out = MPConv1D(channels, channels, 1, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, T]`` -> ``[B, C, T]``."""
        b, c, t = x.shape
        y = self.qkv(x).reshape(b, 1, c, 3, t)  # [B, heads=1, C, (q k v) interleaved, T]
        q, k, v = _pixel_norm(y, dim=2).unbind(3)  # each [B, 1, C, T]
        h = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        h = h.transpose(-1, -2).reshape(b, c, t)  # [B, 1, T, C] -> [B, C, T]
        return mp_sum(x, self.proj_out(h), _RES_T)


class Downsample1D(nn.Module):
    def __init__(self, channels: int, *, device=None, dtype=None) -> None:
        super().__init__()
        self.conv1 = MPConv1D(channels, channels, 1, device=device, dtype=dtype)
        self.conv2 = MPConv1D(channels, channels, 1, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, T]`` -> ``[B, C, T // 2]``."""
        return self.conv2(F.avg_pool1d(self.conv1(x), kernel_size=2, stride=2))


class Upsample1D(nn.Module):
    def __init__(self, channels: int, *, kernel_size: int = 3, device=None, dtype=None) -> None:
        super().__init__()
        self.conv = MPConv1D(channels, channels, kernel_size, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, T]`` -> ``[B, C, 2T]``."""
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest-exact"))


class _Mid(nn.Module):
    def __init__(self, ch: int, kernel_size: int, **kw: Any) -> None:
        super().__init__()
        self.block_1 = ResnetBlock1D(in_dim=ch, out_dim=ch, kernel_size=kernel_size, **kw)
        self.attn_1 = AttnBlock1D(ch, **kw)
        self.block_2 = ResnetBlock1D(in_dim=ch, out_dim=ch, kernel_size=kernel_size, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class Encoder1D(nn.Module):
    def __init__(self, cfg: MMAudioVAEConfig, *, device=None, dtype=None) -> None:
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.cfg = cfg
        dim, ks = cfg.hidden_dim, cfg.kernel_size
        self.conv_in = MPConv1D(cfg.data_dim, dim, ks, **kw)
        self.down = nn.ModuleList()
        block_in = dim
        for i, mult in enumerate(cfg.ch_mult):
            level = nn.Module()
            level.block = nn.ModuleList()
            for _ in range(cfg.num_res_blocks):
                level.block.append(ResnetBlock1D(in_dim=block_in, out_dim=dim * mult, kernel_size=ks, **kw))
                block_in = dim * mult
            if i in cfg.down_layers:
                level.downsample = Downsample1D(block_in, **kw)
            self.down.append(level)
        self.mid = _Mid(block_in, ks, **kw)
        self.conv_out = MPConv1D(block_in, 2 * cfg.embed_dim, ks, **kw)
        self.learnable_gain = nn.Parameter(torch.zeros([], **kw))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised mel ``[B, data_dim, T]`` -> moments ``[B, 2*embed_dim, T / 2^len(down_layers)]``."""
        clip = self.cfg.clip_act
        h = self.conv_in(x)
        for i, level in enumerate(self.down):
            for block in level.block:
                h = block(h).clamp(-clip, clip)
            if i in self.cfg.down_layers:
                h = level.downsample(h)
        h = self.mid(h).clamp(-clip, clip)
        return self.conv_out(mp_silu(h), gain=self.learnable_gain + 1)


class Decoder1D(nn.Module):
    def __init__(self, cfg: MMAudioVAEConfig, *, device=None, dtype=None) -> None:
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.cfg = cfg
        dim, ks, n = cfg.hidden_dim, cfg.kernel_size, len(cfg.ch_mult)
        self.up_layers = tuple(i + 1 for i in cfg.down_layers)
        top = dim * cfg.ch_mult[-1]
        self.conv_in = MPConv1D(cfg.embed_dim, top, ks, **kw)
        self.mid = _Mid(top, ks, **kw)
        self.up = nn.ModuleList()
        for i in range(n):  # level i receives the output of level i + 1 (processing runs from n - 1 down to 0)
            block_in = dim * cfg.ch_mult[i + 1] if i + 1 < n else top
            level = nn.Module()
            level.block = nn.ModuleList()
            for _ in range(cfg.num_res_blocks + 1):
                level.block.append(ResnetBlock1D(in_dim=block_in, out_dim=dim * cfg.ch_mult[i], kernel_size=ks, **kw))
                block_in = dim * cfg.ch_mult[i]
            if i in self.up_layers:
                level.upsample = Upsample1D(block_in, kernel_size=ks, **kw)
            self.up.append(level)
        self.conv_out = MPConv1D(dim * cfg.ch_mult[0], cfg.data_dim, ks, **kw)
        self.learnable_gain = nn.Parameter(torch.zeros([], **kw))

    def head(self, z: torch.Tensor) -> torch.Tensor:
        """Latent ``[B, embed_dim, L]`` -> bottleneck features ``[B, hidden*ch_mult[-1], L]`` (global attention)."""
        clip = self.cfg.clip_act
        return self.mid(self.conv_in(z)).clamp(-clip, clip)

    def tail(self, h: torch.Tensor) -> torch.Tensor:
        """Bottleneck features ``[B, C, L]`` -> normalised mel ``[B, data_dim, L * 2^len(down_layers)]``.

        Convolutions only (finite receptive field, see :meth:`tail_radius`), so it can run in time chunks.
        """
        clip = self.cfg.clip_act
        for i in reversed(range(len(self.up))):
            level = self.up[i]
            for block in level.block:
                h = block(h).clamp(-clip, clip)
            if i in self.up_layers:
                h = level.upsample(h)
        return self.conv_out(mp_silu(h), gain=self.learnable_gain + 1)

    def tail_radius(self) -> int:
        """Latent frames on each side of a position that :meth:`tail` reads (a safe upper bound)."""
        half = self.cfg.kernel_size // 2
        radius, scale = 0.0, 1  # radius in latent frames; scale = output frames per latent at this level
        for i in reversed(range(len(self.up))):
            radius += (self.cfg.num_res_blocks + 1) * 2 * half / scale
            if i in self.up_layers:
                scale *= 2
                radius += (half + 1) / scale
        radius += half / scale
        return int(math.ceil(radius)) + 1

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Latent ``[B, embed_dim, L]`` -> normalised mel ``[B, data_dim, 2L]``."""
        return self.tail(self.head(z))


class MMAudioVAE(nn.Module):
    """MMAudio 1-D VAE with folded magnitude-preserving weights (load with :func:`load_mmaudio_vae`)."""

    def __init__(self, config: MMAudioVAEConfig | None = None, *, device=None, dtype=None) -> None:
        super().__init__()
        self.config = cfg = config or MMAudioVAEConfig.full_size()
        self.register_buffer("data_mean", torch.zeros(1, cfg.data_dim, 1, device=device, dtype=dtype))
        self.register_buffer("data_std", torch.ones(1, cfg.data_dim, 1, device=device, dtype=dtype))
        self.encoder = Encoder1D(cfg, device=device, dtype=dtype)
        self.decoder = Decoder1D(cfg, device=device, dtype=dtype)

    @property
    def dtype(self) -> torch.dtype:
        return self.decoder.conv_in.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.decoder.conv_in.weight.device

    def encode_moments(self, mel: torch.Tensor) -> torch.Tensor:
        """Log-mel ``[B, 80, T]`` -> posterior moments ``[B, 40, T // 2]`` (mean, then log-variance)."""
        x = mel.to(device=self.device, dtype=self.dtype)
        x = (x - self.data_mean) / self.data_std
        return self.encoder(x)

    def encode(self, mel: torch.Tensor) -> torch.Tensor:
        """Log-mel ``[B, 80, T]`` -> posterior mean ``[B, 20, T // 2]`` (the Ovi audio latent, channel-first)."""
        return self.encode_moments(mel)[:, : self.config.embed_dim]

    def decode(self, z: torch.Tensor, *, chunk_size: int | None = None) -> torch.Tensor:
        """Latent ``[B, 20, L]`` -> log-mel ``[B, 80, 2L]`` (un-normalised).

        ``chunk_size`` (latent frames) runs the convolutional part of the decoder in time chunks with enough
        context on both sides that the result equals the unchunked one (up to float rounding); the
        bottleneck (with its global attention) always runs on the whole sequence.
        """
        z = z.to(device=self.device, dtype=self.dtype)
        h = self.decoder.head(z)  # [B, C, L]
        length = h.shape[-1]
        if chunk_size is None or chunk_size >= length:
            x = self.decoder.tail(h)
        else:
            if chunk_size < 1:
                raise ValueError(f"chunk_size must be a positive number of latent frames, got {chunk_size}")
            up = self.config.temporal_downsample
            ctx = self.decoder.tail_radius()
            win = min(length, chunk_size + 2 * ctx)  # every window has the same length (one kernel shape)
            parts = []
            for start in range(0, length, chunk_size):
                end = min(start + chunk_size, length)
                lo = min(max(0, start - ctx), length - win)
                out = self.decoder.tail(h[..., lo : lo + win])  # [B, 80, win * up]
                parts.append(out[..., (start - lo) * up : (end - lo) * up])
            x = torch.cat(parts, dim=-1)  # [B, 80, L * up]
        return x * self.data_std + self.data_mean

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Latent ``[B, 20, L]`` -> log-mel ``[B, 80, 2L]``."""
        return self.decode(z)


# ----------------------------------------------------------------------------------------------
# Shapes, loading, tiny weights
# ----------------------------------------------------------------------------------------------


def _meta_shapes(cfg: MMAudioVAEConfig) -> dict[str, list[int]]:
    return ck.meta_shapes(MMAudioVAE(cfg, device="meta"))


def full_size_shapes() -> dict[str, list[int]]:
    """State-dict ``{name: shape}`` of the official 16 kHz VAE (``v1-16.pth``), built on the meta device."""
    return _meta_shapes(MMAudioVAEConfig.full_size())


def config_from_shapes(shapes: dict[str, Any]) -> MMAudioVAEConfig:
    """Infer the configuration from a state dict's ``{name: shape}``; ``ValueError`` if it is not this VAE."""
    shp = {k: tuple(v.shape) if hasattr(v, "shape") else tuple(v) for k, v in shapes.items()}
    need = ("data_mean", "encoder.conv_in.weight", "decoder.conv_in.weight", "encoder.down.0.block.0.conv1.weight")
    missing = [k for k in need if k not in shp]
    if missing:
        raise ValueError(f"not an MMAudio VAE state dict: missing {', '.join(missing)}")
    hidden = shp["encoder.conv_in.weight"][0]
    levels = ck.count_indexed(shp, "encoder.down.")
    mult = tuple(shp[f"encoder.down.{i}.block.0.conv1.weight"][0] // hidden for i in range(levels))
    return MMAudioVAEConfig(
        data_dim=shp["data_mean"][1],
        embed_dim=shp["decoder.conv_in.weight"][1],
        hidden_dim=hidden,
        ch_mult=mult,
        num_res_blocks=ck.count_indexed(shp, "encoder.down.0.block."),
        down_layers=tuple(i for i in range(levels) if f"encoder.down.{i}.downsample.conv1.weight" in shp),
        kernel_size=shp["encoder.conv_in.weight"][2],
    )


def shapes_for(shapes: dict[str, Any]) -> dict[str, list[int]]:
    """Expected ``{name: shape}`` for the VAE configuration that a file's shapes imply."""
    return _meta_shapes(config_from_shapes(shapes))


def load_mmaudio_vae(
    path: str | os.PathLike, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> MMAudioVAE:
    """Load ``v1-16.pth`` (or a safetensors copy / tiny file) strictly and fold the weight normalisation.

    Raises :class:`ovi_core.io.checkpoints.CheckpointError` naming the file, what it looks like and the first
    missing / unexpected tensors when it is not an MMAudio VAE of a matching shape.
    """
    path = os.fspath(path)
    sd = ck.load_state_dict(path)
    ident = identify({k: TensorInfo(tuple(v.shape), v.dtype) for k, v in sd.items()}, path=path)
    if ident.component == "mmaudio-vae" and not ident.compatible:
        raise ck.CheckpointError(
            f"{path!r} is {ident.description}, not the 16 kHz VAE Ovi uses. {' '.join(ident.notes)} "
            "(download ext_weights/v1-16.pth from hkchengrex/MMAudio)."
        )
    try:
        cfg = config_from_shapes(sd)
    except ValueError:
        cfg = MMAudioVAEConfig.full_size()  # the strict check below reports what is wrong
    model = MMAudioVAE(cfg, device="meta")
    conv_weights = {k for k in model.state_dict() if k.endswith(".weight")}
    sd = {k: fold_mp_weight(v) if k in conv_weights and v.ndim == 3 else v for k, v in sd.items()}
    ck.load_strict(model, sd, path=path, what="MMAudio 16 kHz audio VAE (v1-16.pth)")
    if cfg != MMAudioVAEConfig.full_size():
        logger.info("%s: non-standard MMAudio VAE config %s", path, cfg)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def write_tiny_mmaudio_vae(path: str | os.PathLike, *, seed: int = 0) -> MMAudioVAEConfig:
    """Write a random hidden_dim-32 VAE as a plain fp32 state dict ``.pth`` like ``v1-16.pth`` (raw, unfolded)."""
    cfg = MMAudioVAEConfig.tiny()
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    for name, shape in sorted(_meta_shapes(cfg).items()):
        if name == "data_mean":
            sd[name] = torch.tensor(DATA_MEAN_80D, dtype=torch.float32).view(shape)
        elif name == "data_std":
            sd[name] = torch.tensor(DATA_STD_80D, dtype=torch.float32).view(shape)
        elif name.endswith("learnable_gain"):
            sd[name] = 0.05 * torch.randn(shape, generator=g)
        else:
            sd[name] = torch.randn(shape, generator=g)  # the official initialisation (raw, before folding)
    torch.save(sd, os.fspath(path))
    return cfg
