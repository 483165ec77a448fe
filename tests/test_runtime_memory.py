"""Block swap's host side on CPU: each streamed block's tensors live in one contiguous arena (one upload per
block, one page-locked range), the results are unchanged, and detaching restores plain CPU tensors."""

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
