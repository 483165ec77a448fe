"""fp8 matrix multiplies (``torch._scaled_mm``) for float8 Linear weights — opt-in, CUDA sm_89+ only.

Off by default. :func:`enable_fp8_compute` gives each Linear whose weight is float8 e4m3fn (official fp8 or
scaled fp8) a forward that, when :func:`use_scaled_mm` allows it, quantizes the input per tensor to e4m3fn
and multiplies in fp8 with ``torch._scaled_mm`` (output in the compute dtype). In every other case
(CPU, older GPUs, shapes not multiples of 16, other weight formats) it calls the layer's normal forward,
which upcasts the weight per layer as before. The decision is a pure function, tested on CPU.
"""

from __future__ import annotations

import logging
import types

import torch
from torch import nn

from ovi_core.quant.tensor import FP8_SCALED, QuantizedWeight

logger = logging.getLogger(__name__)

MIN_CAPABILITY = (8, 9)
E4M3_MAX = 448.0


def use_scaled_mm(*, device_type: str, capability: tuple[int, int] | None, weight_dtype: torch.dtype | None,
                  rows: int, in_features: int, out_features: int, has_scaled_mm: bool = True) -> bool:
    """Whether one Linear call may use ``torch._scaled_mm``: CUDA with compute capability >= 8.9, a float8
    e4m3fn weight, and every matrix dimension a multiple of 16."""
    return (has_scaled_mm and device_type == "cuda" and capability is not None
            and tuple(capability) >= MIN_CAPABILITY and weight_dtype == torch.float8_e4m3fn
            and rows % 16 == 0 and in_features % 16 == 0 and out_features % 16 == 0)


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


def _scaled_mm_linear(x: torch.Tensor, w8: torch.Tensor, w_scale: float, bias: torch.Tensor | None
                      ) -> torch.Tensor:
    """``x [..., in] @ (w8 * w_scale).T + bias`` in fp8 with float32 accumulation; output in ``x.dtype``."""
    shape = x.shape
    x2 = x.reshape(-1, shape[-1])
    amax = x2.abs().amax().float().clamp(min=1e-12)
    x_scale = amax / E4M3_MAX
    x8 = (x2.float() / x_scale).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
    out = torch._scaled_mm(
        x8, w8.t(), scale_a=x_scale.reshape(()), scale_b=torch.tensor(w_scale, device=x.device, dtype=torch.float32),
        bias=None if bias is None else bias.to(x.dtype), out_dtype=x.dtype,
    )
    return out.reshape(*shape[:-1], w8.shape[0])


def _fp8_forward(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    got = _fp8_weight(self.weight)
    if got is not None:
        w8, scale = got
        rows = x.numel() // x.shape[-1] if x.dim() else 0
        if use_scaled_mm(device_type=x.device.type, capability=_capability(x.device), weight_dtype=w8.dtype,
                         rows=rows, in_features=self.in_features, out_features=self.out_features,
                         has_scaled_mm=hasattr(torch, "_scaled_mm")) and w8.device == x.device:
            return _scaled_mm_linear(x, w8, scale, self.bias)
    return type(self).forward(self, x)


def enable_fp8_compute(model: nn.Module) -> int:
    """Route the float8-weight Linears of ``model`` through :func:`_fp8_forward`; returns how many.

    Safe anywhere: off CUDA sm_89+ every call falls back to the normal (upcasting) forward.
    """
    n = 0
    for mod in model.modules():
        if isinstance(mod, nn.Linear) and _fp8_weight(mod.weight) is not None:
            mod.forward = types.MethodType(_fp8_forward, mod)
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


__all__ = ["use_scaled_mm", "fp8_compute_supported", "enable_fp8_compute", "disable_fp8_compute"]
