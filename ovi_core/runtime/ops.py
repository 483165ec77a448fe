"""The layer classes a network is built from: an ``operations`` namespace, as ComfyUI's own model classes take.

ComfyUI builds its models on ``comfy.ops`` (``disable_weight_init``, ``manual_cast``, ...): classes named
``Linear``, ``Conv1d``, ``Conv3d``, ``LayerNorm``, ``RMSNorm``, ``Embedding`` that subclass ``torch.nn``'s and carry
a ``comfy_cast_weights`` marker. A ``ModelPatcher`` uses that marker to load a model *partially* (``lowvram``):
the layers that do not fit stay on the offload device and each call casts its weight to the compute device.

:mod:`ovi_core` never imports ComfyUI, so its networks take ``operations`` (default :class:`TorchOps`: plain
``torch.nn``) and subclass those classes, overriding ``forward`` with their own numerics. Every weight a layer
uses is fetched by :func:`cast_param`: moved to the input's device and cast to the compute dtype when it is not
there already (a no-op for a resident weight of that dtype, so the default path computes exactly as before), with
the per-weight functions a ``ModelPatcher`` may set (``weight_function`` / ``bias_function``, e.g. a LoRA patch
applied on the fly to a streamed layer) applied to a copy. Packed weights (:mod:`ovi_core.quant.tensor`) move
packed and are expanded by that cast, on the compute device, one layer at a time (as ComfyUI-GGUF's ops do). The
layers of ComfyUI-GGUF's own ``GGMLOps`` (its "Unet Loader (GGUF)") hold its ``GGMLTensor``; for those the layer's
``get_weight`` expands the weight (and applies that loader's LoRA patches), matched by duck typing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

REQUIRED = ("Linear", "Conv1d", "Conv3d", "LayerNorm", "RMSNorm", "Embedding")


class TorchOps:
    """The default ``operations``: plain ``torch.nn`` classes."""

    Linear = nn.Linear
    Conv1d = nn.Conv1d
    Conv3d = nn.Conv3d
    LayerNorm = nn.LayerNorm
    RMSNorm = nn.RMSNorm
    Embedding = nn.Embedding


def resolve(operations: object | None) -> object:
    """``operations`` checked (it must name every class in :data:`REQUIRED`, each a ``torch.nn.Module``
    subclass), or :class:`TorchOps` for None."""
    if operations is None:
        return TorchOps
    missing = [n for n in REQUIRED if not (isinstance(getattr(operations, n, None), type)
                                          and issubclass(getattr(operations, n), nn.Module))]
    if missing:
        raise TypeError(f"operations {operations!r} lacks the layer classes {missing}; pass an object with "
                        f"{', '.join(REQUIRED)} (like comfy.ops.manual_cast), or None for plain torch.nn.")
    return operations


def cast_param(module: nn.Module, name: str, x: torch.Tensor, dtype: torch.dtype | None = None
               ) -> torch.Tensor | None:
    """``module.<name>`` (a weight or bias, may be None) on ``x``'s device in ``dtype`` (default ``x.dtype``).

    Returns the stored tensor itself when it is already there in that dtype. A ``ModelPatcher``'s
    ``<name>_function`` list (ComfyUI's lowvram weight patches) is applied in order, to a copy."""
    p = getattr(module, name, None)
    if p is None:
        return None
    dtype = x.dtype if dtype is None else dtype
    fns = getattr(module, name + "_function", None) or ()
    expand = getattr(module, "get_weight", None)
    if callable(expand) and hasattr(p, "tensor_type"):
        # a layer of ComfyUI-GGUF's GGMLOps holding a GGMLTensor (GGML bytes plus the patcher's LoRA patches): its
        # get_weight(tensor, dtype) expands the bytes and applies the patches; a plain cast would read the bytes
        # as numbers
        w = expand(p.to(x.device), dtype)
        p = w.to(device=x.device, dtype=dtype)
        if fns and p.data_ptr() == w.data_ptr():
            p = p.clone()
    elif _foreign_quantized(p):
        # ComfyUI's own quantized weights (0.33's mixed-precision layers hold a comfy_kitchen QuantizedTensor, whose
        # casts keep it quantized): dequantize() gives the weight with its scale applied
        p = p.to(device=x.device).dequantize().to(dtype=dtype)
    else:
        p = p.to(device=x.device, dtype=dtype, copy=bool(fns))
    for f in fns:
        p = f(p)
    scale = getattr(module, "scale_weight", None) if name == "weight" else None
    if isinstance(scale, torch.Tensor):
        # ComfyUI 0.3.64's scaled-fp8 layers keep the per-tensor scale beside the fp8 weight and multiply in the
        # compute dtype after the cast, as their own forward does
        p = p * scale.to(device=p.device, dtype=p.dtype)
    return p


def _foreign_quantized(p: torch.Tensor) -> bool:
    """A tensor subclass of another library with its own ``dequantize()`` (not torch's; not one that says its casts
    expand it, as ovi_core's packed weights do with ``expands_on_cast``)."""
    method = getattr(type(p), "dequantize", None)
    return (type(p) not in (torch.Tensor, nn.Parameter) and not getattr(type(p), "expands_on_cast", False)
            and callable(method) and method is not torch.Tensor.dequantize)


class CastLinear:
    """Mixin for an ``operations.Linear``: weight and bias cast to the input's dtype and device at call time."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, cast_param(self, "weight", x), cast_param(self, "bias", x))


def derive(name: str, mixin: type, base: type, module: str) -> type:
    """``class <name>(mixin, base)``: an ``operations`` class with Ovi's ``forward`` (and ``__init__``)."""
    return type(name, (mixin, base), {"__module__": module, "__doc__": mixin.__doc__})


def uses_streaming_ops(module: nn.Module) -> bool:
    """True when ``module`` holds layers a ComfyUI ``ModelPatcher`` can stream (built on ``comfy.ops``)."""
    return any(hasattr(m, "comfy_cast_weights") for m in module.modules())
