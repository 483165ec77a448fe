"""Multi-head attention on ``[B, L, H, D]`` tensors with optional fast kernels.

One entry point, :func:`attention`. PyTorch's scaled-dot-product attention (SDPA) is the reference
path and works everywhere (CPU, CUDA, MPS, any dtype). Faster kernels are used only when all of these
hold: the package is installed, the tensors are on CUDA in fp16/bf16, and the call needs no option the
kernel lacks (per-sample key lengths are handled by SDPA only). Otherwise the call quietly falls back
to SDPA. A kernel that is installed but fails (a FlashAttention 3 build for Hopper on another GPU,
FlashAttention 2 on Turing, a wheel built for another torch) is caught: :func:`probe_backend` tries it once
at load on the real device with small tensors, and a failure there or later, mid-run, marks it broken and
falls back to SDPA with one warning. :func:`active_backend` says which kernel runs, :func:`describe_backend` also
why it is SDPA when another kernel was chosen (the nodes show it as ``Ovi attention: ...``).

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
from collections.abc import Callable

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
#: the dispatcher's table of kernels added in-process: name -> (fn(q, k, v) on [B, L, H, D], device types, dtypes)
_REGISTERED: dict[str, tuple[Callable, tuple[str, ...], tuple[torch.dtype, ...]]] = {}
_broken: dict[str, str] = {}  # backend -> why it was given up (probe or runtime failure)


@functools.cache
def _installed_package(name: str) -> bool:
    try:
        return importlib.util.find_spec(_MODULES[name]) is not None
    except (ImportError, ValueError):
        return False


def _installed(name: str) -> bool:
    return name == "sdpa" or name in _REGISTERED or (name in _MODULES and _installed_package(name))


def register_backend(name: str, fn: Callable, *, device_types: tuple[str, ...] = ("cuda",),
                     dtypes: tuple[torch.dtype, ...] = _HALF) -> None:
    """Add (or replace) a kernel in the dispatcher: ``fn(q, k, v) -> out`` on ``[B, L, H, D]`` tensors, used
    for tensors on ``device_types`` in ``dtypes``. Names of :data:`BACKENDS` replace the built-in kernel."""
    _REGISTERED[name] = (fn, tuple(device_types), tuple(dtypes))
    _broken.pop(name, None)


def unregister_backend(name: str) -> None:
    """Undo :func:`register_backend` (and forget a failure of that name)."""
    _REGISTERED.pop(name, None)
    _broken.pop(name, None)


def available_backends() -> list[str]:
    """Backends whose package is installed (``"sdpa"`` always; the others still need CUDA + fp16/bf16)."""
    return [b for b in BACKENDS if _installed(b)] + [b for b in _REGISTERED if b not in BACKENDS]


def _check_name(name: str) -> str:
    if name not in BACKENDS and name != "auto" and name not in _REGISTERED:
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
            f"Attention backend {name!r} is not installed (package {_MODULES.get(name)!r}); install it or use "
            "'sdpa'."
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


def _call(name: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    if name in _REGISTERED:
        return _REGISTERED[name][0](q, k, v)
    fn = _kernel(name)
    if name == "sage":
        return fn(q, k, v, tensor_layout="NHD", is_causal=False)
    out = fn(q, k, v)
    return out[0] if isinstance(out, tuple) else out  # FA3 returns (out, lse) in some versions


def _usable(name: str, device_type: str, dtype: torch.dtype) -> bool:
    """Whether ``name`` runs (rather than SDPA) for tensors on ``device_type`` in ``dtype``."""
    if name == "sdpa" or name in _broken or not _installed(name):
        return False
    if name in _REGISTERED:
        _, types, dtypes = _REGISTERED[name]
        return device_type in types and dtype in dtypes
    return device_type == "cuda" and dtype in _HALF


def _resolve(backend: str) -> str:
    return _default_backend if backend == "auto" else _check_name(backend)


def active_backend(backend: str = "auto", device: torch.device | str = "cuda",
                   dtype: torch.dtype = torch.bfloat16) -> str:
    """The kernel that :func:`attention` runs for ``backend`` on tensors on ``device`` in ``dtype``: the
    backend's name, or ``"sdpa"`` when it falls back (not installed, not for this device or dtype, or broken)."""
    name = _resolve(backend)
    return name if _usable(name, torch.device(device).type, dtype) else "sdpa"


def describe_backend(backend: str = "auto", device: torch.device | str = "cuda",
                     dtype: torch.dtype = torch.bfloat16) -> str:
    """The kernel :func:`attention` runs for ``backend`` on ``device`` in ``dtype``, for a node or a log line:
    ``"flash_attn_2"``, ``"sdpa"``, or ``"sdpa (<chosen> failed: <error>)"`` / ``"sdpa (<chosen> is not
    installed)"`` / ``"sdpa (<chosen> runs on cuda in float16/bfloat16 only)"`` when it falls back. A kernel that
    failed mid-run reads as failed from then on, so asked after a run it says what that run used at its end."""
    name = _resolve(backend)
    run = active_backend(backend, device, dtype)
    if run == name:
        return run
    if name in _broken:
        why = f"{name} failed: {_broken[name]}"
    elif not _installed(name):
        why = f"{name} is not installed"
    else:
        types, dtypes = _REGISTERED[name][1:] if name in _REGISTERED else (("cuda",), _HALF)
        why = (f"{name} runs on {'/'.join(types)} in {'/'.join(str(d).replace('torch.', '') for d in dtypes)} "
               "only")
    return f"{run} ({why})"


def _give_up(name: str, err: BaseException, when: str) -> None:
    _broken[name] = f"{type(err).__name__}: {err}"[:300]
    logger.warning("attention backend %r failed %s (%s); using PyTorch SDPA from now on", name, when,
                   _broken[name])


def probe_backend(backend: str = "auto", device: torch.device | str = "cuda", dtype: torch.dtype = torch.bfloat16,
                  *, heads: int = 2, head_dim: int = 128) -> str:
    """Try ``backend`` once on ``device`` with small tensors (``[1, 64, heads, head_dim]`` queries, 80 keys)
    and compare it with SDPA; on an exception, a wrong shape or a result far from SDPA's, mark it broken (one
    warning; every later call uses SDPA). Returns :func:`active_backend` after the probe."""
    name = _resolve(backend)
    device = torch.device(device)
    if not _usable(name, device.type, dtype):
        return "sdpa"
    g = torch.Generator(device="cpu").manual_seed(0)
    q = torch.randn(1, 64, heads, head_dim, generator=g).to(device=device, dtype=dtype)
    k = torch.randn(1, 80, heads, head_dim, generator=g).to(device=device, dtype=dtype)
    v = torch.randn(1, 80, heads, head_dim, generator=g).to(device=device, dtype=dtype)
    try:
        out = _call(name, q, k.clone(), v)
        ref = _sdpa(q, k, v, None)
        if tuple(out.shape) != tuple(ref.shape):
            raise RuntimeError(f"output shape {tuple(out.shape)}, expected {tuple(ref.shape)}")
        err = (out.float() - ref.float()).abs().max().item()
        if not err <= 0.1:  # sage is 8-bit and approximate (~1e-2 here); NaN fails too
            raise RuntimeError(f"result differs from SDPA by {err:.3g}")
    except Exception as e:  # noqa: BLE001 (any failure of a third-party kernel means: do not use it)
        _give_up(name, e, f"its check on {device}")
        return "sdpa"
    logger.info("attention backend %s checked on %s (%s)", name, device, dtype)
    return name


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
    name = _resolve(backend)
    if k_lens is None and _usable(name, q.device.type, v.dtype):
        try:
            return _call(name, q, k, v).to(out_dtype)
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as e:  # noqa: BLE001 (see probe_backend)
            _give_up(name, e, "mid-run")
    return _sdpa(q, k, v, k_lens).to(out_dtype)
