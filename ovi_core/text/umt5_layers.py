"""UMT5's layers on an ``operations`` namespace (:mod:`ovi_core.runtime.ops`), e.g. ``comfy.ops.manual_cast``.

:func:`rebuild_on` swaps the ``nn.Linear``, ``nn.Embedding`` and ``UMT5LayerNorm`` layers of a transformers
``UMT5EncoderModel`` (built on the meta device) for classes derived from ``operations``' ``Linear``, ``Embedding``
and ``RMSNorm``, with the same parameter names and transformers' numerics, each weight moved to the input's device
at call time. A ComfyUI ``ModelPatcher`` can then keep part of the 5.7 B-parameter encoder on the offload device.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from ovi_core.runtime.ops import CastLinear, cast_param, derive, resolve


class _EmbeddingMixin:
    """``Embedding`` whose table is moved to the ids' device at call time (the lookup is transformers')."""

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        w = cast_param(self, "weight", ids, dtype=self.weight.dtype)
        return F.embedding(ids, w, self.padding_idx, self.max_norm, self.norm_type, self.scale_grad_by_freq,
                           self.sparse)


class _T5NormMixin:
    """transformers' ``UMT5LayerNorm`` (RMS, statistics in float32, no bias) with its weight moved at call time."""

    def __init__(self, dim: int, *, eps: float, device=None, dtype=None) -> None:
        super().__init__(dim, eps=eps, elementwise_affine=True, device=device, dtype=dtype)
        self.variance_epsilon = eps

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        variance = h.to(torch.float32).pow(2).mean(-1, keepdim=True)
        h = h * torch.rsqrt(variance + self.variance_epsilon)
        w = cast_param(self, "weight", h, dtype=self.weight.dtype)
        if w.dtype in (torch.float16, torch.bfloat16):
            h = h.to(w.dtype)
        return w * h


@functools.cache
def _layers(operations: object) -> tuple[type, type, type]:
    ops = resolve(operations)
    return (derive("Linear", CastLinear, ops.Linear, __name__),
            derive("Embedding", _EmbeddingMixin, ops.Embedding, __name__),
            derive("UMT5Norm", _T5NormMixin, ops.RMSNorm, __name__))


def rebuild_on(model: nn.Module, operations: object) -> None:
    """Replace transformers' Linear / Embedding / UMT5LayerNorm layers of ``model`` (meta) by ``operations``'
    classes, keeping shared modules shared (``shared`` is ``encoder.embed_tokens``)."""
    linear, embedding, norm = _layers(operations)
    done: dict[int, nn.Module] = {}
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            new = done.get(id(child))
            if new is None:
                first = next(child.parameters(recurse=False), None)
                kw = {} if first is None else dict(device="meta", dtype=first.dtype)
                if type(child) is nn.Linear:
                    new = linear(child.in_features, child.out_features, bias=child.bias is not None, **kw)
                elif type(child) is nn.Embedding:
                    new = embedding(child.num_embeddings, child.embedding_dim, padding_idx=child.padding_idx, **kw)
                elif type(child).__name__ == "UMT5LayerNorm":
                    new = norm(child.weight.shape[0], eps=child.variance_epsilon, **kw)
                else:
                    continue
                done[id(child)] = new
            setattr(parent, name, new)
