"""Full deltas of a LoRA file (``.diff`` / ``.diff_b``): on Linear layers as a side branch, on other
parameters (norms, modulation tables, patch embedding) as patched copies swapped in for one call.

Used by :class:`ovi_core.lora.network.LoRANetwork`; the base weights are never changed in place (unless merged).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn
from torch.nn import functional as F


class LinearDelta(nn.Module):
    """Full deltas of one Linear ``in -> out``: ``weight [out, in]`` and/or ``bias [out]`` (buffers)."""

    def __init__(self, weight: torch.Tensor | None, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [..., in]`` -> ``x @ weight.T + bias`` ``[..., out]`` (just ``bias [out]`` without a weight)."""
        if self.weight is None:
            return self.bias
        return F.linear(x.to(dtype=self.weight.dtype, device=self.weight.device), self.weight, self.bias)


def param_key(pname: str) -> str:
    """File key of a full parameter delta: ``<module>.diff`` for weights, ``.diff_b`` for biases, else
    ``<parameter>.diff`` (e.g. ``blocks.0.modulation.modulation.diff``)."""
    if pname.endswith(".weight"):
        return pname[: -len(".weight")] + ".diff"
    if pname.endswith(".bias"):
        return pname[: -len(".bias")] + ".diff_b"
    return pname + ".diff"


class ParamPatch:
    """Swap ``param + scale * delta`` in for some parameters, and the untouched originals back afterwards.

    The originals are kept (not recomputed), so :meth:`restore` is exact in every dtype. A parameter that
    moved to another device meanwhile (block swap) gets its original copied to that device.
    """

    def __init__(self) -> None:
        self._saved: list[tuple[nn.Parameter, torch.Tensor]] = []

    @property
    def active(self) -> bool:
        return bool(self._saved)

    @torch.no_grad()
    def apply(self, params: Mapping[str, nn.Parameter], delta: Callable[[str], torch.Tensor], scale: float) -> None:
        for key, p in params.items():
            orig = p.data
            d = delta(key).to(device=orig.device, dtype=torch.float32)
            p.data = (orig.float() + d * scale).to(orig.dtype)
            self._saved.append((p, orig))

    def restore(self) -> None:
        for p, orig in reversed(self._saved):
            p.data = orig if orig.device == p.device else orig.to(p.device)
        self._saved.clear()
