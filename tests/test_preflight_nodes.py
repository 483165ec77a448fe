"""The node path refuses what the CLI refuses, with the same messages, before any component is placed on its
device (``nodes._patcher.use``) or a LoRA applied: audio from core LoadAudio (NaN, one sample, no sample rate),
frames from LoadVideo/IMAGE (a size the model cannot take), LoRA files and strengths, sampler values, saved latents.
Loads are counted for real (tests/load_spy.py); each class has a control that does load."""

import math
import os
import shutil

import load_spy
import node_utils as nu
import pytest
import torch

from nodes import NODE_CLASS_MAPPINGS as N

SAMPLER = dict(aspect="1:1 square (960x960)", width=960, height=960, seconds="auto", steps=1, solver="unipc",
               shift=5.0, video_cfg=4.0, audio_cfg=3.0, slg_layer=-1, seed=1)


@pytest.fixture(scope="module")
def comps(tmp_path_factory):
    models = nu.tiny_models_dir(tmp_path_factory, keys=("fusion", "wan-vae", "mmaudio-vae", "bigvgan"))
    os.makedirs(models / "loras")
    out = tmp_path_factory.mktemp("output")
    mp = pytest.MonkeyPatch()
    mp.setenv("OVI_MODELS_DIR", str(models))
    mp.setenv("OVI_OUTPUT_DIR", str(out))
    with torch.inference_mode():
        model, vae, avae = nu.load_fusion_model(), nu.load_video_vae(), nu.load_audio_vae()
    yield {"model": model, "vae": vae, "avae": avae, "models": models, "out": out}
    mp.undo()


@pytest.fixture
def loads(monkeypatch):
    return load_spy.install(monkeypatch)


def _audio(seconds=1.0, rate=44100, channels=2, fill=None):
    t = torch.arange(max(1, int(seconds * rate))) / rate
    w = torch.stack([0.3 * torch.sin(2 * math.pi * (200 + 50 * c) * t) for c in range(channels)])
    if fill is not None:
        w = torch.full_like(w, fill)
    return {"waveform": w[None], "sample_rate": rate}  # [1, C, T], like core LoadAudio


def _audio_guide(comps, audio, offset=0.0):
    with torch.inference_mode():
        return N["OviAudioGuide"]().encode(comps["avae"], comps["model"], audio, offset=offset, mode="replace",
                                           until=1.0, seconds="auto")


def test_audio_guide_refuses_before_the_audio_vae_loads(comps, loads):
    cases = {
        "NaN samples": (_audio(fill=float("nan")), "NaN or infinite"),
        "one sample": ({"waveform": torch.zeros(1, 1, 1), "sample_rate": 16000}, "covers no whole audio latent"),
        "no sample rate": (dict(_audio(), sample_rate=0), "sample_rate must be a positive"),
        "NaN sample rate": (dict(_audio(), sample_rate=float("nan")), "sample_rate must be a positive"),
        "not an AUDIO": (torch.zeros(1, 16000), "ComfyUI AUDIO"),
    }
    for label, (audio, message) in cases.items():
        with pytest.raises(ValueError, match=message):
            _audio_guide(comps, audio)
        assert sum(loads.values()) == 0, (label, dict(loads))
    # a sound longer than one clip is kept unencoded for chained windows (issue #23): nothing loads here either
    (long,) = _audio_guide(comps, _audio(seconds=6.0, rate=8000))
    assert long[0].guide is None and sum(loads.values()) == 0, dict(loads)
    (guides,) = _audio_guide(comps, _audio(seconds=0.5, rate=48000, channels=8))  # 8 channels at 48 kHz: mixed
    assert guides[0].guide.stream == "audio" and loads["nodes._patcher.use"] == 1


def test_video_guide_refuses_before_the_video_vae_loads(comps, loads):
    def run(images, fps=24.0):
        with torch.inference_mode():
            return N["OviVideoGuide"]().encode(comps["vae"], comps["model"], fps, "replace", 1.0, "auto",
                                               images=images)

    for images, fps, message in ((torch.rand(3, 8, 800, 3), 24.0, "too small"),
                                 (torch.rand(3, 32, 32, 2), 24.0, r"\[N, H, W, 3\]"),
                                 (torch.rand(3, 32, 32), 24.0, r"\[N, H, W, 3\]"),
                                 (torch.rand(3, 32, 32, 3), float("nan"), "fps must be a finite number of frames per second"),
                                 (torch.rand(3, 32, 32, 3), 0.0, "fps must be a finite number of frames per second")):
        with pytest.raises(ValueError, match=message):
            run(images, fps)
        assert sum(loads.values()) == 0, (tuple(images.shape), fps, dict(loads))
    (guides,) = run(torch.rand(3, 32, 32, 3))
    assert guides[0].guide.stream == "video" and loads["nodes._patcher.use"] == 1


def _lora(path, width, *, up=0.0, alpha=4.0):
    from safetensors.torch import save_file

    k = "video_model.blocks.0.self_attn.q"
    save_file({f"{k}.lora_down.weight": torch.zeros(4, width), f"{k}.lora_up.weight": torch.full((width, 4), up),
               f"{k}.alpha": torch.tensor(alpha)}, str(path))
    return os.path.basename(str(path))


def test_lora_node_refuses_before_applying(comps, loads):
    model, folder = comps["model"], comps["models"] / "loras"
    width = int(model.module.video_model.blocks[0].self_attn.q.weight.shape[1])
    ok = _lora(folder / "ok.safetensors", width)
    cases = {
        "NaN strength": (ok, float("nan"), "strength must be a finite number"),
        "NaN tensors": (_lora(folder / "nan.safetensors", width, up=float("nan")), 1.0, "NaN or infinite"),
        "absurd alpha": (_lora(folder / "alpha.safetensors", width, alpha=1e9), 1.0, "alpha"),
        "another width": (_lora(folder / "wide.safetensors", width + 8), 1.0, "does not fit this fusion model"),
    }
    for label, (name, strength, message) in cases.items():
        with pytest.raises(ValueError, match=message) as e:
            N["OviLoraLoader"]().apply(model, name, strength)
        assert name in str(e.value), (label, str(e.value))
        assert sum(loads.values()) == 0, (label, dict(loads))
    N["OviLoraLoader"]().apply(model, ok, 0.5)
    assert loads["ovi_core.lora.model.lora_model"] == 1


def test_sampler_values_are_refused_before_the_first_frame_is_encoded(comps, loads):
    """The sampler encoded a connected first frame with the VAE, then refused its own values."""
    image = torch.rand(1, 32, 32, 3)
    for bad, message in (({"shift": float("nan")}, "shift"), ({"steps": 0}, "steps"),
                         ({"slg_layer": 99}, "past the model's last block"), ({"video_cfg": float("inf")}, "finite"),
                         ({"seed": -1}, "seed")):
        with torch.inference_mode(), pytest.raises(ValueError, match=message):
            N["OviJointSampler"]().sample(comps["model"], None, **{**SAMPLER, **bad}, image=image,
                                          video_vae=comps["vae"])
        assert sum(loads.values()) == 0, (bad, dict(loads))


def test_load_latents_node_names_a_damaged_file(comps):
    from safetensors.torch import save_file

    bad = comps["out"] / "nan.ovi_latents.safetensors"
    save_file({"video": torch.full((1, 48, 31, 4, 4), float("nan")), "audio": torch.zeros(1, 157, 20)}, str(bad),
              metadata={"ovi.version": "1.1", "ovi.fps": "24"})
    junk = comps["out"] / "junk.ovi_latents.safetensors"
    junk.write_bytes(os.urandom(300))
    for f, message in ((bad, "NaN or infinite"), (junk, "damaged")):
        with pytest.raises(ValueError, match=message) as e:
            N["OviLoadLatents"]().load(f"{f.name} [output]")
        assert f.name in str(e.value)


def test_model_loader_names_a_file_that_is_no_fusion_model_before_loading(comps, loads):
    shutil.copy(comps["models"] / "vae" / "v1-16.pth", comps["models"] / "diffusion_models" / "v1-16.pth")
    with pytest.raises(ValueError, match=r"v1-16\.pth.*is not an Ovi fusion model.*MMAudio"):
        N["OviFusionModelLoader"]().load(model="v1-16.pth", precision="fp32", attention="auto", memory_mode="offload",
                                         blocks_on_gpu=10, audio_model="none", version="auto")
    assert sum(loads.values()) == 0, dict(loads)
