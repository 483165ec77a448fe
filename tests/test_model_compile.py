"""``--compile``: one compiled function shared by every fused layer (the blocks are its arguments), so a model
deeper than dynamo's recompile limit compiles a bounded number of graphs over a multi-step run."""

import dataclasses
import logging

import pytest
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


@pytest.mark.parametrize("fmt", ["q8_0", "q4_k", "fp8_scaled"])
def test_compile_with_packed_weights_is_bounded_and_exact(tmp_path, fmt):
    """GGUF / scaled-fp8 weights: the compiled layer runs on workspace blocks holding each layer's expanded
    weights, so a 4-step run compiles a bounded number of graphs (before: a graph break at every dequantize, a
    recompile every step) and, with dynamo's eager backend, gives exactly the eager output."""
    from quant_utils import CFG, inputs, write_source

    from ovi_core.model.loader import load_fusion
    from ovi_core.quant.convert import quantize_file

    src, packed = str(tmp_path / "m.safetensors"), str(tmp_path / f"m.{fmt}")
    write_source(src)
    packed += ".gguf" if fmt.startswith("q") else ".safetensors"
    quantize_file(src, packed, format=fmt)
    model = load_fusion(packed, dtype=torch.bfloat16, config=CFG)
    assert any(type(p).__name__ == "QuantizedWeight" for p in model.parameters())
    video, audio, _, ctx = inputs()

    def steps():
        with torch.no_grad(), model.cache_text_embeddings():
            return [model(video.bfloat16(), audio.bfloat16(), torch.tensor([t]), ctx, ctx)
                    for t in (900.0, 700.0, 500.0, 300.0)]

    want = steps()
    dynamo.reset()
    counters.clear()
    try:
        model.compile(backend="eager", dynamic=False)
        with torch.no_grad(), model.cache_text_embeddings():
            first = model(video.bfloat16(), audio.bfloat16(), torch.tensor([900.0]), ctx, ctx)
        after_one = counters["stats"]["unique_graphs"]
        got = steps()
        graphs = counters["stats"]["unique_graphs"]
    finally:
        dynamo.reset()
    assert 1 <= graphs <= 3 and graphs == after_one, (after_one, graphs)  # nothing recompiles after step one
    assert torch.equal(first[0], want[0][0])
    for (wv, wa), (gv, ga) in zip(want, got, strict=True):
        assert torch.equal(wv, gv) and torch.equal(wa, ga)


def test_compiled_packed_model_with_lora_runs_hooked_layers_eagerly(tmp_path):
    """A LoRA network hooked into the blocks changes their output: those layers run eagerly on the real blocks,
    so the compiled model still gives the hooked model's output."""
    from quant_utils import CFG, forward, write_source
    from torch import nn

    from ovi_core.lora.network import LoRANetwork
    from ovi_core.lora.targets import LoRAConfig
    from ovi_core.model.loader import load_fusion
    from ovi_core.quant.convert import quantize_file

    src, gguf = str(tmp_path / "m.safetensors"), str(tmp_path / "m.gguf")
    write_source(src)
    quantize_file(src, gguf, format="q8_0")
    model = load_fusion(gguf, dtype=torch.float32, config=CFG)
    base = forward(model)
    net = LoRANetwork.for_model(model, LoRAConfig(rank=4), seed=0)
    with torch.no_grad():
        for ad in net.adapters.values():
            nn.init.normal_(ad.lora_up.weight, std=0.05, generator=torch.Generator().manual_seed(1))
    net.attach(model)
    want = forward(model)
    assert not torch.allclose(want[0], base[0], atol=1e-4)
    dynamo.reset()
    try:
        model.compile(backend="eager", dynamic=False)
        got = forward(model)
    finally:
        dynamo.reset()
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
