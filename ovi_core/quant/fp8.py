"""Per-tensor scaled fp8 (the ``fp8_e4m3fn_scaled`` files): ``weight = fp8.to(dtype) * scale_weight``.

The convention is kijai's (ComfyUI-WanVideoWrapper ``custom_linear.py``, ``CustomLinear.forward``: the
upcast weight is multiplied by ``scale_weight``) and ComfyUI's: one scale per Linear weight, stored next to
it as ``<module>.scale_weight``, and an empty ``scaled_fp8`` tensor marking the file.
"""

from __future__ import annotations

import math

import torch

FP8_MAX = {torch.float8_e4m3fn: 448.0, torch.float8_e5m2: 57344.0}
FP8_DTYPES = tuple(FP8_MAX)  # the float8 storage dtypes the project reads and writes
SCALE_SUFFIX = ".scale_weight"
ALT_SCALE_SUFFIX = ".weight_scale"  # renamed to .scale_weight by kijai's loader
MARKER = "scaled_fp8"


def scale_for(w: torch.Tensor, dtype: torch.dtype = torch.float8_e4m3fn) -> float:
    """The per-tensor scale that maps ``|w|``'s maximum onto the largest finite value of ``dtype``."""
    amax = float(w.detach().abs().amax().float()) if w.numel() else 0.0
    return amax / FP8_MAX[dtype] if amax > 0 else 1.0


def to_scaled_fp8(w: torch.Tensor, dtype: torch.dtype = torch.float8_e4m3fn) -> tuple[torch.Tensor, float]:
    """``w`` -> ``(fp8 tensor, scale)`` with ``fp8 * scale ~= w``."""
    s = scale_for(w, dtype)
    m = FP8_MAX[dtype]
    return (w.detach().float() / s).clamp_(-m, m).to(dtype), s


def scale_value(t: torch.Tensor, *, name: str) -> float:
    """A ``scale_weight`` tensor (one value) as a float; ``ValueError`` for per-channel scales and for a scale that
    is not a finite positive number (0 would zero the layer without a word, NaN/Inf would poison every output)."""
    if t.numel() != 1:
        raise ValueError(f"{name!r} holds {t.numel()} values; only per-tensor scale_weight (one value) is "
                         "supported.")
    v = float(t.float().reshape(()))
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name!r} is {v}; a scale_weight must be a finite number above 0. The file is damaged "
                         "or was written wrongly: quantize it again (`python -m ovi_core quantize`).")
    return v


__all__ = ["FP8_MAX", "FP8_DTYPES", "SCALE_SUFFIX", "ALT_SCALE_SUFFIX", "MARKER", "scale_for", "to_scaled_fp8", "scale_value"]
