"""One Ovi tower (the official ``WanModel``), used for both modalities.

Module attribute names are the official tensor names (``blocks.i.modulation.modulation``,
``cross_attn.k_fusion``, ``patch_embedding.2.w1``, ...), so official files load strictly.

Precision (explicit, no autocast): every layer computes in the dtype of its input, the model's
*compute dtype*; weights stored in another dtype (fp8 files, or bf16 norms in an fp32 run) are cast to it
at call time. With compute dtype bf16 this reproduces the official code, which casts everything to bf16:
RMS and LayerNorm statistics, modulation, the time embedding and the residual stream are all bf16, the
timestep sinusoid is computed in float64 then rounded, RoPE is applied in float64 then rounded. With
compute dtype float32 everything is float32 (sinusoid and RoPE still float64, rounded to float32). With
float16 the norm statistics are taken in float32 to avoid overflow (the official model is not meant for
fp16).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ovi_core.model.config import TowerConfig
from ovi_core.model.rope import RopeTable, apply_rope, audio_rope_table, video_rope_table
from ovi_core.runtime.attention import attention
from ovi_core.runtime.ops import CastLinear, cast_param, derive, resolve

Rope = RopeTable


# ----------------------------------------------------------------------------------------------
# Layers that cast their stored weights to the input's dtype and device (fp8 storage, mixed precision,
# weights streamed by ComfyUI), built on an ``operations`` namespace (:mod:`ovi_core.runtime.ops`)
# ----------------------------------------------------------------------------------------------


def _cast(p: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    """A parameter that is not a layer's weight (modulation tables) on ``like``'s device and dtype."""
    return p if p is None else p.to(device=like.device, dtype=like.dtype)


def _stat_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype == torch.float16 else dtype


class _Conv3dMixin:
    """``Conv3d`` whose weight and bias are cast to the input dtype and device at call time."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, cast_param(self, "weight", x), cast_param(self, "bias", x))


class _ChannelLastConv1dMixin:
    """Conv1d over time on channel-last input ``[B, L, C_in] -> [B, L, C_out]``; weights cast at call time."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._conv_forward(x.transpose(1, 2), cast_param(self, "weight", x), cast_param(self, "bias", x))
        return y.transpose(1, 2)  # [B, L, C_out]


class _RMSNormMixin:
    """RMS norm over the last dim with a weight (the official ``WanRMSNorm``), in the compute dtype."""

    def __init__(self, dim: int, *, eps: float = 1e-6, device=None, dtype=None) -> None:
        super().__init__(dim, eps=eps, elementwise_affine=True, device=device, dtype=dtype)
        with torch.no_grad():
            if self.weight.device.type != "meta":
                self.weight.fill_(1.0)  # (ComfyUI's ops skip initialisation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., dim] -> [..., dim]``."""
        xs = x.to(_stat_dtype(x.dtype))
        y = (xs * torch.rsqrt(xs.pow(2).mean(dim=-1, keepdim=True) + self.eps)).to(x.dtype)
        return y * cast_param(self, "weight", x)


class _LayerNormMixin:
    """LayerNorm (optionally affine, the official ``WanLayerNorm``) in the compute dtype."""

    def __init__(self, dim: int, *, eps: float = 1e-6, elementwise_affine: bool = False, device=None, dtype=None):
        super().__init__(dim, eps=eps, elementwise_affine=elementwise_affine, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., dim] -> [..., dim]``."""
        sd = _stat_dtype(x.dtype)
        xs = x.to(sd)
        y = F.layer_norm(xs, self.normalized_shape, cast_param(self, "weight", xs), cast_param(self, "bias", xs),
                         self.eps)
        return y.to(x.dtype)


@dataclass(frozen=True)
class Layers:
    """Ovi's layer classes over one ``operations`` namespace."""

    Linear: type
    Conv3d: type
    ChannelLastConv1d: type
    RMSNorm: type
    LayerNorm: type


@functools.cache
def layers(operations: object | None = None) -> Layers:
    """Ovi's layers built on ``operations`` (None: plain ``torch.nn``); one set of classes per namespace."""
    ops = resolve(operations)

    def make(name: str, mixin: type, base: type) -> type:
        return derive(name, mixin, base, __name__)

    return Layers(make("Linear", CastLinear, ops.Linear), make("Conv3d", _Conv3dMixin, ops.Conv3d),
                  make("ChannelLastConv1d", _ChannelLastConv1dMixin, ops.Conv1d),
                  make("RMSNorm", _RMSNormMixin, ops.RMSNorm), make("LayerNorm", _LayerNormMixin, ops.LayerNorm))


_DEFAULT = layers(None)
Linear, Conv3d, ChannelLastConv1d = _DEFAULT.Linear, _DEFAULT.Conv3d, _DEFAULT.ChannelLastConv1d
RMSNorm, LayerNorm = _DEFAULT.RMSNorm, _DEFAULT.LayerNorm


class ConvMLP(nn.Module):
    """SwiGLU with kernel-7 convolutions: ``w2(silu(w1(x)) * w3(x))`` on ``[B, L, C]`` (no biases)."""

    def __init__(self, dim: int, hidden_dim: int, *, kernel_size: int = 7, device=None, dtype=None,
                 operations: object | None = None) -> None:
        super().__init__()
        conv = layers(operations).ChannelLastConv1d
        kw = dict(kernel_size=kernel_size, padding=kernel_size // 2, bias=False, device=device, dtype=dtype)
        self.w1 = conv(dim, hidden_dim, **kw)
        self.w2 = conv(hidden_dim, dim, **kw)
        self.w3 = conv(dim, hidden_dim, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, L, dim] -> [B, L, dim]``."""
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


def select_rows(rows: torch.Tensor, clean: torch.Tensor | None) -> torch.Tensor:
    """Per-token choice between two modulation rows, without a ``[B, L, num, dim]`` expansion.

    ``rows [B, N, dim]``: N = 1 (one timestep per sample, returned as is, broadcasting over tokens), or N = 2
    with row 0 for timestep t and row 1 for timestep 0; ``clean`` bool ``[B|1, L, 1]`` (True = row 1) or None.
    Returns ``[B, 1, dim]`` or ``[B, L, dim]``: exactly the values of a per-token gather, made at the use site
    and freed after it.
    """
    if clean is None or rows.shape[1] == 1:
        return rows
    return torch.where(clean, rows[:, 1:2], rows[:, 0:1])


class TokenModulation:
    """The ``num`` shift/scale/gate vectors of one block, ``e[k]`` -> ``[B, 1|L, dim]`` (see :func:`select_rows`).

    Holds only the rows ``[B, N, num, dim]`` (N = 1 or 2) and the token mask; ``e[k]`` selects per token on use.
    """

    def __init__(self, rows: torch.Tensor, clean: torch.Tensor | None) -> None:
        self.rows, self.clean = rows, clean

    def __len__(self) -> int:
        return self.rows.shape[2]

    def __getitem__(self, k: int) -> torch.Tensor:
        return select_rows(self.rows[:, :, k], self.clean)


Mods = list[torch.Tensor] | TokenModulation


class ModulationAdd(nn.Module):
    """Holds the learned ``modulation`` ``[1, num, dim]`` added to the projected time embedding."""

    def __init__(self, dim: int, num: int, *, device=None, dtype=None) -> None:
        super().__init__()
        self.modulation = nn.Parameter(torch.zeros(1, num, dim, device=device, dtype=dtype))

    def forward(self, e0: torch.Tensor, clean: torch.Tensor | None = None) -> list[torch.Tensor] | TokenModulation:
        """``e0 [B, N, num, dim]`` -> ``num`` shift/scale/gate vectors.

        Without ``clean``: a list of ``num`` tensors ``[B, N, dim]`` (N = 1: broadcast over tokens; N = L: per token).
        With ``clean`` (bool ``[B|1, L, 1]``, True = timestep 0) and N = 2 rows (t, 0): a :class:`TokenModulation`
        whose ``[k]`` gives ``[B, L, dim]``, the same values as the rows gathered per token.
        """
        e = _cast(self.modulation, e0) + e0  # [B, N, num, dim]
        if clean is not None and e.shape[1] == 2:
            return TokenModulation(e, clean)
        return [c.squeeze(2) for c in e.chunk(e.shape[2], dim=2)]


# ----------------------------------------------------------------------------------------------
# Attention
# ----------------------------------------------------------------------------------------------


class SelfAttention(nn.Module):
    """Self-attention with qk RMSNorm over the full width (before the head split) and RoPE on q, k."""

    def __init__(self, dim: int, num_heads: int, *, qk_norm: bool, eps: float, device=None, dtype=None,
                 operations: object | None = None) -> None:
        super().__init__()
        L = layers(operations)
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        kw = dict(device=device, dtype=dtype)
        self.q = L.Linear(dim, dim, **kw)
        self.k = L.Linear(dim, dim, **kw)
        self.v = L.Linear(dim, dim, **kw)
        self.o = L.Linear(dim, dim, **kw)
        self.norm_q = L.RMSNorm(dim, eps=eps, **kw) if qk_norm else nn.Identity()
        self.norm_k = L.RMSNorm(dim, eps=eps, **kw) if qk_norm else nn.Identity()

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, self.head_dim))  # [B, L, dim] -> [B, L, H, D]

    def forward(self, x: torch.Tensor, rope: Rope, *, backend: str = "auto") -> torch.Tensor:
        """``x [B, L, dim]``, ``rope`` tables for L tokens -> ``[B, L, dim]``."""
        q = apply_rope(self._heads(self.norm_q(self.q(x))), rope)
        k = apply_rope(self._heads(self.norm_k(self.k(x))), rope)
        v = self._heads(self.v(x))
        return self.o(attention(q, k, v, backend=backend).flatten(2))


class FusionCrossAttention(SelfAttention):
    """Text cross-attention plus cross-modal ("fusion") attention, sharing ``q`` and ``o``.

    ``out = o(attn(q, k(text), v(text)) + attn(rope(q), rope(k_fusion(T)), v_fusion(T)))`` where
    ``T = pre_attn_norm_fusion(target)`` is the other tower's hidden state. No RoPE in the text part.
    """

    def __init__(self, dim: int, num_heads: int, *, qk_norm: bool, eps: float, device=None, dtype=None,
                 operations: object | None = None) -> None:
        super().__init__(dim, num_heads, qk_norm=qk_norm, eps=eps, device=device, dtype=dtype, operations=operations)
        L = layers(operations)
        kw = dict(device=device, dtype=dtype)
        self.k_fusion = L.Linear(dim, dim, **kw)
        self.v_fusion = L.Linear(dim, dim, **kw)
        self.pre_attn_norm_fusion = L.LayerNorm(dim, eps=1e-6, elementwise_affine=True, **kw)
        self.norm_k_fusion = L.RMSNorm(dim, eps=1e-6, **kw) if qk_norm else nn.Identity()

    def text_kv(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Text keys and values: ``context [B, text_len, dim]`` -> two ``[B, text_len, H, D]``."""
        return self._heads(self.norm_k(self.k(context))), self._heads(self.v(context))

    def forward(  # type: ignore[override]
        self,
        x: torch.Tensor,
        context: torch.Tensor,
        target: torch.Tensor,
        rope: Rope,
        target_rope: Rope,
        *,
        backend: str = "auto",
        text_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """``x [B, Ls, dim]``, ``context [B, text_len, dim]``, ``target [B, Lt, dim]`` -> ``[B, Ls, dim]``.

        ``text_kv``: :meth:`text_kv` of ``context`` computed earlier (a run's cache), else computed here."""
        q = self._heads(self.norm_q(self.q(x)))  # [B, Ls, H, D]
        k, v = self.text_kv(context) if text_kv is None else text_kv  # [B, text_len, H, D]
        out = attention(q, k, v, backend=backend)
        t = self.pre_attn_norm_fusion(target)
        kt = apply_rope(self._heads(self.norm_k_fusion(self.k_fusion(t))), target_rope)  # [B, Lt, H, D]
        vt = self._heads(self.v_fusion(t))
        out = out + attention(apply_rope(q, rope), kt, vt, backend=backend)
        return self.o(out.flatten(2))  # [B, Ls, H, D] -> [B, Ls, dim] -> o


class Block(nn.Module):
    """One tower block (the official ``WanAttentionBlock`` with the fusion layers injected).

    The fusion model runs it in two steps so that the two towers can interleave:
    :meth:`self_attn_step` then :meth:`cross_ffn_step`.
    """

    def __init__(self, cfg: TowerConfig, *, device=None, dtype=None, operations: object | None = None) -> None:
        super().__init__()
        L = layers(operations)
        kw = dict(device=device, dtype=dtype)
        ops = dict(kw, operations=operations)
        dim = cfg.dim
        self.norm1 = L.LayerNorm(dim, eps=cfg.eps)
        self.self_attn = SelfAttention(dim, cfg.num_heads, qk_norm=cfg.qk_norm, eps=cfg.eps, **ops)
        self.norm3 = (L.LayerNorm(dim, eps=cfg.eps, elementwise_affine=True, **kw) if cfg.cross_attn_norm
                      else nn.Identity())
        self.cross_attn = FusionCrossAttention(dim, cfg.num_heads, qk_norm=cfg.qk_norm, eps=cfg.eps, **ops)
        self.norm2 = L.LayerNorm(dim, eps=cfg.eps)
        self.ffn = nn.Sequential(L.Linear(dim, cfg.ffn_dim, **kw), nn.GELU(approximate="tanh"),
                                 L.Linear(cfg.ffn_dim, dim, **kw))
        self.modulation = ModulationAdd(dim, 6, **kw)

    def self_attn_step(self, x: torch.Tensor, e: Mods, rope: Rope, *, backend: str) -> torch.Tensor:
        """``x [B, L, dim]``, ``e`` = 6 modulation vectors ``[B, L|1, dim]`` -> ``[B, L, dim]``."""
        y = self.self_attn(self.norm1(x) * (1 + e[1]) + e[0], rope, backend=backend)
        return x + y * e[2]

    def cross_ffn_step(
        self,
        x: torch.Tensor,
        e: Mods,
        context: torch.Tensor,
        target: torch.Tensor,
        rope: Rope,
        target_rope: Rope,
        *,
        backend: str,
        text_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Text + fusion cross-attention (ungated) then the modulated, gated FFN. ``[B, L, dim]`` in and out."""
        x = x + self.cross_attn(self.norm3(x), context, target, rope, target_rope, backend=backend, text_kv=text_kv)
        y = self.ffn(self.norm2(x) * (1 + e[4]) + e[3])
        return x + y * e[5]


class Head(nn.Module):
    """Output head: ``head(LN(x) * (1 + scale) + shift)`` with (shift, scale) = ``modulation + e``."""

    def __init__(self, dim: int, out_dim: int, patch_size: tuple[int, ...], *, eps: float, device=None, dtype=None,
                 operations: object | None = None):
        super().__init__()
        L = layers(operations)
        self.norm = L.LayerNorm(dim, eps=eps)
        self.head = L.Linear(dim, math.prod(patch_size) * out_dim, device=device, dtype=dtype)
        self.modulation = nn.Parameter(torch.zeros(1, 2, dim, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor, e: torch.Tensor, clean: torch.Tensor | None = None) -> torch.Tensor:
        """``x [B, L, dim]``, ``e [B, N, dim]`` (time embedding before projection; N = 1, L, or 2 rows (t, 0)
        selected per token by ``clean`` bool ``[B|1, L, 1]``) -> ``[B, L, prod(patch)*out_dim]``."""
        m = _cast(self.modulation, e)[:, None] + e[:, :, None]  # [1,1,2,D] + [B,N,1,D] -> [B,N,2,D]
        shift, scale = select_rows(m[:, :, 0], clean), select_rows(m[:, :, 1], clean)
        return self.head(self.norm(x) * (1 + scale) + shift)


def sinusoidal_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """``t [...]`` (integer-valued timesteps) -> ``[..., dim]`` = cat[cos(t w), sin(t w)], float64."""
    half = dim // 2
    omega = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=t.device) / half)  # [half]
    arg = t.to(torch.float64)[..., None] * omega  # [..., half]
    return torch.cat([arg.cos(), arg.sin()], dim=-1)


# ----------------------------------------------------------------------------------------------
# Tower
# ----------------------------------------------------------------------------------------------


class OviTower(nn.Module):
    """Video (``model_type`` 'ti2v') or audio ('t2a') tower: embeddings, blocks, head.

    The fused forward lives in :class:`ovi_core.model.fusion.OviFusionModel`; this class provides the
    per-tower pieces (:meth:`embed`, :meth:`embed_time`, :meth:`embed_text`, :meth:`rope`, :meth:`output`).
    """

    def __init__(self, config: TowerConfig, *, device=None, dtype=None, operations: object | None = None) -> None:
        super().__init__()
        self.config = config
        L = layers(operations)
        kw = dict(device=device, dtype=dtype)
        ops = dict(kw, operations=operations)
        c = config
        if c.is_audio:
            self.patch_embedding = nn.Sequential(
                L.ChannelLastConv1d(c.in_dim, c.dim, kernel_size=7, padding=3, **kw),
                nn.SiLU(),
                ConvMLP(c.dim, c.audio_hidden_dim, kernel_size=7, **ops),
            )
        else:
            self.patch_embedding = L.Conv3d(c.in_dim, c.dim, kernel_size=c.patch_size, stride=c.patch_size, **kw)
        self.text_embedding = nn.Sequential(
            L.Linear(c.text_dim, c.dim, **kw), nn.GELU(approximate="tanh"), L.Linear(c.dim, c.dim, **kw)
        )
        self.time_embedding = nn.Sequential(L.Linear(c.freq_dim, c.dim, **kw), nn.SiLU(), L.Linear(c.dim, c.dim, **kw))
        self.time_projection = nn.Sequential(nn.SiLU(), L.Linear(c.dim, 6 * c.dim, **kw))
        self.blocks = nn.ModuleList([Block(c, **ops) for _ in range(c.num_layers)])
        self.head = Head(c.dim, c.out_dim, c.patch_size, eps=c.eps, **ops)

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        """Latent -> tokens ``[B, L, dim]`` and the token grid.

        video: ``[B, in_dim, F, H, W]`` -> ``L = F/pt * H/ph * W/pw``, grid ``(F/pt, H/ph, W/pw)``;
        audio: ``[B, L, in_dim]`` -> grid ``(L,)``.
        """
        if self.config.is_audio:
            return self.patch_embedding(x), (x.shape[1],)
        y = self.patch_embedding(x)  # [B, dim, f, h, w]
        grid = tuple(y.shape[2:])
        return y.flatten(2).transpose(1, 2), grid  # [B, f*h*w, dim]

    def embed_time(self, t: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """``t [B, N]`` timesteps -> ``e [B, N, dim]`` and ``e0 [B, N, 6, dim]`` in ``dtype``."""
        e = self.time_embedding(sinusoidal_embedding(t, self.config.freq_dim).to(dtype))  # [B, N, dim]
        e0 = self.time_projection(e).unflatten(-1, (6, self.config.dim))  # [B, N, 6, dim]
        return e, e0

    def embed_text(
        self, context: torch.Tensor | list[torch.Tensor], dtype: torch.dtype, device: torch.device | None = None
    ) -> torch.Tensor:
        """Text embeddings ``[B, Lt, text_dim]`` or a list of ``[Lt_i, text_dim]`` (each ``Lt <= text_len``)
        -> zero-padded to ``text_len`` rows, then projected: ``[B, text_len, dim]``. All rows are attended."""
        c = self.config
        rows = list(context.unbind(0)) if isinstance(context, torch.Tensor) else list(context)
        if isinstance(context, torch.Tensor) and context.ndim != 3:
            raise ValueError(f"text context must be [B, L, {c.text_dim}] or a list of [L, {c.text_dim}]")
        padded = []
        for u in rows:
            if u.ndim != 2 or u.shape[1] != c.text_dim or u.shape[0] > c.text_len:
                raise ValueError(
                    f"each text context must be [L <= {c.text_len}, {c.text_dim}], got {list(u.shape)}; "
                    f"truncate the prompt embedding to {c.text_len} tokens."
                )
            padded.append(F.pad(u.to(device=device, dtype=dtype), (0, 0, 0, c.text_len - u.shape[0])))
        return self.text_embedding(torch.stack(padded).to(device=device, dtype=dtype))  # [B, text_len, dim]

    def rope(self, grid: tuple[int, ...], device: torch.device) -> Rope:
        """RoPE table for this tower's token grid: complex ``[L, 1, head_dim/2]`` (MPS: ``(cos, sin)``)."""
        c = self.config
        if c.is_audio:
            return audio_rope_table(grid[0], c.head_dim, c.temporal_rope_scaling_factor, device)
        return video_rope_table(grid, c.head_dim, device)  # type: ignore[arg-type]

    def output(
        self, x: torch.Tensor, e: torch.Tensor, grid: tuple[int, ...], clean: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Head + unpatchify: tokens ``[B, L, dim]`` -> video ``[B, out_dim, F, H, W]`` / audio ``[B, L, out_dim]``.

        ``e [B, N, dim]`` and ``clean`` as in :meth:`Head.forward`."""
        c = self.config
        y = self.head(x, e, clean)  # [B, L, prod(patch)*out_dim]
        if c.is_audio:
            return y
        (f, h, w), (pt, ph, pw) = grid, c.patch_size
        y = y.view(y.shape[0], f, h, w, pt, ph, pw, c.out_dim)  # channel fastest within a token
        y = y.permute(0, 7, 1, 4, 2, 5, 3, 6)  # [B, C, f, pt, h, ph, w, pw]
        return y.reshape(y.shape[0], c.out_dim, f * pt, h * ph, w * pw)
