"""RoPE in real arithmetic (GPU_REVIEW #15, issue 22 item 7): the form used inside ``torch.compile`` and, compiled,
on CUDA has no complex operator and gives the bits of the eager complex multiply (the official numerics)."""

import json
import logging
import os

import pytest
import torch
import torch._dynamo as dynamo
from safetensors.torch import load_file

import ovi_core.model.rope as rope
from ovi_core.model.config import FusionConfig
from ovi_core.model.loader import load_fusion

DATA = os.path.join(os.path.dirname(__file__), "data")
CPU = torch.device("cpu")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("kind", ["video", "audio"])
def test_every_form_gives_the_same_bits(dtype, kind):
    head_dim, heads = 128, 3
    table = (rope.video_rope_table((7, 4, 5), head_dim, CPU) if kind == "video"
             else rope.audio_rope_table(140, head_dim, 0.19676, CPU))
    assert table.dtype == torch.float64 and table.shape == (140, 1, head_dim // 2, 2)
    x = (torch.randn(2, 140, heads, head_dim, generator=torch.Generator().manual_seed(4)) * 3).to(dtype)
    want = rope.apply_rope(x, table)  # the CPU default: chunked complex multiply
    assert torch.equal(rope.rotate_pairs(x, table), want)  # real arithmetic (compiled / CUDA form)
    assert torch.equal(rope._apply_rope_whole(x, torch.view_as_complex(table)), want)  # complex, one multiply
    assert torch.equal(rope.apply_rope(x, (table[..., 0], table[..., 1])), want)


class _Graphs:
    """A ``torch.compile`` backend that records the dtypes flowing through each captured graph, then runs it."""

    def __init__(self):
        self.dtypes: set[torch.dtype] = set()
        self.graphs = 0

    def __call__(self, gm, example_inputs):
        self.graphs += 1
        for node in gm.graph.nodes:
            val = node.meta.get("example_value")
            for v in val if isinstance(val, (tuple, list)) else (val,):
                if isinstance(v, torch.Tensor):
                    self.dtypes.add(v.dtype)
        return gm.forward


@pytest.mark.parametrize("case", ["fusion_t2v", "fusion_i2v_slg"])
def test_compiled_forward_has_no_complex_op_and_the_eager_bits_on_the_golden_cases(case):
    meta = json.load(open(os.path.join(DATA, f"{case}.json")))
    io = load_file(os.path.join(DATA, f"{case}.io.safetensors"))
    cfg = FusionConfig.from_official(meta["video_config"], meta["audio_config"])
    model = load_fusion(os.path.join(DATA, f"{case}.weights.safetensors"), dtype=torch.bfloat16, config=cfg)

    def run():
        with torch.no_grad():
            return model(io["inputs.video"], io["inputs.audio"], io["inputs.t"], io["inputs.video_context"],
                         io["inputs.audio_context"], first_frame_clean=meta["inputs.first_frame_clean"],
                         slg_layer=meta["inputs.skip_layer"])

    want = run()
    seen = _Graphs()
    dynamo.reset()
    try:
        model.compile(backend=seen, dynamic=False)
        got = run()
    finally:
        dynamo.reset()
    assert seen.graphs >= 1 and torch.float64 in seen.dtypes  # the rotation was traced, in float64
    assert not any(d.is_complex for d in seen.dtypes), seen.dtypes
    for w, g in zip(want, got, strict=True):
        assert g.dtype == torch.bfloat16 and torch.equal(w, g)


def test_fused_kernel_failure_falls_back_to_the_eager_form(monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("no triton here")

    monkeypatch.setattr(torch, "compile", broken)
    x = torch.randn(1, 12, 2, 16).bfloat16()
    table = rope.video_rope_table((3, 2, 2), 16, CPU)
    try:
        with caplog.at_level(logging.WARNING, logger="ovi_core.model.rope"):
            assert rope._fused_rotate(x, table) is None
        assert not rope._fused_enabled
        assert any("fused RoPE kernel unavailable" in r.getMessage() for r in caplog.records)
    finally:
        rope.set_fused_rope(True)
    assert rope._fused_enabled and rope._fused_fn is None


def test_each_place_gets_its_form():
    f64, f32 = torch.float64, torch.float32
    assert rope.rope_form("cpu", f64, grad=False, compiling=False) == "chunked"
    assert rope.rope_form("cpu", f64, grad=True, compiling=False) == "complex"  # training keeps one multiply
    assert rope.rope_form("cuda", f64, grad=False, compiling=False) == "fused"
    assert rope.rope_form("cuda", f64, grad=True, compiling=False) == "complex"
    assert rope.rope_form("meta", f64, grad=False, compiling=False) == "complex"  # traces: the eager CUDA fallback
    assert rope.rope_form("mps", f32, grad=False, compiling=False) == "real"
    for dev in ("cpu", "cuda"):
        assert rope.rope_form(dev, f64, grad=False, compiling=True) == "real"
    rope.set_fused_rope(False)
    try:
        assert rope.rope_form("cuda", f64, grad=False, compiling=False) == "complex"
    finally:
        rope.set_fused_rope(True)
