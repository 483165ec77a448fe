"""Rotary position embeddings of the Ovi towers (OVI_REFERENCE.md §2.6).

Pairs are interleaved: head dims ``(2j, 2j+1)`` form complex pair ``j``. With ``c = head_dim // 2`` pairs:

* video (3-D): pairs ``[0, c - 2*(c//3))`` rotate by the latent frame index f, the next ``c//3`` by row h,
  the last ``c//3`` by column w. Each axis has its own frequencies ``theta^(-2j/d_axis)`` with
  ``d_axis = 2 * pairs_axis`` (the official ``rope_params(1024, d_axis)``).
* audio (1-D): only the temporal share (the first ``c - 2*(c//3)`` pairs, same frequencies as the video
  temporal axis) rotates, by ``i * temporal_rope_scaling_factor * w_j`` for token i; the other pairs pass
  through. The audio/video phase difference on those pairs is thus ``(f - 0.19676 i) * w_j``.

Tables are ``cos``/``sin`` of float64 angles (float32 on devices without float64, i.e. MPS), computed
per (grid, device) and cached; they are not module buffers and never enter a state dict. Rotation is done
in that precision and the result rounded to the compute dtype, as the official code does (float64 -> bf16).

The towers use :func:`video_rope_table` / :func:`audio_rope_table`: one complex128 table ``cos + i sin``, so
that :func:`apply_rope` is a single complex multiply (as in the official code), bit-identical to the
real-arithmetic rotation on ``(cos, sin)`` and several times faster. On MPS (no float64) the tables stay a
float32 ``(cos, sin)`` pair.

The cached tables are always built outside ``torch.inference_mode`` (and without autograd history): a table
first built while ComfyUI runs a node under inference mode must still be usable by a later training run,
which saves it for backward.
"""

from __future__ import annotations

import functools

import torch

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
def _complex_table(kind: str, key: tuple, device: torch.device) -> RopeTable:
    cos, sin = _video_table(*key, device) if kind == "video" else _audio_table(*key, device)
    if cos.dtype != torch.float64:
        return cos, sin
    return torch.complex(cos, sin)  # [L, 1, D/2] complex128, exactly cos + i sin


def video_rope_table(grid: tuple[int, int, int], head_dim: int, device: torch.device) -> RopeTable:
    """The video table for :func:`apply_rope`: complex128 ``[F*h*w, 1, head_dim//2]`` (MPS: ``(cos, sin)``)."""
    f, h, w = (int(g) for g in grid)
    return _complex_table("video", (f, h, w, int(head_dim)), torch.device(device))


def audio_rope_table(length: int, head_dim: int, scale: float, device: torch.device) -> RopeTable:
    """The audio table for :func:`apply_rope`: complex128 ``[L, 1, head_dim//2]`` (MPS: ``(cos, sin)``)."""
    return _complex_table("audio", (int(length), int(head_dim), float(scale)), torch.device(device))


def clear_caches() -> None:
    """Drop every cached table (they may sit on a GPU and are no module buffers, so ``.to("cpu")`` leaves
    them): called when a model is unloaded or a run ends. The next forward rebuilds what it needs."""
    _complex_table.cache_clear()
    _video_table.cache_clear()
    _audio_table.cache_clear()


def cached_tables() -> int:
    """How many tables the caches hold now (all three caches together)."""
    return sum(f.cache_info().currsize for f in (_complex_table, _video_table, _audio_table))


# elements of one float64 chunk of the CPU rotation (2 MiB: stays in a core's L2 cache)
CPU_CHUNK_ELEMS = 1 << 18


def apply_rope(x: torch.Tensor, rope: RopeTable) -> torch.Tensor:
    """Rotate interleaved pairs of ``x`` ``[B, L, H, D]`` by ``rope``: a complex table ``[L, 1, D/2]`` (one
    complex multiply) or a ``(cos, sin)`` pair, each ``[L, 1, D/2]`` (real arithmetic; same values).

    Computed in the table's precision (float64, or float32 on MPS) and returned in ``x``'s dtype.

    On the CPU without autograd the complex multiply runs over token chunks of about
    :data:`CPU_CHUNK_ELEMS` elements through one reused float64 buffer: the same arithmetic per element (so
    the same bits), but the float64 temporaries stay in cache instead of being three fresh tensors of 8x the
    input's size per call (at 1984 video tokens those cost more than the multiply).
    """
    b, n, h, d = x.shape
    if isinstance(rope, torch.Tensor):
        if x.device.type == "cpu" and not (torch.is_grad_enabled() and (x.requires_grad or rope.requires_grad)):
            return _apply_rope_chunked(x, rope)
        return _apply_rope_whole(x, rope)
    cos, sin = rope
    xp = x.to(cos.dtype).reshape(b, n, h, d // 2, 2)  # [B, L, H, D/2, 2]
    a, bb = xp[..., 0], xp[..., 1]
    out = torch.stack([a * cos - bb * sin, a * sin + bb * cos], dim=-1)  # [B, L, H, D/2, 2]
    return out.reshape(b, n, h, d).to(x.dtype)


def _real(rope: torch.Tensor) -> torch.dtype:
    """The real dtype a complex table rotates in: float64 for complex128, float32 for complex64 (the reference
    tables of :mod:`ovi_core.model.ref_rope` for audio, which the official code rotates in float32)."""
    return torch.float32 if rope.dtype == torch.complex64 else torch.float64


def _apply_rope_whole(x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
    """:func:`apply_rope` with a complex table as one multiply over the whole tensor (GPU, autograd)."""
    b, n, h, d = x.shape
    xc = torch.view_as_complex(x.to(_real(rope)).contiguous().view(b, n, h, d // 2, 2))  # [B, L, H, D/2]
    return torch.view_as_real(xc * rope).view(b, n, h, d).to(x.dtype)


def _apply_rope_chunked(x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
    """:func:`apply_rope` with a complex table, chunk by chunk of tokens through one float64 buffer (float32 for a
    complex64 table)."""
    b, n, h, d = x.shape
    rows = max(1, min(n, CPU_CHUNK_ELEMS // max(1, b * h * d)))
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    buf = torch.empty(b, rows, h, d, dtype=_real(rope), device=x.device)
    for s in range(0, n, rows):
        m = min(rows, n - s)
        chunk = buf[:, :m]  # [B, m, H, D] view of the buffer (strided over B when m < rows)
        chunk.copy_(x[:, s : s + m])  # bf16/fp32 -> float64, exact
        xc = torch.view_as_complex(chunk.view(b, m, h, d // 2, 2))
        torch.mul(xc, rope[s : s + m], out=xc)
        out[:, s : s + m].copy_(chunk)  # float64 -> x.dtype, rounded once as before
    return out
