"""What the nodes show and write in a real ComfyUI (issue #13, items 9-14): escaped node text, the training
seed's control widget, where auto-downloads go, workflow metadata in the MP4, `auto` precision, the size the
sampler used, and the queue-time check of ``filename_prefix``. Nodes run under ``torch.inference_mode`` as
ComfyUI's executor runs them; ComfyUI's ``server`` / ``folder_paths`` modules are stood in for by small fakes
that record what the adapter hands them."""

import html
import json
import os
import shutil
import sys
import types

import pytest
import torch

from nodes import NODE_CLASS_MAPPINGS, _comfy, _runtime
from nodes.loaders import OviFusionModelLoader, OviTextEncoderLoader, OviVideoVAELoader
from nodes.lora import OviTrainLoRA
from nodes.sampling import OviJointSampler, OviTextEncode


class _FakeServer:
    def __init__(self):
        self.sent: list[tuple[str, str]] = []

    def send_progress_text(self, text, node_id, sid=None):
        self.sent.append((node_id, text))


@pytest.fixture
def server(monkeypatch):
    fake = _FakeServer()
    monkeypatch.setitem(sys.modules, "server", types.SimpleNamespace(PromptServer=types.SimpleNamespace(instance=fake)))
    return fake


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    from ovi_core.tiny import write_tiny_weights

    src = tmp_path_factory.mktemp("tiny")
    paths = write_tiny_weights(str(src), version="1.1")
    models = tmp_path_factory.mktemp("models")
    layout = {"fusion": "diffusion_models", "umt5": "text_encoders", "wan-vae": "vae"}
    for key, folder in layout.items():
        os.makedirs(models / folder, exist_ok=True)
        shutil.copy(paths[key], models / folder / os.path.basename(paths[key]))
    shutil.copytree(paths["tokenizer"], models / "text_encoders" / "google" / "umt5-xxl")
    return models


@pytest.fixture
def loaded(tiny_models, monkeypatch):
    monkeypatch.setenv("OVI_MODELS_DIR", str(tiny_models))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with torch.inference_mode():
        (model,) = OviFusionModelLoader().load("model_960x960.safetensors", "auto", "auto", "offload", 10)
        (te,) = OviTextEncoderLoader().load("models_t5_umt5-xxl-enc-bf16.pth", "auto", "auto", "default", "offload")
    return model, te


# ----------------------------------------------------------------------------------------------
# 9: node text is shown literally
# ----------------------------------------------------------------------------------------------


def test_node_text_is_html_escaped(server):
    text = "He says <S>hi<E> & <b>bold</b>\nsecond line"
    _comfy.show_text("7", text)
    ((node, sent),) = server.sent
    assert node == "7"
    assert "<" not in sent and ">" not in sent
    assert html.unescape(sent) == text  # nothing lost, newlines kept (the frontend turns them into line breaks)


def test_prompt_warnings_reach_the_node_escaped_in_one_text(server, loaded):
    _, te = loaded
    prompt = "He says <S>hello and <S>again<E> Audio: a voice."
    with torch.inference_mode():
        out = OviTextEncode().encode(te, prompt, "", "", unique_id="5")
    warnings = out["ui"]["text"]
    assert len(warnings) >= 2  # nested <S> and an unclosed <S>
    ((node, sent),) = server.sent  # one message: each one replaces the node's previous text
    assert node == "5" and "<S>" not in sent and "&lt;S&gt;" in sent
    assert html.unescape(sent).splitlines() == [f"Ovi prompt warning: {w}" for w in warnings]


# ----------------------------------------------------------------------------------------------
# 10: the training seed has ComfyUI's control widget
# ----------------------------------------------------------------------------------------------


def test_training_seed_has_control_after_generate():
    opts = OviTrainLoRA.INPUT_TYPES()["optional"]["seed"][1]
    assert opts["control_after_generate"] is True
    with open(os.path.join(os.path.dirname(__file__), "..", "example_workflows", "ovi_train_lora.json"),
              encoding="utf-8") as f:
        ui = json.load(f)
    node = next(n for n in ui["nodes"] if n["type"] == "OviTrainLoRA")
    values = node["widgets_values"]
    seed_at = values.index(42)
    assert values[seed_at + 1] == "fixed"  # the frontend's control widget value, right after the seed


# ----------------------------------------------------------------------------------------------
# 11: auto-download lands where README says, with a clean message
# ----------------------------------------------------------------------------------------------


def test_auto_download_goes_to_models_diffusion_models(tmp_path, monkeypatch):
    # ComfyUI lists the legacy models/unet first for "diffusion_models"
    dirs = {"diffusion_models": [str(tmp_path / "unet"), str(tmp_path / "diffusion_models")],
            "vae": [str(tmp_path / "vae")], "text_encoders": [str(tmp_path / "text_encoders"), str(tmp_path / "clip")]}
    fake = types.SimpleNamespace(get_folder_paths=lambda name: dirs[name])
    monkeypatch.setitem(sys.modules, "folder_paths", fake)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert _comfy.download_dir("diffusion_models") == str(tmp_path / "diffusion_models")
    assert _comfy.download_dir("text_encoders") == str(tmp_path / "text_encoders")
    assert _comfy.download_dir("vae") == str(tmp_path / "vae")
    with pytest.raises(FileNotFoundError) as e:
        _runtime._download("diffusion_models", "1.1")
    msg = str(e.value)
    assert os.path.join(str(tmp_path / "diffusion_models"), "model_960x960.safetensors") in msg
    assert "unet" not in msg


def test_download_error_message_ends_cleanly(tmp_path, monkeypatch):
    import huggingface_hub

    from ovi_core.io.weights import FUSION_FILES, download_file

    def fail(**_):
        raise OSError("Cannot reach the Hub. Please make sure your Internet connection is on.")

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fail)
    with pytest.raises(FileNotFoundError) as e:
        download_file(FUSION_FILES["1.1"], str(tmp_path), flatten=True)
    msg = str(e.value)
    assert ".." not in msg and "connection is on. Download it by hand to" in msg


# ----------------------------------------------------------------------------------------------
# 12: the MP4 carries the graph as core SaveVideo's files do
# ----------------------------------------------------------------------------------------------


def _frames_audio():
    frames = torch.rand(5, 32, 32, 3)
    audio = {"waveform": torch.sin(torch.linspace(0, 300, 3400)).view(1, 1, -1) * 0.3, "sample_rate": 16000}
    return frames, audio


def test_save_video_embeds_prompt_and_workflow(tmp_path, monkeypatch):
    import av

    monkeypatch.setenv("OVI_OUTPUT_DIR", str(tmp_path))
    prompt = {"9": {"class_type": "OviSaveVideo", "inputs": {"fps": 24.0, "filename_prefix": "Ovi/t"}}}
    workflow = {"nodes": [{"id": 9, "type": "OviSaveVideo", "widgets_values": [24.0, "Ovi/t <S>x</S>"]}],
                "links": [], "version": 0.4}
    frames, audio = _frames_audio()
    with torch.inference_mode():
        out = NODE_CLASS_MAPPINGS["OviSaveVideo"]().save(frames, 24.0, "Ovi/t", audio=audio, prompt=prompt,
                                                         extra_pnginfo={"workflow": workflow})
    path = out["result"][1]
    with av.open(path) as c:
        meta = dict(c.metadata)
        kinds = {s.type for s in c.streams}
    assert kinds == {"video", "audio"}
    assert json.loads(meta["prompt"]) == prompt and json.loads(meta["workflow"]) == workflow

    plain = NODE_CLASS_MAPPINGS["OviSaveVideo"]().save(frames, 24.0, "Ovi/t", audio=audio)["result"][1]
    with av.open(plain) as c:
        assert "prompt" not in c.metadata and "workflow" not in c.metadata


def test_save_video_respects_disable_metadata(tmp_path, monkeypatch):
    import av

    monkeypatch.setenv("OVI_OUTPUT_DIR", str(tmp_path))
    cli = types.SimpleNamespace(args=types.SimpleNamespace(disable_metadata=True))
    monkeypatch.setitem(sys.modules, "comfy.cli_args", cli)
    frames, audio = _frames_audio()
    path = NODE_CLASS_MAPPINGS["OviSaveVideo"]().save(frames, 24.0, "Ovi/t", audio=audio, prompt={"1": {}},
                                                      extra_pnginfo={"workflow": {}})["result"][1]
    with av.open(path) as c:
        assert "prompt" not in c.metadata and "workflow" not in c.metadata


# ----------------------------------------------------------------------------------------------
# 13: precision "auto" (new nodes), saved values still valid
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls,saved", [(OviFusionModelLoader, ("bf16", "fp16", "fp32", "fp8")),
                                       (OviTextEncoderLoader, ("bf16", "fp32")),
                                       (OviVideoVAELoader, ("bf16", "fp32"))])
def test_precision_defaults_to_auto_and_keeps_saved_values(cls, saved):
    choices, opts = cls.INPUT_TYPES()["required"]["precision"]
    assert opts["default"] == "auto" and "auto" in choices
    assert set(saved) <= set(choices)


def test_auto_precision_is_bf16_on_gpu_and_fp32_on_cpu(loaded):
    assert _runtime.compute_dtype("auto", torch.device("cuda")) == torch.bfloat16
    assert _runtime.compute_dtype("auto", torch.device("cpu")) == torch.float32
    assert _runtime.compute_dtype("bf16", torch.device("cpu")) == torch.bfloat16  # an explicit saved value wins
    model, te = loaded  # loaded with "auto" on this CPU-only machine
    if model.device.type == "cpu":
        assert model.dtype == torch.float32 and te.dtype == torch.float32
        assert {p.dtype for p in model.module.parameters()} == {torch.float32}


# ----------------------------------------------------------------------------------------------
# 14: the sampler says what it made; pipeline warnings reach the node
# ----------------------------------------------------------------------------------------------


def _sample(model, cond, *, seconds="auto", aspect="16:9 landscape (1280x704)", unique_id="6"):
    with torch.inference_mode():
        (lat,) = OviJointSampler().sample(model, cond, aspect, 1280, 704, seconds, 1, "unipc", 5.0, 4.0, 3.0, 11, 103,
                                          unique_id=unique_id)
    return lat


def test_sampler_shows_the_size_it_used(server, loaded):
    from ovi_core import sizes

    model, te = loaded
    with torch.inference_mode():
        cond = OviTextEncode().encode(te, "A cat says <S>hi<E> Audio: a meow.", "", "", model=model)["result"][0]
    server.sent.clear()
    lat = _sample(model, cond)
    h, w = sizes.snap_hw_to_area(704, 1280, area=model.target_area)  # independent of the node's arithmetic
    assert tuple(lat.video.shape[-2:]) == (h // 16, w // 16)
    (node0, before), (node, after) = server.sent  # the plan while sampling, then what the latents are
    frames = sizes.MODEL_SPECS["1.1"].frames
    assert node0 == node == "6"
    assert html.unescape(before).startswith(f"Ovi: sampling {w}x{h}, {frames} frames")
    text = html.unescape(after)
    assert text.startswith(f"Ovi: {w}x{h}, {frames} frames ({frames / 24:.2f} s at 24 fps)")
    assert "asked 1280x704" in text and "warning" not in text


def test_draft_size_is_kept_below_the_trained_area_and_says_so(server, loaded):
    model, te = loaded  # the tiny model's trained area is 64x64
    with torch.inference_mode():
        cond = OviTextEncode().encode(te, "A cat says <S>hi<E> Audio: a meow.", "", "", model=model)["result"][0]
        server.sent.clear()
        (lat,) = OviJointSampler().sample(model, cond, "draft custom (width x height, not scaled up)", 64, 32, "auto",
                                          1, "unipc", 5.0, 4.0, 3.0, 11, 103, unique_id="6")
    assert tuple(lat.video.shape[-2:]) == (2, 4)  # 32x64 pixels, not rescaled up to 64x64
    text = html.unescape(server.sent[-1][1])
    assert text.startswith("Ovi: 64x32") and "draft size 64x32 is below the model's trained area" in text


def test_sampler_sends_a_latent_preview_each_step(server, loaded, monkeypatch):
    """With ComfyUI's previewer on (faked here: its modules are absent in tests), every step's progress update
    carries a preview image made from the step's clean-video prediction."""
    model, te = loaded
    frames, updates = [], []

    class Previewer:
        def decode_latent_to_preview_image(self, fmt, x0):
            frames.append(tuple(x0.shape))
            return (fmt, "img", 512)

    class Bar:
        def __init__(self, total, node_id=None):
            self.node_id = node_id

        def update_absolute(self, value, total=None, preview=None):
            updates.append((self.node_id, value, total, preview))

    monkeypatch.setitem(sys.modules, "comfy", types.SimpleNamespace())
    monkeypatch.setitem(sys.modules, "comfy.latent_formats", types.SimpleNamespace(Wan22=object))
    monkeypatch.setitem(sys.modules, "comfy.utils", types.SimpleNamespace(ProgressBar=Bar))
    monkeypatch.setitem(sys.modules, "latent_preview", types.SimpleNamespace(get_previewer=lambda d, f: Previewer()))
    with torch.inference_mode():
        cond = OviTextEncode().encode(te, "A cat says <S>hi<E> Audio: a meow.", "", "", model=model)["result"][0]
        (lat,) = OviJointSampler().sample(model, cond, "1:1 square (960x960)", 960, 960, "auto", 2, "unipc", 5.0,
                                          4.0, 3.0, 11, 103, unique_id="6")
    assert updates == [("6", 1, 2, ("JPEG", "img", 512)), ("6", 2, 2, ("JPEG", "img", 512))]
    assert frames == [(1, 48, 1, *lat.video.shape[-2:])] * 2


def test_ten_seconds_with_a_five_second_model_warns_on_the_node(server, loaded):
    model, te = loaded
    with torch.inference_mode():
        cond = OviTextEncode().encode(te, "A cat says <S>hi<E> Audio: a meow.", "", "", model=model)["result"][0]
    server.sent.clear()
    lat = _sample(model, cond, seconds="10")
    (_, before), (_, after) = server.sent
    warning = "Ovi warning: 10 s with a 5 s model; model_960x960_10s.safetensors is trained for 10 s."
    assert html.unescape(before).splitlines()[1] == warning  # seen before the long sampling starts
    lines = html.unescape(after).splitlines()
    frames = (lat.video.shape[2] - 1) * 4 + 1
    assert lines[0].startswith("Ovi: ") and f"{frames} frames" in lines[0] and frames > 200
    assert lines[1] == warning
    assert OviJointSampler.clip_version("1.1", "10") == ("1.1-10s", [lines[1][len("Ovi warning: "):]])


# ----------------------------------------------------------------------------------------------
# filename_prefix is refused at queue time (VALIDATE_INPUTS), not after sampling
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("node", ["OviSaveVideo", "OviSaveLatents"])
def test_filename_prefix_validated_at_queue_time(node, tmp_path, monkeypatch):
    out = tmp_path / "output"
    out.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, out / "link")
    monkeypatch.setenv("OVI_OUTPUT_DIR", str(out))
    validate = NODE_CLASS_MAPPINGS[node].VALIDATE_INPUTS
    assert validate(filename_prefix="Ovi/clip") is True
    assert validate(filename_prefix=None) is True  # linked: checked again when writing
    for bad in ("../evil", "/abs/x", "a/../../b", "C:/x", "link/x"):
        msg = validate(filename_prefix=bad)
        assert isinstance(msg, str) and "filename_prefix" in msg, (bad, msg)
    with pytest.raises(ValueError, match="symbolic link"):
        _comfy.save_path("link/x", str(out))  # the same check when the file is written


# ----------------------------------------------------------------------------------------------
# 15: the video decoder says on the node when it tiled
# ----------------------------------------------------------------------------------------------


def test_video_decode_says_when_it_tiled(server, tiny_models, monkeypatch):
    from nodes.decode import OviDecodeVideo
    from nodes.loaders import OviVideoVAELoader
    from ovi_core.io.latents import AVLatents

    monkeypatch.setenv("OVI_MODELS_DIR", str(tiny_models))
    lat = AVLatents(video=torch.randn(1, 48, 2, 16, 16), audio=torch.randn(1, 8, 20))
    with torch.inference_mode():
        (vae,) = OviVideoVAELoader().load("Wan2.2_VAE.pth", "auto", "offload")
        OviDecodeVideo().decode(vae, lat, tile_size=0, unique_id="7")
        assert server.sent == []  # untiled: nothing to say
        OviDecodeVideo().decode(vae, lat, tile_size=8, unique_id="7")
    ((node, text),) = server.sent
    assert node == "7" and "til" in html.unescape(text)
