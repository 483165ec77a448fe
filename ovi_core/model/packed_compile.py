"""``--compile`` with packed weights (GGUF, scaled fp8): compile *around* the dequantization.

Dynamo cannot trace a :class:`~ovi_core.quant.tensor.QuantizedWeight` parameter without a graph break at every
dequantize and a recompile at every step (measured on CPU before this module: a 2-layer Q8_0 model had 45
graphs after one step and 69 after two, at the recompile limit). So the compiled function never sees one:

* :class:`PackedBlocks` keeps one *workspace* copy of a video block and an audio block (same classes, same
  submodules, no weights of their own, no hooks);
* before each fused layer it points the workspace's parameters at layer ``i``'s tensors (the same tensors for
  the plain ones: norms, biases, modulation; for a packed weight, its expansion to the hidden states' dtype on
  their device, which is exactly what the eager layer's ``weight.to(x.dtype)`` computes);
* it calls the compiled fused-layer function with the workspace blocks, which are the same module objects at
  every layer and every step, so every layer shares the same graphs;
* afterwards it drops the expansions again.

Cost: the expanded weights of one fused layer are alive at once (0.68 GiB in bf16 at full size, against one
Linear's worth in eager mode). A layer with hooks (an attached LoRA network) or ComfyUI weight functions runs
eagerly on its own blocks, so nothing that changes a layer's output is skipped.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable

import torch
from torch import nn

from ovi_core.quant.tensor import QuantizedWeight

logger = logging.getLogger(__name__)


def has_packed(module: nn.Module) -> bool:
    """True when ``module`` holds a packed (GGUF / scaled fp8) parameter."""
    return any(isinstance(p, QuantizedWeight) for p in module.parameters())


def _workspace(block: nn.Module) -> nn.Module:
    """A structural copy of ``block`` without its tensors (each parameter / buffer an empty placeholder of its
    dtype) and without hooks or ComfyUI weight functions."""
    memo: dict[int, object] = {}
    for p in block.parameters():
        dtype = torch.bfloat16 if isinstance(p, QuantizedWeight) else p.dtype
        memo[id(p)] = nn.Parameter(torch.empty(0, dtype=dtype), requires_grad=False)
    for b in block.buffers():
        memo[id(b)] = torch.empty(0, dtype=b.dtype)
    ws = copy.deepcopy(block, memo)
    for m in ws.modules():
        m._forward_hooks.clear()
        m._forward_pre_hooks.clear()
        for name in ("weight_function", "bias_function"):
            if hasattr(m, name):
                setattr(m, name, [])
    return ws.requires_grad_(False)


def _intercepted(block: nn.Module) -> bool:
    """True when something outside the block's own code acts on it (hooks, ComfyUI weight functions)."""
    for m in block.modules():
        if m._forward_hooks or m._forward_pre_hooks:
            return True
        if getattr(m, "weight_function", None) or getattr(m, "bias_function", None):
            return True
    return False


class PackedBlocks:
    """Drop-in for the fused-layer function ``fn(vb, ab, backend, vid, aud, ...)`` of a model with packed weights:
    calls ``compiled`` on workspace blocks loaded with layer ``i``'s tensors (module docstring), or ``eager`` on the
    real blocks when a block is intercepted or autograd is recording."""

    def __init__(self, compiled: Callable, eager: Callable, video_block: nn.Module, audio_block: nn.Module) -> None:
        self.compiled = compiled
        self.eager = eager
        self._ws = (_workspace(video_block), _workspace(audio_block))
        self._warned = False

    def __call__(self, vb: nn.Module, ab: nn.Module, backend: str, vid: torch.Tensor, *args):
        if torch.is_grad_enabled() or _intercepted(vb) or _intercepted(ab):
            if not self._warned:
                self._warned = True
                logger.info("compiled layer: a block with hooks (LoRA) or under autograd runs eagerly")
            return self.eager(vb, ab, backend, vid, *args)
        wv, wa = self._ws
        pairs = [*_param_pairs(wv, vb), *_param_pairs(wa, ab)]
        try:
            for ws_t, real in pairs:
                ws_t.data = real.dequantize(vid.dtype, vid.device) if isinstance(real, QuantizedWeight) else real.data
            return self.compiled(wv, wa, backend, vid, *args)
        finally:
            for ws_t, _ in pairs:
                ws_t.data = torch.empty(0, dtype=ws_t.dtype)


def _param_pairs(ws: nn.Module, real: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(workspace tensor, real tensor)`` for every parameter and buffer, matched by name."""
    real_p = dict(real.named_parameters())
    real_b = dict(real.named_buffers())
    pairs = [(t, real_p[n]) for n, t in ws.named_parameters()]
    pairs += [(t, real_b[n]) for n, t in ws.named_buffers()]
    return pairs


__all__ = ["PackedBlocks", "has_packed"]
