"""LoRA layers on the tiny fusion DiT: targets, zero strength, merge/unmerge, files, stacking, views."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from ovi_core.lora.files import apply_lora, load_lora
from ovi_core.lora.model import lora_info, lora_model
from ovi_core.lora.network import LoRANetwork
from ovi_core.lora.targets import LoRAConfig, expand_targets, find_target_modules
from ovi_core.model.config import TINY
from ovi_core.model.loader import random_fusion


@pytest.fixture(scope="module")
def model():
    return random_fusion(TINY, seed=0).float().eval()


def _inputs(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(1, 48, 3, 4, 4, generator=g)
    a = torch.randn(1, 15, 20, generator=g)
    ctx = [torch.randn(5, 32, generator=g)]
    return v, a, torch.tensor([700.0]), ctx, ctx


def _run(m, inp):
    with torch.no_grad():
        return m(*inp)


def _randomize(net: LoRANetwork, seed: int, scale: float = 0.05) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)


def test_targets_cover_attention_only(model):
    names = find_target_modules(model)
    assert len(names) == 2 * TINY.video.num_layers * 10
    assert all(".ffn." not in n for n in names)
    fusion_video = find_target_modules(model, targets="fusion", towers="video")
    assert sorted(fusion_video) == [f"video_model.blocks.{i}.cross_attn.{p}_fusion" for i in range(2) for p in "kv"]
    assert expand_targets("self_attn.q,fusion") == ("self_attn.q", "cross_attn.k_fusion", "cross_attn.v_fusion")
    with pytest.raises(ValueError, match="Unknown LoRA target"):
        expand_targets(["ffn"])
    with pytest.raises(ValueError, match="tower"):
        LoRAConfig(towers=("text",))


def test_fresh_and_zero_strength_lora_leave_outputs_bit_identical(model):
    inp = _inputs()
    ref = _run(model, inp)
    net = apply_lora(model, LoRAConfig(rank=4), seed=0)
    try:
        out = _run(model, inp)  # lora_up starts at zero
        assert all(torch.equal(x, y) for x, y in zip(ref, out, strict=True))
        _randomize(net, 3)
        changed = _run(model, inp)
        assert not torch.equal(changed[0], ref[0]) and not torch.equal(changed[1], ref[1])
        net.strength = 0.0
        out0 = _run(model, inp)
        assert all(torch.equal(x, y) for x, y in zip(ref, out0, strict=True))
    finally:
        net.detach()
    assert all(torch.equal(x, y) for x, y in zip(ref, _run(model, inp), strict=True))


def test_merge_equals_unmerged_and_unmerge_restores(model):
    inp = _inputs()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    net = apply_lora(model, LoRAConfig(rank=4, alpha=2.0), seed=0)
    _randomize(net, 5)
    net.strength = 0.7
    try:
        hooked = _run(model, inp)
        net.merge()
        assert net.merged
        changed = [k for k in before if not torch.equal(before[k], model.state_dict()[k])]
        assert changed and all(k.endswith(".weight") and (".self_attn." in k or ".cross_attn." in k) for k in changed)
        merged = _run(model, inp)
        for x, y in zip(hooked, merged, strict=True):
            torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5)
        net.unmerge()
        for k, v in model.state_dict().items():
            torch.testing.assert_close(v, before[k], rtol=0, atol=1e-6)
    finally:
        net.detach()


def test_delta_matches_manual_weight_update(model):
    """The hook adds strength * alpha/rank * up @ down @ x: compare with a hand-edited weight copy."""
    net = LoRANetwork.for_model(model, LoRAConfig(rank=3, alpha=6.0, targets=("self_attn.q",), towers="audio"))
    _randomize(net, 9)
    lin = dict(model.named_modules())["audio_model.blocks.1.self_attn.q"]
    x = torch.randn(4, lin.in_features)
    ad = net.adapter("audio_model.blocks.1.self_attn.q")
    expect = torch.nn.functional.linear(x, lin.weight + 0.5 * 2.0 * ad.lora_up.weight @ ad.lora_down.weight, lin.bias)
    net.strength = 0.5
    net.attach(model)
    try:
        torch.testing.assert_close(lin(x), expect, rtol=1e-5, atol=1e-6)
    finally:
        net.detach()


def test_save_load_roundtrip_strength_and_stacking(model, tmp_path):
    inp = _inputs()
    ref = _run(model, inp)
    a = apply_lora(model, LoRAConfig(rank=4), seed=0)
    _randomize(a, 11)
    a.strength = 0.6
    out_a = _run(model, inp)
    pa = a.save(tmp_path / "a.safetensors", base_version="1.0")
    a.detach()
    b = apply_lora(model, LoRAConfig(rank=2, targets=("fusion",)), seed=1)
    _randomize(b, 12)
    pb = b.save(tmp_path / "b.safetensors", base_version="1.0")
    b.detach()

    sd = load_file(pa)
    k = "video_model.blocks.0.self_attn.q"
    assert sd[f"{k}.lora_down.weight"].shape == (4, 64) and sd[f"{k}.lora_up.weight"].shape == (64, 4)
    assert sd[f"{k}.alpha"].dtype == torch.float32 and float(sd[f"{k}.alpha"]) == 4.0
    info = lora_info(pa)
    assert info.rank == 4 and info.layers == 40 and info.base_version == "1.0"
    assert info.metadata["ovi.lora.targets"].split(",")[0] == "self_attn.q"

    la = load_lora(model, pa, strength=0.6)
    try:
        for x, y in zip(out_a, _run(model, inp), strict=True):
            torch.testing.assert_close(x, y, rtol=0, atol=0)
        lb = load_lora(model, pb, strength=1.0)
        stacked = _run(model, inp)
        assert not torch.equal(stacked[0], out_a[0])
        la.merge()
        lb.merge()
        for x, y in zip(stacked, _run(model, inp), strict=True):
            torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5)
        lb.detach()
    finally:
        la.detach()
    for x, y in zip(ref, _run(model, inp), strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-5)


def test_peft_names_and_prefix_are_accepted(model, tmp_path):
    net = LoRANetwork.for_model(model, LoRAConfig(rank=2, targets=("cross_attn.o",)))
    _randomize(net, 2)
    sd = net.lora_state_dict()
    peft = {}
    for k, v in sd.items():
        if k.endswith(".alpha"):
            continue
        k = k.replace("lora_down", "lora_A").replace("lora_up", "lora_B")
        peft["diffusion_model." + k] = v
    save_file(peft, str(tmp_path / "peft.safetensors"))
    loaded = load_lora(model, tmp_path / "peft.safetensors")
    try:
        assert sorted(loaded.module_names()) == sorted(net.module_names())
        for n in net.module_names():
            assert torch.equal(loaded.adapter(n).lora_up.weight, net.adapter(n).lora_up.weight)
            assert loaded.adapter(n).alpha == 2.0  # no alpha stored: alpha = rank
    finally:
        loaded.detach()


def test_wrong_files_are_refused(model, tmp_path):
    save_file({"foo.weight": torch.zeros(2, 2)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(ValueError, match="Not a LoRA file"):
        load_lora(model, tmp_path / "x.safetensors")
    big = {"video_model.blocks.0.self_attn.q.lora_down.weight": torch.zeros(2, 128),
           "video_model.blocks.0.self_attn.q.lora_up.weight": torch.zeros(128, 2)}
    save_file(big, str(tmp_path / "big.safetensors"))
    with pytest.raises(ValueError, match="does not fit"):
        load_lora(model, tmp_path / "big.safetensors")
    ffn = {"video_model.blocks.0.ffn.0.lora_down.weight": torch.zeros(2, 64),
           "video_model.blocks.0.ffn.0.lora_up.weight": torch.zeros(128, 2)}
    save_file(ffn, str(tmp_path / "ffn.safetensors"))
    load_lora(model, tmp_path / "ffn.safetensors").detach()  # FFN LoRAs (Wan's) are accepted since #14
    unet = {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(2, 64),
            "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(64, 2)}
    save_file(unet, str(tmp_path / "sdxl.safetensors"))
    with pytest.raises(ValueError, match="Not a LoRA file for Ovi.*SDXL"):
        load_lora(model, tmp_path / "sdxl.safetensors")


def test_lora_view_is_active_only_through_the_view(model, tmp_path):
    inp = _inputs()
    ref = _run(model, inp)
    net = LoRANetwork.for_model(model, LoRAConfig(rank=4))
    _randomize(net, 21)
    path = net.save(tmp_path / "v.safetensors")
    net.attach(model)
    net.strength = 0.8
    expect = _run(model, inp)
    net.detach()

    view = lora_model(model, path, strength=0.8)
    assert view.video_model is model.video_model  # attribute reads reach the base
    for x, y in zip(expect, _run(view, inp), strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    for x, y in zip(ref, _run(model, inp), strict=True):  # the base alone is untouched
        assert torch.equal(x, y)
    stacked = lora_model(view, path, strength=-0.8)  # stacking the opposite cancels out
    for x, y in zip(ref, _run(stacked, inp), strict=True):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5)
    n_hooks = sum(len(m._forward_hooks) for m in model.modules())
    del view, stacked
    import gc

    gc.collect()
    assert sum(len(m._forward_hooks) for m in model.modules()) < n_hooks  # dropped views remove their hooks
