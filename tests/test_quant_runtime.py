"""Quantized weights at run time: LoRA on top, block swap (CPU both sides), fp8-compute dispatch, defaults."""

import copy

import pytest
import torch
from quant_utils import CFG, forward, write_source
from torch import nn

from ovi_core.io import checkpoints as ck
from ovi_core.lora.network import LoRANetwork
from ovi_core.lora.targets import LoRAConfig
from ovi_core.model.fusion import OviFusionModel
from ovi_core.model.loader import load_fusion, save_fusion
from ovi_core.quant import fp8_compute as fc
from ovi_core.quant.convert import quantize_file
from ovi_core.quant.kijai import write_kijai_files
from ovi_core.quant.tensor import QuantizedWeight
from ovi_core.runtime.memory import BlockSwapper


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("rt")
    src = str(d / "model.safetensors")
    write_source(src)
    gguf = str(d / "model.gguf")
    quantize_file(src, gguf, format="q4_k")
    return src, gguf, d


def _dequantized_copy(model):
    """The same model with every packed weight replaced by its float32 expansion (an independent oracle)."""
    ref = copy.deepcopy(model)
    for mod in ref.modules():
        for name, p in list(mod._parameters.items()):
            if isinstance(p, QuantizedWeight):
                mod._parameters[name] = nn.Parameter(p.dequantize(torch.float32), requires_grad=False)
    return ref


def test_lora_applies_on_top_of_quantized_weights(files):
    _, gguf, _ = files
    model = load_fusion(gguf, dtype=torch.float32, config=CFG)
    ref = _dequantized_copy(model)
    base = forward(model)
    outs = []
    for m in (model, ref):
        net = LoRANetwork.for_model(m, LoRAConfig(rank=4), seed=0)
        with torch.no_grad():
            for ad in net.adapters.values():
                nn.init.normal_(ad.lora_up.weight, std=0.05, generator=torch.Generator().manual_seed(1))
        net.attach(m)
        outs.append((forward(m), net))
    (qv, qa), net = outs[0]
    (rv, ra), _ = outs[1]
    assert torch.allclose(qv, rv, atol=1e-5) and torch.allclose(qa, ra, atol=1e-5)
    assert not torch.allclose(qv, base[0], atol=1e-4)  # the LoRA does act
    with pytest.raises(ValueError, match="Cannot merge"):
        net.merge()


def test_block_swap_with_quantized_blocks_cpu_both_sides(files):
    _, gguf, _ = files
    model = load_fusion(gguf, dtype=torch.float32, config=CFG)
    want = forward(model)
    calls = []
    swapper = BlockSwapper(model, device="cpu", resident=1)
    inner = model.block_hook
    model.block_hook = lambda i: (calls.append(i), inner(i))
    try:
        got = forward(model)
    finally:
        swapper.detach()
    assert torch.equal(want[0], got[0]) and torch.equal(want[1], got[1])
    assert calls == list(range(CFG.video.num_layers))
    assert swapper._masters and all(isinstance(t, QuantizedWeight) for i in swapper._masters
                                    for t, _ in swapper._masters[i] if t.dtype == torch.uint8)
    w = model.video_model.blocks[1].ffn[0].weight
    assert isinstance(w, QuantizedWeight) and w.format_name == "Q4_K"


def test_scaled_mm_dispatch_rules():
    ok = dict(device_type="cuda", capability=(8, 9), weight_dtype=torch.float8_e4m3fn, rows=32, in_features=256,
              out_features=512)
    assert fc.use_scaled_mm(**ok)
    assert fc.use_scaled_mm(**{**ok, "capability": (9, 0)})
    assert not fc.use_scaled_mm(**{**ok, "capability": (8, 6)})  # Ampere: upcast instead
    assert not fc.use_scaled_mm(**{**ok, "device_type": "cpu", "capability": None})
    assert not fc.use_scaled_mm(**{**ok, "weight_dtype": torch.float8_e5m2})
    assert fc.use_scaled_mm(**{**ok, "rows": 31})  # the kernel does not constrain M (2 x 15,004 tokens at 704²)
    assert not fc.use_scaled_mm(**{**ok, "rows": 0})
    assert not fc.use_scaled_mm(**{**ok, "in_features": 200})
    assert not fc.use_scaled_mm(**{**ok, "has_scaled_mm": False})
    assert not fc.fp8_compute_supported("cpu")


def test_fp8_compute_falls_back_on_cpu(files, tmp_path):
    src, _, _ = files
    from safetensors.torch import load_file

    pair = write_kijai_files(load_file(src), tmp_path, fp8_scaled=True)
    model = load_fusion(pair, dtype=torch.float32, config=CFG)
    want = forward(model)
    fast = load_fusion(pair, dtype=torch.float32, config=CFG, fp8_compute=True)
    n = sum("forward" in m.__dict__ for m in fast.modules())
    assert n > 0
    got = forward(fast)
    assert torch.equal(want[0], got[0]) and torch.equal(want[1], got[1])
    fc.disable_fp8_compute(fast)
    assert not any("forward" in m.__dict__ for m in fast.modules())


def test_default_bf16_and_fp32_loads_are_unchanged(files, tmp_path):
    src, _, _ = files
    raw = ck.load_state_dict(src)
    for dtype in (torch.bfloat16, torch.float32):
        model = load_fusion(src, dtype=dtype, config=CFG)
        old = OviFusionModel(CFG, device="meta")
        ck.load_strict(old, {k: v.to(dtype) for k, v in raw.items()}, path=src, what="x")  # the previous path
        new_sd, old_sd = model.state_dict(), old.state_dict()
        assert set(new_sd) == set(old_sd)
        for k in old_sd:
            assert new_sd[k].dtype == dtype and torch.equal(new_sd[k], old_sd[k]), k
        assert [p.requires_grad for p in model.parameters()] == [p.requires_grad for p in old.parameters()]
        assert not any(isinstance(p, QuantizedWeight) for p in model.parameters())
    # the official fp8 layout still loads as plain float8 tensors
    f8 = str(tmp_path / "model_fp8_e4m3fn.safetensors")
    save_fusion(load_fusion(src, dtype=torch.float32, config=CFG), f8, dtype=torch.float8_e4m3fn)
    m8 = load_fusion(f8, dtype=torch.bfloat16, config=CFG)
    w = m8.video_model.blocks[0].self_attn.q.weight
    assert type(w) is nn.Parameter and w.dtype == torch.float8_e4m3fn and m8.compute_dtype == torch.bfloat16
