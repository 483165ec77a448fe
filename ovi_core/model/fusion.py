"""The Ovi fusion model: a video tower and an audio tower joined in every block (OVI_REFERENCE.md §2.5).

Per fused layer i (video block ``vb``, audio block ``ab``), in the official order:

1. audio self-attention (1-D scaled RoPE);
2. video self-attention (3-D RoPE);
3. ``og_audio`` = the audio state after its self-attention;
4. audio cross step: text attention + fusion attention to the video state *after* step 2, then FFN;
5. video cross step: text attention + fusion attention to ``og_audio``, then FFN.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ovi_core.model import ref_rope, rope
from ovi_core.model.config import FusionConfig
from ovi_core.model.packed_compile import PackedBlocks, has_packed
from ovi_core.model.ref_rope import RefLayout
from ovi_core.model.tower import OviTower, Rope
from ovi_core.quant.fp8 import FP8_DTYPES

logger = logging.getLogger(__name__)

Context = torch.Tensor | Sequence[torch.Tensor]


class OviFusionModel(nn.Module):
    """Twin-tower Ovi DiT. State-dict keys: ``video_model.*`` and ``audio_model.*`` (official names).

    Attributes:
        video_model, audio_model: the two :class:`OviTower` s.
        block_hook: optional ``hook(i)`` called before fused layer i runs (e.g. a block-swap manager that
            moves ``video_model.blocks[i]`` / ``audio_model.blocks[i]`` to the GPU). Not called for a layer
            that skip-layer guidance drops for every row.
        gradient_checkpointing: when True and training, each fused layer runs under
            ``torch.utils.checkpoint`` (``use_reentrant=False``).
        attention_backend: passed to :func:`ovi_core.runtime.attention.attention` (``"auto"`` = process default).
        compute_dtype: the dtype every layer computes in (see :attr:`compute_dtype`).

    ``operations`` (:mod:`ovi_core.runtime.ops`): the namespace the layers are built on, as ComfyUI's model
    classes take it (e.g. ``comfy.ops.manual_cast``, so that a ``ModelPatcher`` can stream the layers that do not
    fit on the GPU); None: plain ``torch.nn``. The numerics are Ovi's in either case.
    """

    def __init__(self, config: FusionConfig, *, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None, operations: object | None = None) -> None:
        super().__init__()
        self.config = config
        self.video_model = OviTower(config.video, device=device, dtype=dtype, operations=operations)
        self.audio_model = OviTower(config.audio, device=device, dtype=dtype, operations=operations)
        self.block_hook: Callable[[int], None] | None = None
        self.gradient_checkpointing: bool = False
        self.attention_backend: str = "auto"
        self._compute_dtype: torch.dtype | None = None
        self._text_cache: dict | None = None
        self._cache_stats = {"hits": 0, "misses": 0, "kv_hits": 0, "kv_misses": 0}
        self.cache_text_kv: bool = True
        self._layer_fn = self._fused_layer
        self._blocks_fn = _fused_blocks

    @contextlib.contextmanager
    def cache_text_embeddings(self) -> Iterator[None]:
        """Within the block (one sampling run), text-side work is done once per distinct context instead of at
        every forward (the sampler passes the same prompt embeddings at every step):

        * the projected text contexts ``[B, text_len, dim]`` of each tower;
        * when :attr:`cache_text_kv` is True (default), each block's text keys and values
          ``[B, text_len, heads, head_dim]`` (``norm_k(k(ctx))``, ``v(ctx)``), on the device the block ran on.
          Size: ``2 towers x num_layers x text_len x dim x 2 (k and v)`` elements per context row; the full
          model in bf16: 2 x 30 x 512 x 3072 x 2 x 2 bytes = 360 MiB per row, 720 MiB for one positive and one
          negative prompt. Set ``cache_text_kv = False`` where that memory matters more than ~12 % of a forward.

        Entries are keyed by the identity and version of the context tensors (and, for k/v, of the
        block's ``k``/``v`` weights and hooks, so attaching or merging a LoRA invalidates them); nothing is
        cached while autograd is enabled (training). Changing a LoRA's strength inside the block is not seen.
        """
        self._text_cache = {}
        try:
            yield
        finally:
            self._text_cache = None

    def clear_caches(self) -> None:
        """Free what outlives a forward: the text contexts and k/v of the current run (the run keeps caching
        afresh) and the RoPE tables (:func:`ovi_core.model.rope.clear_caches`). Called when the model is unloaded."""
        if self._text_cache is not None:
            self._text_cache.clear()
        rope.clear_caches()
        ref_rope.clear_caches()

    def text_cache_stats(self) -> dict[str, int]:
        """Counters of the text cache since the model was built: context ``hits``/``misses`` and k/v
        ``kv_hits``/``kv_misses``, plus ``entries`` (cached contexts now; 0 outside :meth:`cache_text_embeddings`)."""
        return {**self._cache_stats, "entries": len(self._text_cache or {})}

    def compile(self, **kwargs) -> None:  # noqa: A003 (nn.Module.compile compiles forward; we compile the layer)
        """``torch.compile`` the fused layer (the hot path), leaving hooks and the Python loop eager.

        The compiled function takes the layer's two blocks as arguments (their weights become graph inputs),
        so all layers share the same few graphs; compiling a function of the layer index made one graph per
        layer and hit ``torch._dynamo.config.recompile_limit`` (8), leaving later layers eager.

        With packed weights (GGUF, scaled fp8: parameters of a tensor subclass) the compiled function runs on
        workspace blocks that hold each layer's expanded weights (:mod:`ovi_core.model.packed_compile`), so dynamo
        never traces a dequantize and all layers still share the same graphs."""
        compiled = torch.compile(_fused_blocks, **kwargs)
        if has_packed(self):
            self._blocks_fn = PackedBlocks(compiled, _fused_blocks, self.video_model.blocks[0],
                                           self.audio_model.blocks[0])
        else:
            self._blocks_fn = compiled

    def _embed_text(
        self, tower: OviTower, ctx: Context, dtype: torch.dtype, device: torch.device
    ) -> tuple[torch.Tensor, dict | None]:
        """Projected context ``[B, text_len, dim]`` and the k/v store of its cache entry (None: not cached)."""
        if self._text_cache is None or torch.is_grad_enabled():
            return tower.embed_text(ctx, dtype, device), None
        rows = (ctx,) if isinstance(ctx, torch.Tensor) else tuple(ctx)
        key = (id(tower), tuple(id(r) for r in rows), tuple(_version(r) for r in rows), dtype, device)
        hit = self._text_cache.get(key)
        if hit is None:
            # the rows are kept alive with the entry, so their ids cannot be reused while it exists
            hit = (tower.embed_text(ctx, dtype, device), rows, {})
            self._text_cache[key] = hit
            self._cache_stats["misses"] += 1
        else:
            self._cache_stats["hits"] += 1
        return hit[0], (hit[2] if self.cache_text_kv else None)

    def _text_kv(self, block: nn.Module, i: int, ctx: torch.Tensor, store: dict | None) -> tuple | None:
        """Block ``i``'s text keys/values ``[B, text_len, H, D]`` from the run's cache (None: not cached)."""
        if store is None:
            return None
        ca = block.cross_attn
        key = (i, ctx.device, _version(getattr(ca.k, "weight", None)), _version(getattr(ca.v, "weight", None)),
               tuple(ca.k._forward_hooks), tuple(ca.v._forward_hooks), tuple(ca.norm_k._forward_hooks))
        kv = store.get(key)
        if kv is None:
            kv = store[key] = ca.text_kv(ctx)
            self._cache_stats["kv_misses"] += 1
        else:
            self._cache_stats["kv_hits"] += 1
        return kv

    @property
    def num_layers(self) -> int:
        return self.config.video.num_layers

    @property
    def compute_dtype(self) -> torch.dtype:
        """Dtype of all activations: set explicitly (fp8 checkpoints: the loader's ``dtype``), else the dtype
        of the stored weights (bfloat16 when those are fp8). bf16 reproduces the official numerics."""
        if self._compute_dtype is not None:
            return self._compute_dtype
        dt = self.video_model.time_embedding[0].weight.dtype
        return torch.bfloat16 if dt in FP8_DTYPES else dt

    @compute_dtype.setter
    def compute_dtype(self, dtype: torch.dtype | None) -> None:
        if dtype is not None and (not dtype.is_floating_point or dtype in FP8_DTYPES):
            raise ValueError(f"compute dtype must be float32, bfloat16 or float16, not {dtype}.")
        self._compute_dtype = dtype

    # ------------------------------------------------------------------------------------------

    def _fused_layer(
        self,
        i: int,
        vid: torch.Tensor,
        aud: torch.Tensor,
        vid_e0: torch.Tensor,
        aud_e0: torch.Tensor,
        vid_ctx: torch.Tensor,
        aud_ctx: torch.Tensor,
        vid_rope: Rope,
        aud_rope: Rope,
        vid_clean: torch.Tensor | None = None,
        aud_clean: torch.Tensor | None = None,
        vid_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
        aud_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self._blocks_fn(self.video_model.blocks[i], self.audio_model.blocks[i], self.attention_backend, vid,
                               aud, vid_e0, aud_e0, vid_ctx, aud_ctx, vid_rope, aud_rope, vid_clean, aud_clean,
                               vid_kv, aud_kv)

    def forward(
        self,
        video: torch.Tensor,
        audio: torch.Tensor,
        t: torch.Tensor,
        video_context: Context,
        audio_context: Context,
        *,
        first_frame_clean: bool = False,
        slg_layer: int = -1,
        slg_mask: torch.Tensor | None = None,
        video_clean: torch.Tensor | None = None,
        audio_clean: torch.Tensor | None = None,
        references: RefLayout | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predict the flow-matching velocities of both modalities.

        Args:
            video: video latent ``[B, 48, F, H, W]`` (H, W divisible by the patch size 2).
            audio: audio latent ``[B, L, 20]``.
            t: ``[B]`` integer-valued timesteps in [0, 1000] (float or int tensor), or a scalar.
            video_context, audio_context: text embeddings, ``[B, Lt, text_dim]`` or a list of B tensors
                ``[Lt_i, text_dim]`` with ``Lt_i <= text_len``; zero-padded to ``text_len`` inside.
            first_frame_clean: image-to-video: tokens of latent frame 0 (the first ``H/2 * W/2`` video
                tokens) get timestep 0; the same as ``video_clean`` with latent frame 0 True.
            slg_layer: skip-layer guidance, drop fused layer ``slg_layer`` in both towers; ``<= 0`` disables.
            slg_mask: optional ``[B]`` bool; when given, only rows with True skip the layer (e.g. the negative
                half of a batched CFG pass); the layer runs on the other rows only, and not at all when every
                row skips it. Reading the mask is free on the CPU and one host sync on a GPU: pass it on the CPU.
            video_clean: optional bool mask of clean video tokens, which get timestep 0 (in every block's
                modulation and in the head): ``[B|1, F, H/2, W/2]`` over the token grid, or ``[B|1, F]`` per
                latent frame. Combined (or) with ``first_frame_clean``.
            audio_clean: optional bool ``[B|1, L]`` mask of clean audio tokens (timestep 0 in the audio tower).
            references: reference mode (DreamID-Omni): the last ``references.video_frames`` latent frames and the
                last ``sum(references.audio_lengths)`` audio positions are face/voice references; every token is
                rotated with the tables of :mod:`ovi_core.model.ref_rope` (reference position offsets) in the
                self-attention and both fusion cross-attentions. The references keep the shared timestep ``t``.

        With a mask, each tower keeps two modulation rows per sample (timestep t and 0) and selects per token
        where they are used, so no ``[B, L, 6, dim]`` tensor is built. Without masks (and without
        ``first_frame_clean``) the tower computes exactly as with one timestep per sample.

        Returns:
            ``(video velocity [B, 48, F, H, W], audio velocity [B, L, 20])`` in the compute dtype.
        """
        dt = self.compute_dtype
        vcfg = self.config.video
        if video.ndim != 5 or video.shape[1] != vcfg.in_dim:
            raise ValueError(f"video latent must be [B, {vcfg.in_dim}, F, H, W], got {list(video.shape)}")
        if audio.ndim != 3 or audio.shape[2] != self.config.audio.in_dim:
            raise ValueError(f"audio latent must be [B, L, {self.config.audio.in_dim}], got {list(audio.shape)}")
        if any(s % p for s, p in zip(video.shape[2:], vcfg.patch_size, strict=True)):
            raise ValueError(f"video latent F, H, W {list(video.shape[2:])} must be multiples of {list(vcfg.patch_size)}")
        b = video.shape[0]
        if audio.shape[0] != b:
            raise ValueError(f"video and audio batch sizes differ ({b} vs {audio.shape[0]})")
        device = video.device
        t = torch.as_tensor(t, device=device)
        if t.ndim == 0:
            t = t.expand(b)
        if t.shape != (b,):
            raise ValueError(f"t must have shape [B] = [{b}], got {list(t.shape)}")

        vid, vgrid = self.video_model.embed(video.to(dt))  # [B, Lv, dim]
        aud, agrid = self.audio_model.embed(audio.to(dt))  # [B, La, dim]

        vclean = _video_clean_mask(video_clean, first_frame_clean, vgrid, b, device)  # [B|1, Lv, 1] or None
        aclean = _token_mask(audio_clean, agrid[0], b, device, "audio_clean", f"[{b} or 1, {agrid[0]}]")
        # with a mask: two embeddings per sample (t and 0), [B, 2, dim] and [B, 2, 6, dim], chosen per token
        ve, ve0 = self.video_model.embed_time(_time_rows(t, vclean), dt)  # [B, 1|2, dim], [B, 1|2, 6, dim]
        ae, ae0 = self.audio_model.embed_time(_time_rows(t, aclean), dt)

        vctx, vstore = self._embed_text(self.video_model, video_context, dt, device)  # [B, text_len, dim]
        actx, astore = self._embed_text(self.audio_model, audio_context, dt, device)
        if vctx.shape[0] != b or actx.shape[0] != b:
            raise ValueError(f"text contexts must hold {b} rows, got {vctx.shape[0]} and {actx.shape[0]}")
        if references is None:
            vrope = self.video_model.rope(vgrid, device)
            arope = self.audio_model.rope(agrid, device)
        else:
            references.check(vgrid[0], agrid[0])
            vrope = ref_rope.video_ref_table(vgrid, vcfg.head_dim, references, device)
            arope = ref_rope.audio_ref_table(agrid[0], self.config.audio.head_dim, references, device)

        rows = None  # the rows that run the skip layer: None = all of them, empty = none
        if slg_mask is not None and slg_mask.shape != (b,):
            raise ValueError(f"slg_mask must be a [B] = [{b}] bool tensor, got {list(slg_mask.shape)}")
        if slg_layer > 0:
            skip = torch.ones(b, dtype=torch.bool) if slg_mask is None else slg_mask.to(dtype=torch.bool)
            if bool(skip.any()):  # a host sync when the mask lives on a GPU
                rows = (~skip).nonzero().flatten().to(device)  # [B']
        for i in range(self.num_layers):
            sub = rows if slg_layer > 0 and i == slg_layer else None
            if sub is not None and sub.numel() == 0:
                continue  # every row skips this layer
            if self.block_hook is not None:
                self.block_hook(i)
            vkv = self._text_kv(self.video_model.blocks[i], i, vctx, vstore)
            akv = self._text_kv(self.audio_model.blocks[i], i, actx, astore)
            args = (i, vid, aud, ve0, ae0, vctx, actx, vrope, arope, vclean, aclean, vkv, akv)
            if sub is not None:  # only the rows that keep the layer run it (e.g. the positive half of CFG)
                args = _take_rows(args, sub, b)
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                nvid, naud = checkpoint(self._fused_layer, *args, use_reentrant=False)
            else:
                nvid, naud = self._layer_fn(*args)
            if sub is not None:
                nvid, naud = vid.index_copy(0, sub, nvid), aud.index_copy(0, sub, naud)
            vid, aud = nvid, naud

        return self.video_model.output(vid, ve, vgrid, vclean), self.audio_model.output(aud, ae, agrid, aclean)


def _fused_blocks(
    vb: nn.Module,
    ab: nn.Module,
    be: str,
    vid: torch.Tensor,
    aud: torch.Tensor,
    vid_e0: torch.Tensor,
    aud_e0: torch.Tensor,
    vid_ctx: torch.Tensor,
    aud_ctx: torch.Tensor,
    vid_rope: Rope,
    aud_rope: Rope,
    vid_clean: torch.Tensor | None,
    aud_clean: torch.Tensor | None,
    vid_kv: tuple[torch.Tensor, torch.Tensor] | None,
    aud_kv: tuple[torch.Tensor, torch.Tensor] | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One fused layer (video block ``vb``, audio block ``ab``, attention backend ``be``), in the official order
    (module docstring); a function of the blocks, not of the layer index, so one compiled graph fits all."""
    ae = ab.modulation(aud_e0, aud_clean)  # 6 x [B, La|1, dim], selected per token on use
    aud = ab.self_attn_step(aud, ae, aud_rope, backend=be)
    ve = vb.modulation(vid_e0, vid_clean)  # 6 x [B, Lv|1, dim]
    vid = vb.self_attn_step(vid, ve, vid_rope, backend=be)
    og_aud = aud
    aud = ab.cross_ffn_step(aud, ae, aud_ctx, vid, aud_rope, vid_rope, backend=be, text_kv=aud_kv)
    vid = vb.cross_ffn_step(vid, ve, vid_ctx, og_aud, vid_rope, aud_rope, backend=be, text_kv=vid_kv)
    return vid, aud


def _version(t: torch.Tensor | None) -> int:
    """Version counter of ``t``; inference-mode tensors (ComfyUI runs nodes under it) have none: -1."""
    if not isinstance(t, torch.Tensor):
        return -2
    return -1 if t.is_inference() else t._version


def _take_rows(args: tuple, rows: torch.Tensor, b: int) -> tuple:
    """:meth:`OviFusionModel._fused_layer` arguments restricted to batch ``rows``. Per-row: the states, the
    time rows, the contexts, the clean masks when they have ``b`` rows (not ``[1, L, 1]``), the text k/v pairs;
    the RoPE tables are shared."""
    i, vid, aud, ve0, ae0, vctx, actx, vrope, arope, vclean, aclean, vkv, akv = args

    def take(a):
        return None if a is None else a.index_select(0, rows)

    def mask(m):
        return m if m is None or m.shape[0] != b else take(m)

    def pair(kv):
        return None if kv is None else (take(kv[0]), take(kv[1]))

    return (i, take(vid), take(aud), take(ve0), take(ae0), take(vctx), take(actx), vrope, arope, mask(vclean),
            mask(aclean), pair(vkv), pair(akv))


def _time_rows(t: torch.Tensor, clean: torch.Tensor | None) -> torch.Tensor:
    """``t [B]`` -> ``[B, 1]`` timesteps, or ``[B, 2]`` (t, 0) when some tokens are clean."""
    return t[:, None] if clean is None else torch.stack([t, torch.zeros_like(t)], dim=1)


def _token_mask(
    mask: torch.Tensor | None, length: int, b: int, device: torch.device, name: str, want: str
) -> torch.Tensor | None:
    """Validate a bool token mask ``[B|1, ...]`` holding ``length`` tokens per row -> ``[B|1, length, 1]``."""
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise ValueError(f"{name} must be a bool tensor {want}, got {type(mask).__name__} "
                         f"{getattr(mask, 'dtype', '')}")
    if mask.ndim < 2 or mask.shape[0] not in (1, b) or math.prod(mask.shape[1:]) != length:
        raise ValueError(f"{name} must have shape {want}, got {list(mask.shape)}")
    return mask.to(device).reshape(mask.shape[0], length, 1)


def _video_clean_mask(
    mask: torch.Tensor | None, first_frame_clean: bool, grid: tuple[int, ...], b: int, device: torch.device
) -> torch.Tensor | None:
    """``video_clean`` (``[B|1, F, h, w]`` or ``[B|1, F]``) or'ed with ``first_frame_clean`` -> ``[B|1, Lv, 1]``."""
    f, h, w = grid
    want = f"[{b} or 1, {f}, {h}, {w}] (token grid) or [{b} or 1, {f}] (latent frames)"
    if isinstance(mask, torch.Tensor):
        if mask.ndim == 2 and mask.shape[1] == f:
            mask = mask[:, :, None, None].expand(-1, -1, h, w)
        elif mask.ndim != 4 or tuple(mask.shape[1:]) != (f, h, w):
            raise ValueError(f"video_clean must have shape {want}, got {list(mask.shape)}")
    clean = _token_mask(mask, f * h * w, b, device, "video_clean", want)
    if first_frame_clean:
        first = (torch.arange(f * h * w, device=device) < h * w)[None, :, None]  # [1, Lv, 1], True = frame 0
        clean = first if clean is None else clean | first
    return clean
