"""``--compile``: one compiled function shared by every fused layer (the blocks are its arguments), so a model
deeper than dynamo's recompile limit compiles a bounded number of graphs over a multi-step run."""

import dataclasses
import logging

import torch
import torch._dynamo as dynamo
from torch._dynamo.utils import counters

from ovi_core.model.config import TINY
from ovi_core.model.loader import random_fusion

LAYERS = 10  # more than torch._dynamo.config.recompile_limit (8)


def test_compile_graphs_are_bounded_over_four_steps(caplog):
    tower = dataclasses.replace(TINY.video, dim=32, ffn_dim=64, num_heads=2, num_layers=LAYERS)
    cfg = dataclasses.replace(TINY, video=tower, audio=dataclasses.replace(TINY.audio, dim=32, ffn_dim=64,
                                                                           num_heads=2, num_layers=LAYERS))
    model = random_fusion(cfg, seed=0).eval()
    g = torch.Generator().manual_seed(0)
    video = torch.randn(2, 48, 2, 4, 4, generator=g)
    audio = torch.randn(2, 6, 20, generator=g)
    ctx = [torch.randn(3, cfg.video.text_dim, generator=g) for _ in range(2)]
    mask = torch.tensor([False, True])

    def steps():
        outs = []
        with torch.no_grad(), model.cache_text_embeddings():
            for t in (900.0, 700.0, 500.0, 300.0):  # 4 sampling steps, batched CFG with skip-layer guidance
                outs.append(model(video, audio, torch.full((2,), t), ctx, ctx, slg_layer=3, slg_mask=mask))
        return outs

    want = steps()
    dynamo.reset()
    counters.clear()
    try:
        model.compile(backend="eager", dynamic=False)
        with caplog.at_level(logging.WARNING, logger="torch._dynamo"):
            got = steps()
        graphs = counters["stats"]["unique_graphs"]
    finally:
        dynamo.reset()
    assert 1 <= graphs <= 3, graphs  # was one per layer up to the limit (8), the other layers eager
    assert not any("recompile_limit" in r.getMessage() or "cache_size_limit" in r.getMessage()
                   for r in caplog.records)
    for (wv, wa), (gv, ga) in zip(want, got, strict=True):
        assert torch.equal(wv, gv) and torch.equal(wa, ga)


def test_compile_with_packed_weights_stays_eager(tmp_path, caplog):
    """GGUF / scaled-fp8 weights would break the graph at every dequantize and recompile every step: refused
    with a warning, the model runs eager."""
    from quant_utils import CFG, forward, write_source

    from ovi_core.model.fusion import _fused_blocks
    from ovi_core.model.loader import load_fusion
    from ovi_core.quant.convert import quantize_file

    src, gguf = str(tmp_path / "m.safetensors"), str(tmp_path / "m.gguf")
    write_source(src)
    quantize_file(src, gguf, format="q8_0")
    model = load_fusion(gguf, dtype=torch.float32, config=CFG)
    want = forward(model)
    with caplog.at_level(logging.WARNING, logger="ovi_core.model.fusion"):
        model.compile(backend="eager", dynamic=False)
    assert model._blocks_fn is _fused_blocks
    assert any("packed weights (QuantizedWeight)" in r.getMessage() for r in caplog.records)
    assert torch.equal(forward(model)[0], want[0])
