"""Node contracts (INPUT_TYPES / RETURN_TYPES / FUNCTION) and the ComfyUI adapter's fallbacks, without ComfyUI."""

import ast
import inspect
import os

import pytest
import torch

from nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, _comfy, _runtime
from nodes.sampling import OviJointSampler, default_audio_rope_scale

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPECTED_IDS = {
    "OviFusionModelLoader", "OviTextEncoderLoader", "OviVideoVAELoader", "OviAudioVAELoader", "OviTextEncode",
    "OviJointSampler", "OviDecodeVideo", "OviDecodeAudio", "OviSaveVideo", "OviSaveLatents", "OviLoadLatents",
}
WIDGETS = ("INT", "FLOAT", "STRING", "BOOLEAN")
COMFY_TYPES = {"IMAGE", "AUDIO", "VIDEO", "STRING"}
OUR_TYPES = {"OVI_MODEL", "OVI_TEXT_ENCODER", "OVI_VIDEO_VAE", "OVI_AUDIO_VAE", "OVI_CONDITIONING", "OVI_LATENTS",
             "OVI_GUIDES", "OVI_REFERENCES"}
GUIDE_IDS = {"OviAudioGuide", "OviVideoGuide", "OviRedoGuide", "OviReference"}
NATIVE_IDS = {"OviEmptyLatentAV", "OviNativeGuider", "OviNativeSigmas", "OviConditioningToNative", "OviModelToNative",
              "OviLatentsToNative", "OviLatentsFromNative", "OviNativeImageToAV", "OviNativeDecodeAudio"}
NATIVE_TYPES = {"LATENT", "MODEL", "CONDITIONING", "GUIDER", "SIGMAS"}  # core types of the native path (issue #21)


def test_node_ids_are_the_shipped_set():
    assert set(NODE_CLASS_MAPPINGS) >= EXPECTED_IDS
    assert set(NODE_DISPLAY_NAME_MAPPINGS) == set(NODE_CLASS_MAPPINGS)
    assert all(k.startswith("Ovi") for k in NODE_CLASS_MAPPINGS)


@pytest.mark.parametrize("name", sorted(EXPECTED_IDS | GUIDE_IDS | NATIVE_IDS))
def test_node_contract(name):
    cls = NODE_CLASS_MAPPINGS[name]
    spec = cls.INPUT_TYPES()
    assert set(spec) <= {"required", "optional", "hidden"} and "required" in spec
    assert cls.CATEGORY.startswith("Ovi")
    assert isinstance(cls.RETURN_TYPES, tuple) and cls.RETURN_TYPES
    assert len(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)) == len(cls.RETURN_TYPES)
    assert all(t in COMFY_TYPES | OUR_TYPES | NATIVE_TYPES for t in cls.RETURN_TYPES), cls.RETURN_TYPES
    fn = getattr(cls, cls.FUNCTION)
    params = inspect.signature(fn).parameters
    for section in ("required", "optional"):
        for inp, s in spec.get(section, {}).items():
            opts = s[1] if len(s) > 1 else {}
            assert opts.get("tooltip"), f"{name}.{inp} has no tooltip"
            assert inp in params, f"{name}.{cls.FUNCTION} does not take {inp}"
            if section == "optional":
                assert params[inp].default is not inspect.Parameter.empty, f"{name}.{inp} needs a default"
            kind = s[0]
            if isinstance(kind, list):
                assert kind, f"{name}.{inp}: empty choice list"
                if "default" in opts:
                    assert opts["default"] in kind
            elif kind in ("INT", "FLOAT"):
                assert opts["min"] <= opts["default"] <= opts["max"]
            else:
                assert kind in WIDGETS or kind in COMFY_TYPES | OUR_TYPES | NATIVE_TYPES, kind
    for hidden in spec.get("hidden", {}):
        assert hidden in params


def test_sampler_defaults_are_official():
    req = OviJointSampler.INPUT_TYPES()["required"]
    got = {k: req[k][1]["default"] for k in ("steps", "solver", "shift", "video_cfg", "audio_cfg", "slg_layer", "seed")}
    assert got == {"steps": 50, "solver": "unipc", "shift": 5.0, "video_cfg": 4.0, "audio_cfg": 3.0, "slg_layer": 11,
                   "seed": 103}
    assert req["seed"][1]["control_after_generate"] is True
    rope = OviJointSampler.INPUT_TYPES()["optional"]["audio_rope_scale"][1]
    assert rope["default"] == pytest.approx(0.19676, abs=1e-5) == default_audio_rope_scale()


def test_seconds_pick_the_clip_length():
    assert OviJointSampler.spec_version("1.1", "auto") == "1.1"
    assert OviJointSampler.spec_version("1.1", "10") == "1.1-10s"
    assert OviJointSampler.spec_version("1.1-10s", "5") == "1.1"
    with pytest.raises(ValueError, match="5 s clips only"):
        OviJointSampler.spec_version("1.0", "10")


def test_only_the_adapter_imports_comfyui():
    offenders = []
    for f in os.listdir(os.path.join(ROOT, "nodes")):
        if not f.endswith(".py") or f == "_comfy.py":
            continue
        tree = ast.parse(open(os.path.join(ROOT, "nodes", f)).read())
        for node in ast.walk(tree):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
            offenders += [f"{f}: {m}" for m in mods
                          if m.split(".")[0] in {"comfy", "comfy_api", "comfy_extras", "folder_paths", "server"}]
    assert not offenders, offenders


def test_adapter_falls_back_without_comfyui(tmp_path, monkeypatch):
    assert not _comfy.has_comfy()
    monkeypatch.setenv("OVI_MODELS_DIR", str(tmp_path / "models"))
    (tmp_path / "models" / "vae" / "sub").mkdir(parents=True)
    (tmp_path / "models" / "vae" / "sub" / "Wan2.2_VAE.pth").write_bytes(b"x")
    (tmp_path / "models" / "vae" / "notes.txt").write_text("not a weight")
    assert _comfy.list_models("vae") == ["sub/Wan2.2_VAE.pth"]
    assert _comfy.model_path("vae", "sub/Wan2.2_VAE.pth") == str(tmp_path / "models" / "vae" / "sub" / "Wan2.2_VAE.pth")
    opts = _runtime.choices("vae", _runtime.VAE_AUTO)
    assert opts == ["sub/Wan2.2_VAE.pth", "auto-download: Wan2.2_VAE.pth"]
    assert _runtime.default_choice(opts, "Wan2.2_VAE.pth") == "sub/Wan2.2_VAE.pth"
    # auto-download uses a local file of the official name without any network
    (tmp_path / "models" / "vae" / "Wan2.2_VAE.pth").write_bytes(b"y")
    assert _runtime.resolve("vae", "auto-download: Wan2.2_VAE.pth", _runtime.VAE_AUTO).endswith("vae/Wan2.2_VAE.pth")
    with pytest.raises(FileNotFoundError, match="diffusion_models"):
        _runtime.resolve("diffusion_models", "missing.safetensors", {})
    _comfy.progress_bar(3)(1, 3)  # no-op
    _comfy.check_interrupt()  # no-op
    assert _comfy.video_output("/x/y.mp4") == "/x/y.mp4"
    assert _comfy.torch_device().type in ("cpu", "cuda")


@pytest.mark.parametrize("prefix", ["../evil", "/abs/path", "a/../../b", "C:/x"])
def test_filename_prefix_cannot_escape_output(tmp_path, prefix):
    with pytest.raises(ValueError, match="filename_prefix"):
        _comfy.save_path(prefix, str(tmp_path))


def test_filename_prefix_counter(tmp_path):
    folder, base, counter = _comfy.save_path("Ovi/clip", str(tmp_path))
    assert (folder, base, counter) == (str(tmp_path / "Ovi"), "clip", 1)
    (tmp_path / "Ovi" / "clip_00001_.mp4").write_bytes(b"")
    assert _comfy.save_path("Ovi/clip", str(tmp_path))[2] == 2


def test_save_video_and_latents_round_trip(tmp_path, monkeypatch):
    import av

    from ovi_core.io.latents import AVLatents

    monkeypatch.setenv("OVI_OUTPUT_DIR", str(tmp_path))
    frames = torch.rand(6, 32, 48, 3)
    audio = {"waveform": torch.sin(torch.linspace(0, 400, 4000)).view(1, 1, -1) * 0.3, "sample_rate": 16000}
    out = NODE_CLASS_MAPPINGS["OviSaveVideo"]().save(frames, 24.0, "Ovi/test", audio=audio)
    assert out["ui"]["images"] == [{"filename": "test_00001_.mp4", "subfolder": "Ovi", "type": "output"}]
    video, path = out["result"]
    assert video == path and os.path.isfile(path)
    with av.open(path) as c:
        kinds = {s.type: s.codec_context.name for s in c.streams}
    assert kinds == {"video": "h264", "audio": "aac"}

    lat = AVLatents(video=torch.randn(1, 48, 2, 2, 3), audio=torch.randn(1, 5, 20), version="1.1", fps=24)
    saved = NODE_CLASS_MAPPINGS["OviSaveLatents"]().save(lat, "Ovi/lat")["result"][0]
    choices = NODE_CLASS_MAPPINGS["OviLoadLatents"].INPUT_TYPES()["required"]["latents_file"][0]
    assert choices == ["Ovi/lat_00001_.ovi_latents.safetensors [output]"]
    (back,) = NODE_CLASS_MAPPINGS["OviLoadLatents"]().load(choices[0])
    assert os.path.isfile(saved) and back.version == "1.1"
    assert torch.equal(back.video, lat.video) and torch.equal(back.audio, lat.audio)
    with pytest.raises(ValueError, match="outside"):
        NODE_CLASS_MAPPINGS["OviLoadLatents"]().load("../x.ovi_latents.safetensors [output]")
