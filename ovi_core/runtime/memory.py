"""Placing an 11.66 B-parameter model on a GPU that may be too small for it.

Memory modes (``MEMORY_MODES``):

* ``"gpu"``: every component lives on the GPU for the whole run.
* ``"offload"``: components take turns on the GPU (text encoder, then DiT, then VAEs); the others wait
  in CPU memory.
* ``"block_swap"``: like ``offload``, and during sampling only ``blocks_on_gpu`` fused blocks of the DiT stay
  resident; the others are streamed from pinned CPU memory, one block ahead of the computation, on a
  separate CUDA stream.
* ``"auto"`` (the command line's default): like ``offload`` when the whole DiT fits in the free VRAM with its
  activations (:mod:`ovi_core.runtime.estimate`), else ``block_swap`` with as many resident blocks as fit
  (:func:`auto_plan`, decided at each sampling run from the free memory then).

With fp8 weights (kept fp8 in memory and upcast per layer) the streamed bytes halve as well.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
from collections.abc import Iterator

import torch
from torch import nn

from ovi_core.runtime.estimate import DitPlan, plan_dit

logger = logging.getLogger(__name__)

MEMORY_MODES = ("gpu", "offload", "block_swap", "auto")


def release_memory() -> None:
    """Return cached GPU memory to the driver (after a run, or between offloaded stages)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.ipc_collect()


@contextlib.contextmanager
def on_device(module: nn.Module, device: torch.device | str, *, offload: bool) -> Iterator[nn.Module]:
    """Move ``module`` to ``device`` for the block; move it back to CPU afterwards when ``offload``."""
    device = torch.device(device)
    module.to(device)
    try:
        yield module
    finally:
        if offload and device.type != "cpu":
            module.to("cpu")
            release_memory()


def dit_layout(model: nn.Module) -> tuple[int, int, int]:
    """``(weight bytes, bytes of one fused block (video + audio), fused blocks)`` of a fusion DiT."""
    base = getattr(model, "base", model)  # a LoRA view
    n = len(base.video_model.blocks)
    block = parameter_bytes(base.video_model.blocks[0]) + parameter_bytes(base.audio_model.blocks[0]) if n else 0
    return parameter_bytes(base), block, n


def auto_plan(model: nn.Module, free_bytes: int, tokens: int, rows: int = 2) -> DitPlan:
    """The ``auto`` placement of ``model`` for ``rows`` x ``tokens`` with ``free_bytes`` free on the device:
    ``gpu`` (the whole DiT fits with its activations) or ``block_swap`` with the resident blocks that fit."""
    weights, block, n = dit_layout(model)
    return plan_dit(int(free_bytes), weight_bytes=weights, block_bytes=block, num_blocks=n, tokens=tokens, rows=rows)


def free_device_bytes(device: torch.device) -> int | None:
    """Free memory on a CUDA ``device`` (what the driver reports plus PyTorch's cached blocks); None elsewhere."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))


@contextlib.contextmanager
def dit_on_device(model: nn.Module, device: torch.device | str, *, memory_mode: str, blocks_on_gpu: int = 10,
                  tokens: int | None = None, rows: int = 2) -> Iterator[nn.Module]:
    """Place the fusion DiT for sampling according to ``memory_mode`` (see the module docstring).

    ``gpu``: moved to ``device`` and left there; ``offload``: moved there and back to CPU afterwards;
    ``block_swap`` (CUDA): ``blocks_on_gpu`` fused blocks resident, the rest streamed, all back on CPU
    afterwards; ``auto``: ``offload`` or ``block_swap`` per :func:`auto_plan` for a forward of ``rows`` x
    ``tokens`` (required for ``auto`` on CUDA). On a CPU device every mode is a plain placement.
    """
    if memory_mode not in MEMORY_MODES:
        raise ValueError(f"memory_mode must be one of {MEMORY_MODES}, got {memory_mode!r}.")
    device = torch.device(device)
    if memory_mode == "auto":
        free = free_device_bytes(device)
        if free is None:
            memory_mode = "offload"
        else:
            if tokens is None:
                raise ValueError("memory_mode 'auto' needs the run's tokens (ovi_core.runtime.estimate.dit_tokens).")
            on_dev = sum(p.numel() * p.element_size() for p in model.parameters() if p.device == device)
            plan = auto_plan(model, free + on_dev, tokens, rows)
            memory_mode = "offload" if plan.mode == "gpu" else "block_swap"
            blocks_on_gpu = plan.blocks_on_gpu
            logger.info("memory mode auto: %s (%d resident blocks), about %.1f GiB needed, %.1f GiB free",
                        memory_mode, blocks_on_gpu, plan.need_bytes / 2**30, (free + on_dev) / 2**30)
    if memory_mode != "block_swap" or device.type == "cpu":
        with on_device(model, device, offload=memory_mode != "gpu") as m:
            yield m
        return
    swapper = BlockSwapper(model, device=device, resident=blocks_on_gpu)
    try:
        yield model
    finally:
        swapper.detach()
        model.to("cpu")
        release_memory()


_ALIGN = 256  # byte alignment of each tensor inside a block's arena (any dtype can view it)
_PAGE = 4096


class BlockSwapper:
    """Stream the fused blocks of an Ovi DiT through the GPU, ``resident`` blocks kept there.

    Installs itself as ``model.block_hook`` (called with the fused-block index before each block). Block
    ``i``'s weights (the video and audio tower's ``blocks[i]``) are uploaded on a side stream while block
    ``i - 1`` computes, and dropped again after use (the CPU copy is the master: inference never changes
    weights, so nothing is copied back).

    Host memory: each streamed block's tensors live in one contiguous CPU buffer (its arena), page-locked with
    ``cudaHostRegister`` for the exact size (PyTorch's pinned allocator rounds every allocation up to a power of
    two: 22.5 GiB locked for 13.6 GiB of weights at 10 resident blocks) and uploaded with one copy per block.
    :meth:`detach` unregisters the arenas, so the pages are ordinary memory again once sampling ends.

    Device memory: before prefetching block ``i + 1`` the CPU waits until the GPU has finished everything queued
    so far (an event recorded on the compute stream at this hook, i.e. after block ``i - 1``, whose weights were
    just dropped), so block ``i - 1``'s memory is free again when block ``i + 1``'s upload allocates: at most two
    streamed blocks are allocated at once (``i`` computing, ``i + 1`` uploading) however far ahead the CPU would
    get. The price is that the CPU queues block ``i`` only once block ``i - 1`` has run (a gap of one kernel
    launch on the GPU per block, against a block's compute time of a fraction of a second at full size).
    """

    def __init__(self, model: nn.Module, *, device: torch.device | str, resident: int) -> None:
        self.model = model
        self.device = torch.device(device)
        n = len(model.video_model.blocks)
        self.num_blocks = n
        self.resident = max(0, min(int(resident), n))
        self.streamed = list(range(self.resident, n))
        cuda = self.device.type == "cuda"
        self.stream = torch.cuda.Stream(device=self.device) if cuda else None
        self._events: dict[int, torch.cuda.Event | None] = {}
        self._masters: dict[int, list[tuple[nn.Parameter | torch.Tensor, torch.Tensor]]] = {}
        self._arenas: dict[int, torch.Tensor] = {}
        self._layouts: dict[int, list[tuple[torch.Tensor, int, torch.dtype, torch.Size]]] = {}
        self._registered: list[int] = []  # data pointers page-locked with cudaHostRegister
        self._warned = False

        # everything except the streamed blocks goes to the device
        streamed_ids = set()
        for i in self.streamed:
            for blk in self._blocks(i):
                streamed_ids.update(id(p) for p in blk.parameters())
                streamed_ids.update(id(b) for b in blk.buffers())
        for p in list(model.parameters()) + list(model.buffers()):
            if id(p) not in streamed_ids:
                p.data = p.data.to(self.device)
        for i in self.streamed:
            self._build_arena(i, pin=cuda)
        self._on_device: set[int] = set()
        model.block_hook = self
        logger.info("block swap: %d of %d fused blocks resident on %s", self.resident, n, self.device)

    def _blocks(self, i: int) -> tuple[nn.Module, nn.Module]:
        return self.model.video_model.blocks[i], self.model.audio_model.blocks[i]

    def _build_arena(self, i: int, *, pin: bool) -> None:
        """Copy block ``i``'s tensors into one CPU buffer and point them at their views of it (the masters)."""
        tensors, seen = [], set()
        for blk in self._blocks(i):
            for t in list(blk.parameters()) + list(blk.buffers()):
                if id(t) not in seen:
                    seen.add(id(t))
                    tensors.append(t)
        layout, total = [], 0
        for t in tensors:
            layout.append((t, total, t.dtype, t.shape))
            total += -(-t.numel() * t.element_size() // _ALIGN) * _ALIGN
        raw = torch.empty(max(total, 1) + _PAGE, dtype=torch.uint8)
        shift = -raw.data_ptr() % _PAGE  # page-aligned start, as cudaHostRegister has long required
        arena = raw[shift : shift + max(total, 1)]
        masters = []
        with torch._C.DisableTorchFunctionSubclass():  # packed weights: copy their bytes, do not dequantize
            for t, off, dtype, shape in layout:
                view = _view(arena, off, dtype, shape)
                view.copy_(t.data)
                t.data = view
                masters.append((t, view))
        if pin:
            err = torch.cuda.cudart().cudaHostRegister(arena.data_ptr(), arena.numel(), 0)
            if int(err) == 0:
                self._registered.append(arena.data_ptr())
            elif not self._warned:  # still correct, only the uploads are synchronous
                self._warned = True
                logger.warning("block swap: cudaHostRegister failed (%s); blocks upload from pageable memory", err)
        self._arenas[i], self._layouts[i], self._masters[i] = arena, layout, masters

    def _upload(self, i: int) -> None:
        if i in self._on_device or i not in self._masters:
            return
        if self.stream is not None:
            compute = torch.cuda.current_stream(self.device)
            self.stream.wait_stream(compute)
            with torch.cuda.stream(self.stream):
                gpu = self._arenas[i].to(self.device, non_blocking=True)  # one copy per block
                gpu.record_stream(compute)
                with torch._C.DisableTorchFunctionSubclass():
                    views = [(t, _view(gpu, off, dtype, shape)) for t, off, dtype, shape in self._layouts[i]]
                for t, view in views:
                    t.data = view
                ev = torch.cuda.Event()
                ev.record(self.stream)
            self._events[i] = ev
        else:
            for t, cpu in self._masters[i]:
                t.data = cpu.to(self.device)
            self._events[i] = None
        self._on_device.add(i)

    def _drop(self, i: int) -> None:
        if i not in self._on_device:
            return
        for t, cpu in self._masters[i]:
            t.data = cpu
        self._on_device.discard(i)

    def _bound_lead(self) -> None:
        """Wait until the GPU has finished the work queued so far (up to block ``i - 1``), so that at most two
        streamed blocks are allocated when the next upload starts (class docstring)."""
        if self.stream is None:
            return
        done = torch.cuda.Event()
        done.record(torch.cuda.current_stream(self.device))
        done.synchronize()

    def __call__(self, i: int) -> None:
        """Before fused block ``i``: drop block ``i-1`` if streamed, make ``i`` ready, prefetch the next."""
        prev = (i - 1) % self.num_blocks
        if prev in self._masters and prev != i:
            self._drop(prev)
        self._upload(i)
        ev = self._events.get(i)
        if ev is not None:
            torch.cuda.current_stream(self.device).wait_event(ev)
        if self.streamed:
            nxt = i + 1 if i + 1 < self.num_blocks else self.streamed[0]
            if nxt in self._masters:
                self._bound_lead()
                self._upload(nxt)

    def detach(self) -> None:
        """Put every streamed block back in CPU memory, remove the hook and unlock the arenas' pages (the
        tensors keep their CPU masters, now in ordinary memory)."""
        for i in list(self._on_device):
            self._drop(i)
        self.model.block_hook = None
        if self._registered:
            self.stream.synchronize()  # no upload may still read the pages
            for ptr in self._registered:
                torch.cuda.cudart().cudaHostUnregister(ptr)
            self._registered.clear()


def _view(buf: torch.Tensor, off: int, dtype: torch.dtype, shape: torch.Size) -> torch.Tensor:
    """``buf``'s bytes from ``off`` as a contiguous tensor of ``dtype`` and ``shape``."""
    n = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
    return buf[off : off + n].view(dtype).view(shape)


def parameter_bytes(module: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())
