"""Counting the host-to-device copies that code asks for, on any device (a CPU stand-in for CUDA sync checks).

On CUDA, ``torch.tensor(data, device="cuda")`` and ``cpu_tensor.to("cuda")`` from pageable memory are a
``cudaMemcpyAsync`` followed by ``cudaStreamSynchronize``: a host sync that drains the launch queue
(``torch.cuda.set_sync_debug_mode("warn")`` reports each). :class:`TransferCounter` counts the same requests at
the Python level, whatever the device, so a test can run the model on the ``meta`` device (standing in for the
GPU) on a machine without one and fail when a forward starts asking for a copy per layer:

* ``torch.tensor`` / ``torch.as_tensor`` of Python data (or of a CPU tensor) onto a non-CPU device;
* ``Tensor.to`` / ``Tensor.cuda`` / ``Tensor.copy_`` from a CPU tensor onto a non-CPU device.

Fill kernels (``torch.full``, ``torch.zeros``, ``torch.arange`` on the device) are not copies and are not
counted; neither are device-to-host reads (``.item()``, ``bool(t)``), which this module does not track.
``non_blocking`` copies from pinned memory (block-swap uploads) do not sync: they are counted apart, in
``async_count``.
"""

from __future__ import annotations

import torch
from torch.overrides import TorchFunctionMode

_FACTORIES = (torch.tensor, torch.as_tensor)
_MOVES = (torch.Tensor.to, torch.Tensor.cuda)


def _off_host(device) -> bool:
    return device is not None and torch.device(device).type != "cpu"


def _on_host(x) -> bool:
    return not isinstance(x, torch.Tensor) or x.device.type == "cpu"


class TransferCounter(TorchFunctionMode):
    """``with TransferCounter() as c: ...`` then ``c.count`` (and ``c.calls``: one ``"func(shape)"`` string per
    counted request, for the failure message)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.async_count = 0
        self.calls: list[str] = []

    def _hit(self, func, x, non_blocking: bool = False) -> None:
        if non_blocking and isinstance(x, torch.Tensor) and x.is_pinned():
            self.async_count += 1
            return
        self.count += 1
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        self.calls.append(f"{getattr(func, '__name__', func)}({shape})")

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _FACTORIES:
            if args and _on_host(args[0]) and _off_host(kwargs.get("device")):
                self._hit(func, args[0])
        elif func in _MOVES and args and isinstance(args[0], torch.Tensor) and args[0].device.type == "cpu":
            if func is torch.Tensor.cuda:
                self._hit(func, args[0], kwargs.get("non_blocking", False))
            else:
                device, _, non_blocking, _ = torch._C._nn._parse_to(*args[1:], **kwargs)
                if _off_host(device):
                    self._hit(func, args[0], non_blocking)
        elif func is torch.Tensor.copy_ and len(args) > 1 and isinstance(args[1], torch.Tensor):
            if args[1].device.type == "cpu" and _off_host(args[0].device):
                self._hit(func, args[1], bool(args[2]) if len(args) > 2 else kwargs.get("non_blocking", False))
        if torch._C._is_torch_function_enabled():
            sub = _custom_subclass(types)
            if sub is not None:
                # a tensor subclass's own handler (e.g. a packed weight that dequantizes in ``.to``) runs its
                # torch calls while this mode is popped; push it again so those calls are counted too
                with self:
                    return sub.__torch_function__(func, types, args, kwargs)
        return func(*args, **kwargs)


def _custom_subclass(types) -> type | None:
    """The first of ``types`` with its own ``__torch_function__`` (not Tensor's, not Parameter's disabled one)."""
    base = torch.Tensor.__torch_function__.__func__
    for t in types:
        own = next((k.__dict__["__torch_function__"] for k in getattr(t, "__mro__", ())
                    if "__torch_function__" in k.__dict__), None)
        f = getattr(own, "__func__", own)
        if f is not None and f is not base and f is not torch._C._disabled_torch_function_impl:
            return t
    return None


__all__ = ["TransferCounter"]
