"""fp8 matrix multiplies (``torch._scaled_mm``) for float8 Linear weights — opt-in, CUDA sm_89+ only.

Off by default. :func:`enable_fp8_compute` gives each Linear whose weight is float8 e4m3fn (official fp8 or
scaled fp8) a forward that, when :func:`use_scaled_mm` allows it, quantizes the input to e4m3fn and multiplies
in fp8 with ``torch._scaled_mm`` (output in the compute dtype). In every other case (CPU, older GPUs, shapes
not multiples of 16, other weight formats) it calls the layer's normal forward, which upcasts the weight per
layer as before. The decision is a pure function, tested on CPU.

How ``_scaled_mm`` is called (:func:`_scaled_mm_linear`):

* activation scales are row-wise (one per token, ``scale_a [M, 1]``) on Hopper with a bf16 output, else one
  per tensor; the absolute maximum comes from ``aminmax`` (no ``|x|`` copy) and the scaling writes straight
  into a tensor of the activation's dtype (no float32 copy of the activation);
* the bias goes into the kernel for a bf16/fp16 output and is added afterwards for float32, which the kernel
  refuses ("Bias is not supported when out_dtype is set to Float32");
* a tuple result (PyTorch < 2.4 returned ``(out, amax)``) is unpacked;
* the weight scale is a device tensor built by a fill kernel once per layer and device (no host copy, so no
  host sync per call).

Not measured on a GPU yet: it stays opt-in until ``bench/gpu_check.py`` shows it faster than bf16 ``F.linear``.
:func:`scaled_mm_reference` runs the same code on CPU (tests, ``gpu_check.py --small``).
"""

from __future__ import annotations

import logging
import types

import torch
from torch import nn

from ovi_core.quant.fp8 import FP8_DTYPES
from ovi_core.quant.tensor import FP8_SCALED, QuantizedWeight

logger = logging.getLogger(__name__)

MIN_CAPABILITY = (8, 9)
#: row-wise scales: documented for Hopper (sm_90) with a bf16 output
ROWWISE_MAJOR = 9
E4M3_MAX = 448.0
EMULATED_CAPABILITY = (9, 0)  # what emulate=True pretends to run on
_rowwise_broken = False  # set when the installed kernel refused row-wise scales once (then per tensor)


def use_scaled_mm(*, device_type: str, capability: tuple[int, int] | None, weight_dtype: torch.dtype | None,
                  rows: int, in_features: int, out_features: int, has_scaled_mm: bool = True) -> bool:
    """Whether one Linear call may use ``torch._scaled_mm``: CUDA with compute capability >= 8.9, a float8
    e4m3fn weight, ``in_features`` and ``out_features`` multiples of 16. The row count is free (the kernel
    checks ``mat1.size(1)``, ``mat2.size(0)`` and ``mat2.size(1)`` only): 2 x 15,004 video tokens at 704x704
    and the 2 x 157 audio tokens are not multiples of 16."""
    return (has_scaled_mm and device_type == "cuda" and capability is not None
            and tuple(capability) >= MIN_CAPABILITY and weight_dtype == torch.float8_e4m3fn
            and rows > 0 and in_features % 16 == 0 and out_features % 16 == 0)


def _capability(device: torch.device) -> tuple[int, int] | None:
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_capability(device)


def fp8_compute_supported(device: torch.device | str) -> bool:
    """True on a CUDA device of compute capability 8.9 or newer with ``torch._scaled_mm``."""
    device = torch.device(device)
    cap = _capability(device)
    return cap is not None and tuple(cap) >= MIN_CAPABILITY and hasattr(torch, "_scaled_mm")


def _fp8_weight(w: torch.Tensor) -> tuple[torch.Tensor, float] | None:
    """``(e4m3fn weight [out, in], scale)`` of a float8 Linear weight, else None."""
    if isinstance(w, QuantizedWeight):
        if w.qtype == FP8_SCALED and w.fp8_dtype == torch.float8_e4m3fn:
            return w.raw().view(torch.float8_e4m3fn).reshape(w.qshape), w.scale
        return None
    if w.dtype == torch.float8_e4m3fn:
        return w, 1.0
    return None


def scaled_mm_reference(mat1: torch.Tensor, mat2: torch.Tensor, scale_a: torch.Tensor, scale_b: torch.Tensor,
                        bias: torch.Tensor | None = None, scale_result: torch.Tensor | None = None,
                        out_dtype: torch.dtype | None = None, use_fast_accum: bool = False) -> torch.Tensor:
    """A CPU stand-in for ``torch._scaled_mm`` on CUDA, with its signature and its argument rules.

    Signature (PyTorch 2.4+, ``aten/src/ATen/native/native_functions.yaml``)::

        _scaled_mm(Tensor self, Tensor mat2, Tensor scale_a, Tensor scale_b, Tensor? bias=None,
                   Tensor? scale_result=None, ScalarType? out_dtype=None, bool use_fast_accum=False) -> Tensor

    (before 2.4 it returned ``(out, amax)``). The rules checked here are those of the CUDA implementation
    (``ScaledBlas.cpp``): 2-D float8 operands, ``self`` row-major and ``mat2`` column-major, ``self.size(1)``,
    ``mat2.size(0)`` and ``mat2.size(1)`` multiples of 16 (the row count M is free); scales float32, either
    per tensor (one element each) or row-wise (``scale_a [M, 1]``, ``scale_b [1, N]``, bf16 output only);
    no bias when ``out_dtype`` is float32 ("Bias is not supported when out_dtype is set to Float32"), else a
    bias of the output dtype. Returns ``(self * scale_a) @ (mat2 * scale_b) + bias`` computed in float32,
    rounded once to ``out_dtype``. Used by the tests and ``bench/gpu_check.py --small`` to run the very code
    that calls ``_scaled_mm`` on a GPU.
    """
    out_dtype = out_dtype or mat1.dtype
    if mat1.dim() != 2 or mat2.dim() != 2 or mat1.shape[1] != mat2.shape[0]:
        raise RuntimeError(f"mat1 and mat2 shapes cannot be multiplied ({tuple(mat1.shape)} and {tuple(mat2.shape)})")
    if mat1.dtype not in FP8_DTYPES or mat2.dtype not in FP8_DTYPES:
        raise RuntimeError("Expected both inputs to be fp8 types")
    if mat1.stride(1) != 1 or mat2.stride(0) != 1:
        raise RuntimeError("mat1 must be row-major and mat2 column-major")
    if mat1.shape[1] % 16 or mat2.shape[0] % 16 or mat2.shape[1] % 16:
        raise RuntimeError("Expected both dimensions of mat2 and mat1.size(1) to be divisible by 16")
    if scale_a.dtype != torch.float32 or scale_b.dtype != torch.float32:
        raise RuntimeError("scale_a and scale_b must both be float (fp32) tensors")
    m, n = mat1.shape[0], mat2.shape[1]
    tensorwise = scale_a.numel() == 1 and scale_b.numel() == 1
    rowwise = tuple(scale_a.shape) == (m, 1) and tuple(scale_b.shape) == (1, n)
    if not (tensorwise or rowwise):
        raise RuntimeError("Invalid scaling configuration: per-tensor or row-wise scales expected")
    if rowwise and not tensorwise and out_dtype != torch.bfloat16:
        raise RuntimeError("Only bf16 high precision output types are supported for row-wise scaling.")
    if bias is not None:
        if out_dtype == torch.float32:
            raise RuntimeError("Bias is not supported when out_dtype is set to Float32")
        if bias.dtype != out_dtype:
            raise RuntimeError(f"Bias must be {out_dtype} to compute {out_dtype} output, but got {bias.dtype}")
    out = (mat1.float() * scale_a.float()) @ (mat2.float() * scale_b.float())
    if bias is not None:
        out = out + bias.float()
    return out.to(out_dtype)


def use_rowwise(*, capability: tuple[int, int] | None, out_dtype: torch.dtype) -> bool:
    """Row-wise activation scales: on sm_9x with a bf16 output (what ``_scaled_mm`` accepts there)."""
    return (not _rowwise_broken and capability is not None and capability[0] == ROWWISE_MAJOR
            and out_dtype == torch.bfloat16)


def weight_scale(w_scale: float, n: int, device: torch.device, *, rowwise: bool) -> torch.Tensor:
    """``scale_b``: float32 ``[]`` (per tensor) or ``[1, n]`` (row-wise), filled on ``device`` (a fill kernel,
    not a host-to-device copy)."""
    return torch.full((1, n) if rowwise else (), float(w_scale), dtype=torch.float32, device=device)


def quantize_rows(x2: torch.Tensor, *, rowwise: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``x2 [M, K]`` -> ``(e4m3fn [M, K], float32 scale [M, 1] or [])`` with ``x2 ~= q * scale``.

    The transient memory is one tensor of ``x2``'s dtype (the scaled values, clamped in place) plus the fp8
    result; the scale is computed in float32 only on the ``[M, 1]`` maxima.
    """
    lo, hi = torch.aminmax(x2, dim=1, keepdim=True) if rowwise else torch.aminmax(x2)
    amax = torch.maximum(hi, lo.neg()).float().clamp_(min=1e-12)  # [M, 1] or []
    inv = (E4M3_MAX / amax).reshape(-1, 1)  # [M|1, 1]: a dimensioned float32 operand, so the product is
    # computed in float32 (a 0-d one would be rounded to x2's dtype first) and only stored in x2's dtype
    scaled = torch.mul(x2, inv, out=torch.empty_like(x2))  # float32 arithmetic, stored in x2's dtype
    x8 = scaled.clamp_(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
    return x8, amax / E4M3_MAX


def _scaled_mm_linear(x: torch.Tensor, w8: torch.Tensor, scale_b: torch.Tensor, bias: torch.Tensor | None, *,
                      rowwise: bool, mm=None) -> torch.Tensor:
    """``x [..., in] @ (w8 * scale_b).T + bias`` in fp8 with float32 accumulation; output in ``x.dtype``.

    ``scale_b`` comes from :func:`weight_scale` (matching ``rowwise``); ``mm`` defaults to ``torch._scaled_mm``
    (:func:`scaled_mm_reference` on CPU).
    """
    mm = torch._scaled_mm if mm is None else mm
    shape = x.shape
    x2 = x.reshape(-1, shape[-1])
    x8, scale_a = quantize_rows(x2, rowwise=rowwise)
    fused_bias = bias is not None and x.dtype != torch.float32
    out = mm(x8, w8.t(), scale_a=scale_a, scale_b=scale_b, bias=bias.to(x.dtype) if fused_bias else None,
             out_dtype=x.dtype)
    if isinstance(out, tuple):  # PyTorch < 2.4: (out, amax)
        out = out[0]
    if bias is not None and not fused_bias:
        out = out.add_(bias.to(out.dtype))
    return out.reshape(*shape[:-1], w8.shape[0])


def _scale_b(self: nn.Linear, w_scale: float, device: torch.device, rowwise: bool) -> torch.Tensor:
    """The layer's ``scale_b`` on ``device``, built once per layer, device and layout."""
    key = (device, rowwise, float(w_scale))
    cache = self.__dict__.setdefault("_fp8_scale_b", {})
    t = cache.get(key)
    if t is None:
        cache.clear()
        t = cache[key] = weight_scale(w_scale, self.out_features, device, rowwise=rowwise)
    return t


def _fp8_forward(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    global _rowwise_broken
    got = _fp8_weight(self.weight)
    if got is not None:
        w8, scale = got
        rows = x.numel() // x.shape[-1] if x.dim() else 0
        emulate = self.__dict__.get("_fp8_emulate", False)
        cap = EMULATED_CAPABILITY if emulate else _capability(x.device)
        if use_scaled_mm(device_type="cuda" if emulate else x.device.type, capability=cap, weight_dtype=w8.dtype,
                         rows=rows, in_features=self.in_features, out_features=self.out_features,
                         has_scaled_mm=emulate or hasattr(torch, "_scaled_mm")) and w8.device == x.device:
            mm = scaled_mm_reference if emulate else None
            rowwise = use_rowwise(capability=cap, out_dtype=x.dtype)
            if rowwise:
                try:
                    return _scaled_mm_linear(x, w8, _scale_b(self, scale, x.device, True), self.bias, rowwise=True,
                                             mm=mm)
                except RuntimeError as e:  # an older kernel without row-wise scales: per tensor from now on
                    _rowwise_broken = True
                    logger.warning("fp8 compute: row-wise scales refused (%s); using per-tensor scales", e)
            return _scaled_mm_linear(x, w8, _scale_b(self, scale, x.device, False), self.bias, rowwise=False, mm=mm)
    return type(self).forward(self, x)


def enable_fp8_compute(model: nn.Module, *, emulate: bool = False) -> int:
    """Route the float8-weight Linears of ``model`` through :func:`_fp8_forward`; returns how many.

    Safe anywhere: off CUDA sm_89+ every call falls back to the normal (upcasting) forward. ``emulate=True``
    (tests, ``gpu_check.py --small``) runs the ``_scaled_mm`` path on any device through
    :func:`scaled_mm_reference`, as on an sm_90 GPU.
    """
    n = 0
    for mod in model.modules():
        if isinstance(mod, nn.Linear) and _fp8_weight(mod.weight) is not None:
            mod.forward = types.MethodType(_fp8_forward, mod)
            mod._fp8_emulate = emulate
            mod.__dict__.pop("_fp8_scale_b", None)
            n += 1
    if n and not any(fp8_compute_supported(p.device) for p in [next(model.parameters())]):
        logger.info("fp8 compute enabled on %d layers; it takes effect on CUDA sm_89+ only (else weights are "
                    "upcast per layer)", n)
    return n


def disable_fp8_compute(model: nn.Module) -> None:
    """Undo :func:`enable_fp8_compute`."""
    for mod in model.modules():
        if "forward" in mod.__dict__ and getattr(mod.forward, "__func__", None) is _fp8_forward:
            del mod.forward
            mod.__dict__.pop("_fp8_scale_b", None)
            mod.__dict__.pop("_fp8_emulate", None)


__all__ = ["use_scaled_mm", "use_rowwise", "fp8_compute_supported", "enable_fp8_compute", "disable_fp8_compute",
           "scaled_mm_reference", "quantize_rows", "weight_scale"]
