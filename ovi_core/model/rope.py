"""Rotary position embeddings of the Ovi towers (OVI_REFERENCE.md §2.6).

Pairs are interleaved: head dims ``(2j, 2j+1)`` form complex pair ``j``. With ``c = head_dim // 2`` pairs:

* video (3-D): pairs ``[0, c - 2*(c//3))`` rotate by the latent frame index f, the next ``c//3`` by row h,
  the last ``c//3`` by column w. Each axis has its own frequencies ``theta^(-2j/d_axis)`` with
  ``d_axis = 2 * pairs_axis`` (the official ``rope_params(1024, d_axis)``).
* audio (1-D): only the temporal share (the first ``c - 2*(c//3)`` pairs, same frequencies as the video
  temporal axis) rotates, by ``i * temporal_rope_scaling_factor * w_j`` for token i; the other pairs pass
  through. The audio/video phase difference on those pairs is thus ``(f - 0.19676 i) * w_j``.

Tables are ``cos``/``sin`` of float64 angles (float32 on devices without float64, i.e. MPS), computed
on the CPU per grid and cached per (grid, device) (a GPU holds only the pair table below, not the CPU cos/sin it
was built from); they are not module buffers and never enter a state dict. Rotation is done
in that precision and the result rounded to the compute dtype, as the official code does (float64 -> bf16).

The towers use :func:`video_rope_table` / :func:`audio_rope_table`: one real table ``[L, 1, D/2, 2]`` holding
``(cos, sin)`` per pair (float64; float32 on MPS), the memory layout of the official complex128 ``cos + i sin``.
:func:`apply_rope` picks the form of the rotation by where it runs; all give the official values:

* CPU, no autograd: the complex multiply of the official code (:func:`torch.view_as_complex` of the table, no
  copy) over token chunks through one reused buffer: the fastest eager form on a CPU.
* inside ``torch.compile`` (``--compile``), and on CUDA: the real-arithmetic rotation
  ``(a cos - b sin, a sin + b cos)`` in the table's precision, which inductor fuses into one kernel (it cannot
  generate code for complex operators, GPU_REVIEW #15): it reads bf16 ``x`` and the table and writes bf16, about
  4 bytes per element instead of the ~36 of the unfused float64/complex128 eager ops, and no float64
  temporaries (the activation peak of the eager form). On CUDA outside a compiled model, the rotation alone is
  compiled once (:func:`set_fused_rope`; any failure to compile falls back to the eager complex multiply with one
  warning).
* anywhere else (autograd, other devices): the eager complex multiply over the whole tensor; on MPS (no float64,
  no complex) the eager real rotation.

The real rotation is bit-identical to the complex multiply in eager PyTorch on the CPU (PyTorch's complex
multiply is ``ac - bd``, ``ad + bc`` without fused multiply-add; tests compare every form on the golden cases). A
compiled kernel may contract ``a*cos - b*sin`` into a fused multiply-add, as CUDA's complex multiply may: that
changes the float64 value by at most about one unit in the last place, which changes the bf16 result only where
the value falls within that distance of a bf16 rounding boundary (never in the golden cases).

The cached tables are always built outside ``torch.inference_mode`` (and without autograd history): a table
first built while ComfyUI runs a node under inference mode must still be usable by a later training run,
which saves it for backward.
"""

from __future__ import annotations

import functools
import logging

import torch

logger = logging.getLogger(__name__)

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


def _normal_tensors(fn):
    """Decorator: ``fn`` builds its tensors as normal tensors even when called under inference mode."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with torch.inference_mode(False), torch.no_grad():
            return fn(*args, **kwargs)

    return wrapper


@functools.lru_cache(maxsize=64)
@_normal_tensors
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
@_normal_tensors
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


RopeTable = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


@functools.lru_cache(maxsize=64)
@_normal_tensors
def _pair_table(kind: str, key: tuple, device: torch.device) -> torch.Tensor:
    cpu = torch.device("cpu")  # cos/sin are built and cached on the CPU: the device holds only this table
    cos, sin = _video_table(*key, cpu) if kind == "video" else _audio_table(*key, cpu)
    pairs = torch.stack([cos, sin], dim=-1)  # [L, 1, D/2, 2]: the bytes of the complex table cos + i sin
    return pairs.to(device=device, dtype=_table_dtype(device))


def video_rope_table(grid: tuple[int, int, int], head_dim: int, device: torch.device) -> torch.Tensor:
    """The video table for :func:`apply_rope`: ``[F*h*w, 1, head_dim//2, 2]`` ``(cos, sin)`` pairs, float64
    (float32 on MPS)."""
    f, h, w = (int(g) for g in grid)
    return _pair_table("video", (f, h, w, int(head_dim)), torch.device(device))


def audio_rope_table(length: int, head_dim: int, scale: float, device: torch.device) -> torch.Tensor:
    """The audio table for :func:`apply_rope`: ``[L, 1, head_dim//2, 2]`` ``(cos, sin)`` pairs, float64 (float32
    on MPS)."""
    return _pair_table("audio", (int(length), int(head_dim), float(scale)), torch.device(device))


def clear_caches() -> None:
    """Drop every cached table (they may sit on a GPU and are no module buffers, so ``.to("cpu")`` leaves
    them): called when a model is unloaded or a run ends. The next forward rebuilds what it needs."""
    _pair_table.cache_clear()
    _video_table.cache_clear()
    _audio_table.cache_clear()


def cached_tables() -> int:
    """How many tables the caches hold now (all three caches together)."""
    return sum(f.cache_info().currsize for f in (_pair_table, _video_table, _audio_table))


# elements of one float64 chunk of the CPU rotation (2 MiB: stays in a core's L2 cache)
CPU_CHUNK_ELEMS = 1 << 18


def _compiling() -> bool:
    fn = getattr(torch.compiler, "is_compiling", None)
    if fn is None:  # torch < 2.3
        from torch import _dynamo

        fn = _dynamo.is_compiling
    return bool(fn())


def apply_rope(x: torch.Tensor, rope: RopeTable) -> torch.Tensor:
    """Rotate interleaved pairs of ``x`` ``[B, L, H, D]`` by ``rope``: a table ``[L, 1, D/2, 2]`` of ``(cos, sin)``
    pairs (:func:`video_rope_table`) or a ``(cos, sin)`` tuple, each ``[L, 1, D/2]``.

    Computed in the table's precision (float64, or float32 on MPS) and returned in ``x``'s dtype; the form of the
    computation depends on where it runs (module docstring), the values do not.

    On the CPU without autograd the complex multiply runs over token chunks of about
    :data:`CPU_CHUNK_ELEMS` elements through one reused float64 buffer: the same arithmetic per element (so
    the same bits), but the float64 temporaries stay in cache instead of being three fresh tensors of 8x the
    input's size per call (at 1984 video tokens those cost more than the multiply).
    """
    if isinstance(rope, tuple):
        cos, sin = rope
        return _rotate_real(x, cos, sin)
    grad = torch.is_grad_enabled() and (x.requires_grad or rope.requires_grad)
    form = rope_form(x.device.type, rope.dtype, grad=grad, compiling=_compiling())
    if form == "real":
        return rotate_pairs(x, rope)
    if form == "chunked":
        return _apply_rope_chunked(x, torch.view_as_complex(rope))
    if form == "fused":
        out = _fused_rotate(x, rope)
        if out is not None:
            return out
    return _apply_rope_whole(x, torch.view_as_complex(rope))


def rope_form(device_type: str, table_dtype: torch.dtype, *, grad: bool, compiling: bool) -> str:
    """Which form :func:`apply_rope` computes (module docstring): ``"real"`` (real arithmetic, eager or traced into
    the caller's compiled graph), ``"chunked"`` (complex multiply through one CPU buffer), ``"fused"`` (the real
    arithmetic compiled on its own, CUDA) or ``"complex"`` (one complex multiply over the whole tensor)."""
    if compiling or table_dtype != torch.float64:  # MPS tables are float32: no complex there
        return "real"
    if device_type == "cpu" and not grad:
        return "chunked"
    if device_type == "cuda" and not grad and _fused_enabled:
        return "fused"
    return "complex"


def _rotate_real(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """The real-arithmetic rotation: pair ``(a, b)`` -> ``(a cos - b sin, a sin + b cos)`` in ``cos``'s dtype."""
    b, n, h, d = x.shape
    xp = x.to(cos.dtype).reshape(b, n, h, d // 2, 2)  # [B, L, H, D/2, 2]
    a, bb = xp[..., 0], xp[..., 1]
    out = torch.stack([a * cos - bb * sin, a * sin + bb * cos], dim=-1)  # [B, L, H, D/2, 2]
    return out.reshape(b, n, h, d).to(x.dtype)


def rotate_pairs(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """:func:`apply_rope` in real arithmetic on a ``[L, 1, D/2, 2]`` table: no complex operator, so inductor
    fuses it into one kernel (the form used inside ``torch.compile`` and, compiled, on CUDA)."""
    return _rotate_real(x, table[..., 0], table[..., 1])


# CUDA outside a compiled model: the real rotation compiled on its own, once (dynamic shapes: one kernel for all
# token counts), or None after a failure to compile (then the eager complex multiply, with one warning).
_fused_enabled = True
_fused_fn = None


def set_fused_rope(enabled: bool) -> None:
    """Use (default) or not the compiled real-arithmetic rotation on CUDA outside a compiled model; off, CUDA runs
    the eager complex multiply of the official code (more memory traffic and two float64 temporaries per call)."""
    global _fused_enabled, _fused_fn
    _fused_enabled = bool(enabled)
    _fused_fn = None


def _fused_rotate(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor | None:
    global _fused_enabled, _fused_fn
    try:
        if _fused_fn is None:
            logger.info("compiling the fused RoPE kernel (once per process)")
            _fused_fn = torch.compile(rotate_pairs, dynamic=True, fullgraph=True)
        return _fused_fn(x, table)
    except torch.cuda.OutOfMemoryError:
        raise
    except Exception as e:  # noqa: BLE001 (no triton, an old driver, a compiler bug: the eager form still works)
        _fused_enabled, _fused_fn = False, None
        logger.warning("fused RoPE kernel unavailable (%s: %s); using the eager complex multiply",
                       type(e).__name__, str(e)[:200])
        return None


def _apply_rope_whole(x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
    """:func:`apply_rope` with a complex table as one multiply over the whole tensor (GPU, autograd)."""
    b, n, h, d = x.shape
    xc = torch.view_as_complex(x.to(torch.float64).contiguous().view(b, n, h, d // 2, 2))  # [B, L, H, D/2]
    return torch.view_as_real(xc * rope).view(b, n, h, d).to(x.dtype)


def _apply_rope_chunked(x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
    """:func:`apply_rope` with a complex table, chunk by chunk of tokens through one float64 buffer."""
    b, n, h, d = x.shape
    rows = max(1, min(n, CPU_CHUNK_ELEMS // max(1, b * h * d)))
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    buf = torch.empty(b, rows, h, d, dtype=torch.float64, device=x.device)
    for s in range(0, n, rows):
        m = min(rows, n - s)
        chunk = buf[:, :m]  # [B, m, H, D] view of the buffer (strided over B when m < rows)
        chunk.copy_(x[:, s : s + m])  # bf16/fp32 -> float64, exact
        xc = torch.view_as_complex(chunk.view(b, m, h, d // 2, 2))
        torch.mul(xc, rope[s : s + m], out=xc)
        out[:, s : s + m].copy_(chunk)  # float64 -> x.dtype, rounded once as before
    return out
