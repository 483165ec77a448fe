"""A weight kept packed in memory and expanded to the compute dtype each time a layer uses it.

:class:`QuantizedWeight` is a ``torch.Tensor`` subclass whose storage is the packed bytes (``uint8``) of
either a GGML block format (``Q8_0``/``Q6_K``/``Q4_K``, see :mod:`ovi_core.quant.ggml`) or a scaled fp8
weight (``float8`` bytes plus one per-tensor ``scale``). It is held as the layer's ``weight`` Parameter,
so module names, ``state_dict`` keys, ``model.to(device)``, offload and block swap (which move
``param.data``) all work unchanged and move only the packed bytes.

The DiT's layers cast their weight to the input's dtype at call time (``weight.to(x.dtype)``); on a
``QuantizedWeight`` that cast *is* the dequantization, done on the device where the bytes are — so with
block swap a block's packed bytes are uploaded and expanded on the GPU, one layer at a time, and the
expanded copy is freed after the layer.

Semantics: a cast to a floating dtype dequantizes (returns a plain tensor of the logical shape ``qshape``);
moving between devices, ``detach``, ``clone``, ``pin_memory`` and ``.data`` keep the packed form; a call
such as ``F.linear(x, w)`` with the packed weight itself dequantizes to ``x``'s dtype first. Any other
operation sees the raw bytes and returns plain tensors (``numel``/``element_size`` count packed bytes).
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from ovi_core.quant import ggml

FP8_SCALED = "fp8_scaled"

_KEEP = {  # operations that keep the packed form (the result is the same bytes, maybe elsewhere)
    torch.Tensor.detach, torch.Tensor.clone, torch.Tensor.contiguous, torch.Tensor.pin_memory,
    torch.Tensor.cpu, torch.Tensor.cuda, torch.Tensor.share_memory_, torch.Tensor.requires_grad_,
    torch.Tensor.data.__get__,
}
_DEQUANT_FIRST = {F.linear, F.conv1d, F.conv2d, F.conv3d, torch.matmul, torch.Tensor.matmul, torch.mm}


class QuantizedWeight(torch.Tensor):
    """Packed weight; ``qtype`` is a GGML type id or ``"fp8_scaled"``; ``qshape`` the logical shape.

    For ``fp8_scaled``: the bytes are a ``float8`` tensor of shape ``qshape`` viewed as ``uint8``,
    ``fp8_dtype`` says which float8, and ``value = fp8.to(dtype) * scale``.
    """

    qtype: int | str
    qshape: torch.Size
    scale: float
    fp8_dtype: torch.dtype | None
    expands_on_cast = True  # a cast to a float dtype dequantizes (ovi_core.runtime.ops.cast_param relies on it)

    @staticmethod
    def __new__(cls, raw: torch.Tensor, *, qtype: int | str, shape, scale: float = 1.0,
                fp8_dtype: torch.dtype | None = None) -> QuantizedWeight:
        if raw.dtype != torch.uint8:
            raise ValueError(f"packed weights are uint8 bytes, got {raw.dtype}.")
        t = torch.Tensor._make_subclass(cls, raw, False)
        t.qtype = qtype
        t.qshape = torch.Size(shape)
        t.scale = float(scale)
        t.fp8_dtype = fp8_dtype
        return t

    @classmethod
    def from_fp8(cls, w: torch.Tensor, scale: float = 1.0) -> QuantizedWeight:
        """A float8 tensor and its per-tensor scale (``value = w * scale``)."""
        return cls(w.contiguous().view(torch.uint8), qtype=FP8_SCALED, shape=w.shape, scale=scale, fp8_dtype=w.dtype)

    @classmethod
    def from_ggml(cls, raw: torch.Tensor, qtype: int, shape) -> QuantizedWeight:
        """GGML bytes of a tensor of logical ``shape``."""
        expect = ggml.nbytes(tuple(shape), qtype)
        if raw.numel() != expect:
            raise ValueError(f"{ggml.TYPE_NAMES[qtype]} tensor of shape {tuple(shape)} needs {expect} bytes, "
                             f"got {raw.numel()}.")
        return cls(raw.reshape(-1), qtype=qtype, shape=shape)

    def _like(self, raw: torch.Tensor) -> QuantizedWeight:
        return QuantizedWeight(raw, qtype=self.qtype, shape=self.qshape, scale=self.scale, fp8_dtype=self.fp8_dtype)

    def raw(self) -> torch.Tensor:
        """The packed bytes as a plain tensor (shares storage)."""
        with torch._C.DisableTorchFunctionSubclass():
            return self.view(torch.uint8)

    @property
    def format_name(self) -> str:
        return FP8_SCALED if self.qtype == FP8_SCALED else ggml.TYPE_NAMES[self.qtype]

    def dequantize(self, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
                   ) -> torch.Tensor:
        """The weight as a plain ``dtype`` tensor of shape ``qshape``, computed on ``device`` (default: where
        the bytes are)."""
        raw = self.raw()
        if device is not None and torch.device(device) != raw.device:
            raw = raw.to(device)
        if self.qtype == FP8_SCALED:
            w = raw.view(self.fp8_dtype).reshape(self.qshape).to(dtype)
            return w if self.scale == 1.0 else w.mul_(self.scale)
        return ggml.dequantize(raw, self.qtype, self.qshape, dtype)

    def __deepcopy__(self, memo: dict) -> QuantizedWeight:
        if id(self) in memo:
            return memo[id(self)]
        new = self._like(self.raw().clone())
        if getattr(self, "_is_param", False):
            new._is_param = True
        memo[id(self)] = new
        return new

    def __repr__(self, *, tensor_contents=None) -> str:  # noqa: D105
        return (f"QuantizedWeight({self.format_name}, shape={tuple(self.qshape)}, bytes={self.raw().numel()}, "
                f"device={self.raw().device})")

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.to:
            self = args[0]
            copy = bool(kwargs.pop("copy", False))
            device, dtype, non_blocking, _ = torch._C._nn._parse_to(*args[1:], **kwargs)
            if dtype is not None and dtype != torch.uint8:
                if not (dtype.is_floating_point or dtype.is_complex):
                    raise TypeError(f"cannot cast a packed {self.format_name} weight to {dtype}.")
                return self.dequantize(dtype, device)
            with torch._C.DisableTorchFunctionSubclass():
                raw = self.view(torch.uint8)
                moved = raw.to(device=device, non_blocking=non_blocking, copy=copy) if device or copy else raw
            return self if moved is raw else self._like(moved)
        if func is torch.empty_like and kwargs.get("dtype") in (None, torch.uint8):
            # ComfyUI's cast_to moves a weight as empty_like(w, device=d).copy_(w): keep the packed form
            with torch._C.DisableTorchFunctionSubclass():
                return args[0]._like(torch.empty_like(args[0].raw(), **kwargs))
        if func in (torch.Tensor.float, torch.Tensor.half, torch.Tensor.bfloat16):
            dt = {torch.Tensor.float: torch.float32, torch.Tensor.half: torch.float16}.get(func, torch.bfloat16)
            return args[0].dequantize(dt)
        if func in _DEQUANT_FIRST:
            x = args[0]
            dt = x.dtype if isinstance(x, torch.Tensor) and not isinstance(x, QuantizedWeight) else torch.float32
            args = tuple(a.dequantize(dt) if isinstance(a, QuantizedWeight) else a for a in args)
            kwargs = {k: v.dequantize(dt) if isinstance(v, QuantizedWeight) else v for k, v in kwargs.items()}
            return func(*args, **kwargs)
        with torch._C.DisableTorchFunctionSubclass():
            out = func(*args, **kwargs)
        if func in _KEEP and isinstance(out, torch.Tensor) and out is not args[0]:
            src = args[0]
            return src._like(out.view(torch.uint8) if out.dtype != torch.uint8 else out)
        if isinstance(out, QuantizedWeight) and out is not args[0]:
            with torch._C.DisableTorchFunctionSubclass():
                return out.view(torch.uint8)
        return out


def is_quantized(t: object) -> bool:
    return isinstance(t, QuantizedWeight)


def logical_shape(t: torch.Tensor) -> torch.Size:
    """``qshape`` for a packed weight, else ``t.shape``."""
    return t.qshape if isinstance(t, QuantizedWeight) else t.shape


def packed_bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def logical_numel(t: torch.Tensor) -> int:
    return math.prod(logical_shape(t))


__all__ = ["QuantizedWeight", "FP8_SCALED", "is_quantized", "logical_shape", "packed_bytes", "logical_numel"]
