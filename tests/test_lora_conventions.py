"""Wan2.2-5B LoRA key conventions (ComfyUI, diffusers/PEFT, kohya, ours) on the tiny fusion DiT.

The oracle: the same deltas added by hand into a copy of the model's weights (no hooks), which every
convention must reproduce.
"""

from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import save_file

from ovi_core.lora import keys as K
from ovi_core.lora.files import load_lora
from ovi_core.lora.model import lora_info, lora_model
from ovi_core.model.config import TINY
from ovi_core.model.loader import random_fusion

RANK = 2
ALPHA = 4.0  # scale alpha / rank = 2

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is faster on the shared cores


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


# the published diffusers names of the Wan modules (an independent table, not the library's)
DIFFUSERS = {"self_attn.q": "attn1.to_q", "self_attn.k": "attn1.to_k", "self_attn.v": "attn1.to_v",
             "self_attn.o": "attn1.to_out.0", "cross_attn.q": "attn2.to_q", "cross_attn.k": "attn2.to_k",
             "cross_attn.v": "attn2.to_v", "cross_attn.o": "attn2.to_out.0", "ffn.0": "ffn.net.0.proj",
             "ffn.2": "ffn.net.2", "norm3": "norm2", "modulation": "scale_shift_table",
             "head.head": "proj_out", "head.modulation": "scale_shift_table",
             "time_embedding.0": "condition_embedder.time_embedder.linear_1",
             "text_embedding.2": "condition_embedder.text_embedder.linear_2"}
LINEARS = ["self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o", "cross_attn.q", "cross_attn.k",
           "cross_attn.v", "cross_attn.o", "ffn.0", "ffn.2"]


def wan_lora(model, seed: int = 0) -> dict:
    """A tiny LoRA in Wan module names (tower-less): {(block | None, module): {kind: tensor}}."""
    g = torch.Generator().manual_seed(seed)
    vm = model.video_model
    out: dict = {}

    def pair(lin):
        return {"down": torch.randn(RANK, lin.in_features, generator=g) * 0.1,
                "up": torch.randn(lin.out_features, RANK, generator=g) * 0.1, "alpha": torch.tensor(ALPHA)}

    for i, blk in enumerate(vm.blocks):
        for name in LINEARS:
            lin = blk.get_submodule(name)
            out[(i, name)] = pair(lin)
        out[(i, "self_attn.q")]["diff_b"] = torch.randn(blk.self_attn.q.out_features, generator=g) * 0.1
        out[(i, "norm3")] = {"diff": torch.randn(blk.norm3.weight.shape, generator=g) * 0.1,
                             "diff_b": torch.randn(blk.norm3.bias.shape, generator=g) * 0.1}
        out[(i, "modulation")] = {"diff": torch.randn(blk.modulation.modulation.shape, generator=g) * 0.1}
    out[(None, "head.head")] = pair(vm.head.head)
    out[(None, "time_embedding.0")] = pair(vm.time_embedding[0])
    out[(None, "text_embedding.2")] = {"diff": torch.randn(vm.text_embedding[2].weight.shape, generator=g) * 0.05,
                                       "diff_b": torch.randn(vm.text_embedding[2].bias.shape, generator=g) * 0.1}
    out[(None, "head.modulation")] = {"diff": torch.randn(vm.head.modulation.shape, generator=g) * 0.1}
    return out


def write(lora: dict, convention: str) -> dict[str, torch.Tensor]:
    sd = {}
    for (i, name), parts in lora.items():
        if convention == "diffusers":
            mod = DIFFUSERS[name]
            path = f"transformer.{'' if i is None else f'blocks.{i}.'}{mod}"
            if "down" in parts:
                scale = float(parts["alpha"]) / RANK  # PEFT files carry no alpha: the scale is baked in
                sd[f"{path}.lora_A.weight"] = parts["down"]
                sd[f"{path}.lora_B.weight"] = parts["up"] * scale
            if "diff" in parts:
                sd[f"{path}.diff"] = parts["diff"]
            if "diff_b" in parts:
                sd[f"{path}.lora_B.bias" if "down" in parts else f"{path}.diff_b"] = parts["diff_b"]
            continue
        wan = f"{'' if i is None else f'blocks.{i}.'}{name}"
        path = {"comfyui": f"diffusion_model.{wan}", "kohya": "lora_unet_" + wan.replace(".", "_"),
                "ovi": f"video_model.{wan}"}[convention]
        if convention == "ovi" and name == "modulation":
            path += ".modulation"
        for kind, t in parts.items():
            suffix = {"down": "lora_down.weight", "up": "lora_up.weight", "alpha": "alpha", "diff": "diff",
                      "diff_b": "diff_b"}[kind]
            sd[f"{path}.{suffix}"] = t
    return sd


def merged_by_hand(model, lora: dict, *, towers=("video_model",), strength: float = 1.0):
    """Oracle: a copy of the model with the deltas added into its weights."""
    m = copy.deepcopy(model)
    with torch.no_grad():
        for tower in towers:
            tm = m.get_submodule(tower)
            for (i, name), parts in lora.items():
                owner = tm.blocks[i] if i is not None else tm
                if name in ("modulation", "head.modulation"):
                    p = owner.modulation.modulation if name == "modulation" else owner.head.modulation
                    p += strength * parts["diff"]
                    continue
                mod = owner.get_submodule(name)
                if mod.weight.shape[0] != (parts["up"].shape[0] if "up" in parts else mod.weight.shape[0]):
                    continue  # does not fit this tower (the audio head)
                if "down" in parts:
                    mod.weight += strength * float(parts["alpha"]) / RANK * parts["up"] @ parts["down"]
                if "diff" in parts:
                    mod.weight += strength * parts["diff"]
                if "diff_b" in parts:
                    mod.bias += strength * parts["diff_b"]
    return m


@pytest.mark.parametrize("convention", ["comfyui", "diffusers", "kohya", "ovi"])
def test_each_convention_has_the_effect_of_the_hand_merged_weights(model, tmp_path, convention):
    lora = wan_lora(model)
    inp = _inputs()
    ref = _run(model, inp)
    expect = _run(merged_by_hand(model, lora, strength=0.7), inp)
    path = tmp_path / f"{convention}.safetensors"
    save_file(write(lora, convention), str(path))
    net = load_lora(model, path, strength=0.7)
    try:
        assert net.report.conventions == (convention,)
        assert net.report.unmatched == {}
        n_params = 2 * 3 + 1  # norm3 weight+bias and modulation per block, head.modulation
        assert len(net.report.params) == n_params
        assert all(n.startswith("video_model.") for n in net.target_names())  # Wan names -> video tower
        got = _run(model, inp)
        for x, y, r in zip(got, expect, ref, strict=True):
            assert not torch.allclose(x, r)  # the LoRA does something
            torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5)
    finally:
        net.detach()
    for x, r in zip(_run(model, inp), ref, strict=True):  # detached: the model is exactly as before
        assert torch.equal(x, r)


def test_key_maps_agree_across_conventions(model):
    lora = wan_lora(model)
    maps = {c: K.map_lora_keys({k: tuple(v.shape) for k, v in write(lora, c).items()})
            for c in ("comfyui", "diffusers", "kohya", "ovi")}
    targets = {c: m.targets for c, m in maps.items()}
    assert len({tuple(t) for t in targets.values()}) == 1, targets
    assert "video_model.blocks.1.ffn.2" in targets["kohya"]
    assert "video_model.blocks.0.modulation.modulation" in targets["kohya"]
    assert "video_model.blocks.0.norm3.bias" in targets["diffusers"]


def test_tower_choice(model, tmp_path):
    lora = wan_lora(model)
    path = tmp_path / "wan.safetensors"
    save_file(write(lora, "comfyui"), str(path))
    inp = _inputs()
    for towers, expect_towers in (("audio", ("audio_model",)), ("both", ("video_model", "audio_model"))):
        expect = _run(merged_by_hand(model, lora, towers=expect_towers), inp)  # (copy before hooks exist)
        net = load_lora(model, path, towers=towers)
        try:
            assert net.report.towers == expect_towers
            # the video head (192 outputs) does not fit the audio head (20): dropped there and reported
            assert not any(n.startswith("audio_model.head.head") for n in net.target_names())
            assert any("audio tower" in why for why in net.report.unmatched.values())
            for x, y in zip(_run(model, inp), expect, strict=True):
                torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5)
        finally:
            net.detach()
    ours = write(lora, "ovi")
    # a file in our naming says its tower: asking for another tower leaves nothing to apply
    with pytest.raises(ValueError, match="Not a LoRA file"):
        K.map_lora_keys({k: tuple(v.shape) for k, v in ours.items()}, towers="audio")
    with pytest.raises(ValueError, match="Unknown tower"):
        K.map_lora_keys({k: tuple(v.shape) for k, v in ours.items()}, towers="text")


def test_unmatched_keys_are_reported_and_the_rest_applies(model, tmp_path):
    sd = write(wan_lora(model), "comfyui")
    sd["diffusion_model.blocks.0.cross_attn.k_img.lora_down.weight"] = torch.zeros(RANK, 64)
    sd["diffusion_model.img_emb.proj.1.lora_down.weight"] = torch.zeros(RANK, 64)
    sd["diffusion_model.blocks.0.ffn.0.hada_w1_a"] = torch.zeros(RANK, 64)
    save_file(sd, str(tmp_path / "x.safetensors"))
    net = load_lora(model, tmp_path / "x.safetensors")
    try:
        assert set(net.report.unmatched) == {"diffusion_model.blocks.0.cross_attn.k_img.lora_down.weight",
                                             "diffusion_model.img_emb.proj.1.lora_down.weight",
                                             "diffusion_model.blocks.0.ffn.0.hada_w1_a"}
        assert len(net.report.matched) == len(sd) - 3
    finally:
        net.detach()
    info = lora_info(tmp_path / "x.safetensors")
    assert info.conventions == ("comfyui",) and "ffn.0" in info.targets and len(info.unmatched) == 3


def test_lora_of_another_architecture_is_refused_clearly(model, tmp_path):
    # Wan 14B layout: 40 blocks of width 5120
    big = {}
    for i in (0, 39):
        big[f"diffusion_model.blocks.{i}.self_attn.q.lora_down.weight"] = torch.zeros(RANK, 5120)
        big[f"diffusion_model.blocks.{i}.self_attn.q.lora_up.weight"] = torch.zeros(5120, RANK)
    save_file(big, str(tmp_path / "wan14b.safetensors"))
    with pytest.raises(ValueError, match=r"does not fit.*5120.*Wan 14B"):
        load_lora(model, tmp_path / "wan14b.safetensors")
    flux = {"lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight": torch.zeros(RANK, 64),
            "lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight": torch.zeros(64, RANK)}
    save_file(flux, str(tmp_path / "flux.safetensors"))
    with pytest.raises(ValueError, match="Flux"):
        load_lora(model, tmp_path / "flux.safetensors")
    half = {"diffusion_model.blocks.0.self_attn.q.lora_down.weight": torch.zeros(RANK, 64)}
    save_file(half, str(tmp_path / "half.safetensors"))
    with pytest.raises(ValueError, match="incomplete"):
        load_lora(model, tmp_path / "half.safetensors")


def test_view_merge_and_roundtrip_with_deltas(model, tmp_path):
    lora = wan_lora(model, seed=3)
    path = tmp_path / "wan.safetensors"
    save_file(write(lora, "kohya"), str(path))
    inp = _inputs()
    ref = _run(model, inp)
    before = {n: p.clone() for n, p in model.named_parameters()}
    expect = _run(merged_by_hand(model, lora, strength=0.5), inp)
    view = lora_model(model, path, strength=0.5)
    for x, y in zip(_run(view, inp), expect, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5)
    for x, r in zip(_run(model, inp), ref, strict=True):  # the shared base: no LoRA, weights untouched
        assert torch.equal(x, r)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    del view

    net = load_lora(model, path, strength=0.5)
    try:
        net.merge()
        for x, y in zip(_run(model, inp), expect, strict=True):
            torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5)
        net.unmerge()
        # our own file format carries the deltas too
        saved = net.save(tmp_path / "ours.safetensors")
    finally:
        net.detach()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p, before[n], rtol=0, atol=1e-6)
    again = load_lora(model, saved, strength=0.5)
    try:
        assert again.report.conventions == ("ovi",)
        for x, y in zip(_run(model, inp), expect, strict=True):
            torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5)
    finally:
        again.detach()
