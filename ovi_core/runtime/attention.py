"""Multi-head attention on ``[B, L, H, D]`` tensors with optional fast kernels.

One entry point, :func:`attention`. PyTorch's scaled-dot-product attention (SDPA) is the reference
path and works everywhere (CPU, CUDA, MPS, any dtype). Faster kernels are used only when all of these
hold: the package is installed, the tensors are on CUDA in fp16/bf16, and the call needs no option the
kernel lacks (per-sample key lengths are handled by SDPA only). Otherwise the call quietly falls back
to SDPA, so choosing a backend can never break a run.

Backends (``available_backends()`` lists those usable in this process):

* ``"sdpa"``: ``torch.nn.functional.scaled_dot_product_attention`` (always available);
* ``"flash_attn_3"``: ``flash_attn_interface.flash_attn_func`` (FlashAttention 3, Hopper);
* ``"flash_attn_2"``: ``flash_attn.flash_attn_func``;
* ``"xformers"``: ``xformers.ops.memory_efficient_attention``;
* ``"sage"``: ``sageattention.sageattn`` (8-bit attention; approximate).

``backend="auto"`` means the process default, set with :func:`set_default_backend` (initially
``"sdpa"``); loaders pass the user's choice there or store it on the model.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import logging

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

BACKENDS: tuple[str, ...] = ("sdpa", "flash_attn_3", "flash_attn_2", "xformers", "sage")
_MODULES = {
    "flash_attn_3": "flash_attn_interface",
    "flash_attn_2": "flash_attn",
    "xformers": "xformers",
    "sage": "sageattention",
}
_HALF = (torch.float16, torch.bfloat16)
_default_backend = "sdpa"


@functools.cache
def _installed(name: str) -> bool:
    if name == "sdpa":
        return True
    try:
        return importlib.util.find_spec(_MODULES[name]) is not None
    except (ImportError, ValueError):
        return False


def available_backends() -> list[str]:
    """Backends whose package is installed (``"sdpa"`` always; the others still need CUDA + fp16/bf16)."""
    return [b for b in BACKENDS if _installed(b)]


def _check_name(name: str) -> str:
    if name not in BACKENDS and name != "auto":
        raise ValueError(f"Unknown attention backend {name!r}; choose one of {('auto',) + BACKENDS}.")
    return name


def set_default_backend(name: str) -> None:
    """Set the backend used by ``attention(..., backend="auto")``.

    ``"auto"`` picks the fastest installed kernel (FA3, FA2, sage is never picked automatically since it
    is approximate, then xformers) and otherwise SDPA. A named backend that is not installed raises
    ``ValueError`` with the fix.
    """
    global _default_backend
    _check_name(name)
    if name == "auto":
        name = next((b for b in ("flash_attn_3", "flash_attn_2", "xformers") if _installed(b)), "sdpa")
    elif not _installed(name):
        raise ValueError(
            f"Attention backend {name!r} is not installed (package {_MODULES[name]!r}); install it or use 'sdpa'."
        )
    _default_backend = name
    logger.info("attention backend: %s", name)


def get_default_backend() -> str:
    """The backend that ``backend="auto"`` currently resolves to."""
    return _default_backend


@functools.cache
def _kernel(name: str):
    mod = importlib.import_module(_MODULES[name])
    if name == "flash_attn_3" or name == "flash_attn_2":
        return mod.flash_attn_func
    if name == "xformers":
        return importlib.import_module("xformers.ops").memory_efficient_attention
    return mod.sageattn


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_lens: torch.Tensor | None) -> torch.Tensor:
    mask = None
    if k_lens is not None:
        # [B, 1, 1, Lk] boolean, True where the key is kept
        mask = torch.arange(k.shape[1], device=k.device)[None, :] < k_lens.to(k.device)[:, None]
        mask = mask[:, None, None, :]
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask
    )  # [B, H, Lq, D]
    return out.transpose(1, 2)  # [B, Lq, H, D]


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    k_lens: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Softmax attention with scale ``1/sqrt(D)``.

    Args:
        q: ``[B, Lq, H, D]``.
        k, v: ``[B, Lk, H, D]``.
        k_lens: optional ``[B]`` integer tensor; keys at index ``>= k_lens[b]`` are masked out for sample b
            (each ``k_lens[b]`` must be >= 1).
        backend: ``"auto"`` (process default) or one of :data:`BACKENDS`; unusable choices fall back to SDPA.

    Returns:
        ``[B, Lq, H, D]`` in ``q``'s dtype. ``q`` and ``k`` are cast to ``v``'s dtype first.
    """
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ValueError(f"attention expects [B, L, H, D] tensors, got {tuple(q.shape)}, {tuple(k.shape)}")
    out_dtype = q.dtype
    q = q.to(v.dtype)
    k = k.to(v.dtype)
    name = _default_backend if backend == "auto" else _check_name(backend)
    if name != "sdpa" and k_lens is None and q.is_cuda and v.dtype in _HALF and _installed(name):
        fn = _kernel(name)
        if name == "sage":
            out = fn(q, k, v, tensor_layout="NHD", is_causal=False)
        else:
            out = fn(q, k, v)
            if isinstance(out, tuple):  # FA3 returns (out, lse) in some versions
                out = out[0]
    else:
        out = _sdpa(q, k, v, k_lens)
    return out.to(out_dtype)
