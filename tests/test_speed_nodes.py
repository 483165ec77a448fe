"""Node inputs of #14: OviJointSampler preset / CFG reuse / step cache, OviLoraLoader towers (Wan LoRAs)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from ovi_core.sampling.av import sample_av
from ovi_core.sampling.settings import SamplingSettings
from ovi_core.text.conditioning import Conditioning

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    (tmp_path / "models" / "loras").mkdir(parents=True)
    monkeypatch.setenv("OVI_MODELS_DIR", str(tmp_path / "models"))
    return tmp_path


def _handle(path: str):
    from nodes._types import OviModel
    from ovi_core.model.loader import load_fusion

    module = load_fusion(path, device="cpu", dtype=torch.float32)
    return OviModel(module=module, device=torch.device("cpu"), dtype=torch.float32, memory_mode="gpu", path=path,
                    version="1.0", target_area=64 * 64)


def _cond():
    from nodes._types import OviConditioning

    g = torch.Generator().manual_seed(0)
    c = Conditioning(positive=torch.randn(6, 32, generator=g), video_negative=torch.randn(4, 32, generator=g),
                     audio_negative=torch.randn(5, 32, generator=g), prompt="x")
    return OviConditioning(cond=c, version="1.0")


SAMPLER = dict(aspect="1:1 square (960x960)", width=64, height=64, seconds="auto", steps=8, solver="unipc",
               shift=5.0, video_cfg=4.0, audio_cfg=3.0, slg_layer=1, seed=7)


def test_sampler_speed_inputs(dirs):
    from train_utils import write_tiny_model

    from nodes.sampling import OviJointSampler

    opt = OviJointSampler.INPUT_TYPES()["optional"]
    for name in ("preset", "cfg_reuse_refresh", "cfg_reuse_start", "cfg_reuse_end", "cfg_reuse_towers",
                 "cfg_reuse_mode", "step_cache_threshold"):
        assert opt[name][1]["tooltip"]
    with torch.inference_mode():
        handle = _handle(write_tiny_model(str(dirs / "tiny.safetensors")))
        node = OviJointSampler()
        (dense,) = node.sample(handle, _cond(), **SAMPLER)
        (off,) = node.sample(handle, _cond(), **SAMPLER, preset="default", cfg_reuse_refresh=0,
                             step_cache_threshold=0.0)
        (reuse,) = node.sample(handle, _cond(), **SAMPLER, cfg_reuse_refresh=2, cfg_reuse_start=0.25,
                               cfg_reuse_end=1.0)
        (fast,) = node.sample(handle, _cond(), **SAMPLER, preset="fast")
        ref = sample_av(handle.module, _cond().cond, height=64, width=64,
                        settings=SamplingSettings(steps=8, slg_layer=1, seed=7))
    assert torch.equal(dense.video, ref.video) and torch.equal(off.video, ref.video)
    assert dense.stats["forwards"] == 16
    assert reuse.stats["cfg_reused"] == 3 and reuse.stats["forwards"] == 13  # steps 3, 5, 7 reuse
    assert fast.stats["forwards"] == 6  # 6 steps, CFG 1: one forward each


def test_lora_loader_towers_with_a_wan_lora(dirs):
    from train_utils import write_tiny_model

    from nodes.lora import OviLoraLoader

    g = torch.Generator().manual_seed(1)
    sd = {"diffusion_model.blocks.0.self_attn.q.lora_down.weight": torch.randn(2, 64, generator=g),
          "diffusion_model.blocks.0.self_attn.q.lora_up.weight": torch.randn(64, 2, generator=g),
          "diffusion_model.blocks.1.norm3.diff": torch.randn(64, generator=g),
          "diffusion_model.blocks.1.modulation.diff": torch.randn(1, 6, 64, generator=g) * 0.1}
    save_file(sd, str(dirs / "models" / "loras" / "wan.safetensors"))
    g = torch.Generator().manual_seed(0)
    ctx = [torch.randn(5, 32, generator=g)]
    inp = (torch.randn(1, 48, 3, 4, 4, generator=g), torch.randn(1, 15, 20, generator=g), torch.tensor([600.0]),
           ctx, ctx)
    assert OviLoraLoader.INPUT_TYPES()["optional"]["towers"][1]["tooltip"]
    with torch.inference_mode():  # as ComfyUI runs nodes
        handle = _handle(write_tiny_model(str(dirs / "tiny.safetensors")))
        ref = handle.module(*inp)
        outs = {}
        for towers in ("auto", "video", "audio", "both"):
            (m,) = OviLoraLoader().apply(handle, "wan.safetensors", 1.0, towers=towers)
            outs[towers] = m.module(*inp)
        again = handle.module(*inp)
    assert all(torch.equal(a, b) for a, b in zip(ref, again, strict=True))  # the shared base is untouched
    assert torch.equal(outs["auto"][0], outs["video"][0])  # Wan names go to the video tower by default
    for t in ("video", "audio", "both"):
        assert not torch.equal(outs[t][0], ref[0])
    assert not torch.equal(outs["audio"][0], outs["both"][0])
    # also outside inference mode, on a base loaded under it
    with torch.inference_mode():
        (m,) = OviLoraLoader().apply(handle, "wan.safetensors", 1.0, towers="video")
    with torch.no_grad():
        out = m.module(*inp)
    torch.testing.assert_close(out[0], outs["video"][0])
