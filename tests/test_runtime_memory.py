"""Block swap's host side on CPU: each streamed block's tensors live in one contiguous arena (one upload per
block, one page-locked range), the results are unchanged, and detaching restores plain CPU tensors."""

import dataclasses

import torch

from ovi_core.model.config import TINY
from ovi_core.model.loader import random_fusion
from ovi_core.runtime.memory import BlockSwapper


def _forward(model):
    g = torch.Generator().manual_seed(0)
    video = torch.randn(2, 48, 2, 4, 4, generator=g)
    audio = torch.randn(2, 6, 20, generator=g)
    ctx = [torch.randn(3, TINY.video.text_dim, generator=g) for _ in range(2)]
    with torch.no_grad():
        return model(video, audio, torch.tensor([700.0, 700.0]), ctx, ctx, slg_layer=1,
                     slg_mask=torch.tensor([False, True]))


def test_streamed_blocks_live_in_one_arena_each():
    model = random_fusion(TINY, seed=0).eval()
    want = _forward(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    swapper = BlockSwapper(model, device="cpu", resident=0)
    try:
        assert swapper.streamed == [0, 1]
        for i in swapper.streamed:
            arena = swapper._arenas[i]
            base = arena.untyped_storage().data_ptr()
            masters = swapper._masters[i]
            tensors = [t for blk in swapper._blocks(i) for t in blk.parameters()]
            assert len(masters) == len(tensors) > 10
            for t, cpu in masters:
                assert t.data_ptr() == cpu.data_ptr()  # the parameter is the master (streamed block on CPU)
                assert cpu.untyped_storage().data_ptr() == base  # a view of the block's arena
                assert (cpu.data_ptr() - arena.data_ptr()) % 256 == 0
            assert sum(c.numel() * c.element_size() for _, c in masters) <= arena.numel()
        calls = []
        inner = model.block_hook
        model.block_hook = lambda i: (calls.append(i), inner(i))
        got = _forward(model)
    finally:
        swapper.detach()
    assert calls == [0, 1]
    assert torch.equal(want[0], got[0]) and torch.equal(want[1], got[1])
    assert model.block_hook is None
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]) and v.dtype == before[k].dtype, k
    assert torch.equal(_forward(model)[0], want[0])


class _Timeline:
    """A stand-in for the CUDA runtime's ordering: blocks queued on the compute stream, events recorded at a point
    of that queue, and ``synchronize`` making the CPU wait until the GPU has run everything before that point."""

    def __init__(self):
        self.queued = []  # fused blocks whose compute the CPU has queued, in order
        self.finished = 0  # how many of them the GPU has run (as far as the CPU knows)
        timeline = self

        class Event:
            def record(self, stream=None):
                self.at = len(timeline.queued)

            def synchronize(self):
                timeline.finished = max(timeline.finished, self.at)

        self.Event = Event


def test_block_swap_keeps_at_most_two_streamed_blocks_allocated(monkeypatch):
    """Before block ``i + 1``'s upload allocates, block ``i - 1`` (dropped at this hook) must have run, or three
    streamed blocks would be on the device at once: the uploads in flight are bounded by an event wait."""
    deep = dataclasses.replace(TINY, video=dataclasses.replace(TINY.video, num_layers=6),
                               audio=dataclasses.replace(TINY.audio, num_layers=6))
    model = random_fusion(deep, seed=0).eval()
    swapper = BlockSwapper(model, device="cpu", resident=1)
    tl = _Timeline()
    monkeypatch.setattr(torch.cuda, "Event", tl.Event)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: None)
    swapper.stream = object()  # the CUDA branch of _bound_lead; uploads below are recorded, not copied
    uploaded, dropped, peak = set(), {}, []

    def upload(i):
        if i in swapper._on_device or i not in swapper._masters:  # resident blocks stay where they are
            return
        # a dropped block's memory is reusable once the GPU has run its compute (record_stream)
        alive = {b for b in uploaded if b not in dropped or dropped[b] >= tl.finished}
        peak.append(len(alive | {i}))
        uploaded.add(i)
        dropped.pop(i, None)
        swapper._on_device.add(i)
        swapper._events[i] = None

    def drop(i):
        if i in swapper._on_device:
            swapper._on_device.discard(i)
            dropped[i] = max(k for k, b in enumerate(tl.queued) if b == i)  # its last queued compute

    monkeypatch.setattr(swapper, "_upload", upload)
    monkeypatch.setattr(swapper, "_drop", drop)
    try:
        for _ in range(3):  # three forwards of a model with every block streamed
            for i in range(swapper.num_blocks):
                swapper(i)
                tl.queued.append(i)  # the block's kernels are queued after its hook
    finally:
        swapper.stream = None
        swapper.detach()
    assert max(peak) <= 2, peak
