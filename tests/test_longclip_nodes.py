"""OviLongClipSampler and the ovi_long_clip workflow (UI + API), run through the node functions on tiny weights."""

import inspect

import av
import pytest
import test_workflows as tw
import torch

from nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from nodes.longclip import OviLongClipSampler

pytestmark = pytest.mark.usefixtures("one_thread")
PAIR = ("ovi_long_clip.json", "ovi_long_clip_api.json")
tiny_models = tw.tiny_models  # the same tiny ComfyUI models folder as the other workflows
_load, run_api = tw._load, tw.run_api


def test_node_is_registered_with_tooltips_and_optional_defaults():
    assert NODE_CLASS_MAPPINGS["OviLongClipSampler"] is OviLongClipSampler
    assert "OviLongClipSampler" in NODE_DISPLAY_NAME_MAPPINGS
    spec = OviLongClipSampler.INPUT_TYPES()
    params = inspect.signature(OviLongClipSampler.sample).parameters
    for section in ("required", "optional"):
        for name, s in spec[section].items():
            assert s[1].get("tooltip"), name
            assert name in params
            if section == "optional":
                assert params[name].default is not inspect.Parameter.empty, name


def test_long_clip_workflow_is_valid_and_loadable():
    from make_workflows import node_defs

    defs = node_defs()
    tw.test_api_workflow_is_valid(defs, *PAIR)
    tw.test_ui_workflow_is_loadable(defs, *PAIR)
    s = next(n for n in _load(PAIR[1]).values() if n["class_type"] == "OviLongClipSampler")["inputs"]
    assert (s["steps"], s["solver"], s["shift"], s["video_cfg"], s["audio_cfg"], s["slg_layer"], s["seed"]) == (
        50, "unipc", 5.0, 4.0, 3.0, 11, 103)
    # one prompt per window of the clip it asks for (the workflow loads the 5 s model)
    from ovi_core.longclip.plan import plan_windows
    from ovi_core.longclip.prompts import split_prompts

    loader = next(n for n in _load(PAIR[1]).values() if n["class_type"] == "OviFusionModelLoader")["inputs"]
    assert loader["model"].endswith("model_960x960.safetensors")
    assert len(split_prompts(s["prompts"])) == plan_windows(s["seconds"], version="1.1").num_windows == 6


def test_long_clip_workflow_runs_on_tiny_weights(tiny_models, tmp_path, monkeypatch):
    monkeypatch.setenv("OVI_MODELS_DIR", str(tiny_models))
    monkeypatch.setenv("OVI_OUTPUT_DIR", str(tmp_path / "out"))
    api = _load(PAIR[1])
    sampler = next(n for n in api.values() if n["class_type"] == "OviLongClipSampler")
    prompts = sampler["inputs"]["prompts"].split("\n---\n")
    sampler["inputs"].update(steps=1, seconds=8.0, prompts="\n---\n".join(prompts[:2]))  # 2 windows, 2 prompts
    results = run_api(api)
    latents, plan = results["5"]
    assert "2 window(s)" in plan
    assert latents.video.shape[2] == 49 and latents.audio.shape[1] == 251
    frames = results["6"][0]
    assert frames.shape[0] == 193  # round(24 * 8) + 1
    _, path = results["8"]
    with av.open(path) as c:
        assert {s.type: s.codec_context.name for s in c.streams} == {"video": "h264", "audio": "aac"}
        assert sum(1 for _ in c.decode(video=0)) == 193


def test_node_errors_before_any_work(tiny_models):
    node = OviLongClipSampler()
    kw = dict(model=None, text_encoder=None, prompts="a", seconds=8.0, aspect="16:9 landscape (1280x704)",
              width=1280, height=704, steps=1, solver="unipc", shift=5.0, video_cfg=4.0, audio_cfg=3.0, slg_layer=11,
              seed=0)
    with pytest.raises(ValueError, match="video_vae"):
        node.sample(**kw, image=torch.zeros(1, 8, 8, 3))
    with pytest.raises(ValueError, match="audio_vae"):
        node.sample(**kw, audio={"waveform": torch.zeros(1, 1, 16000), "sample_rate": 16000})


def test_long_clip_node_previews_every_step_of_every_window(tiny_models, tmp_path, monkeypatch):
    """With ComfyUI's previewer on (faked: its modules are absent in tests), every step of every window sends a
    preview image, counted over the whole clip."""
    import sys
    import types

    updates, shapes = [], []

    class Previewer:
        def decode_latent_to_preview_image(self, fmt, x0):
            shapes.append(tuple(x0.shape))
            return (fmt, "img", 512)

    class Bar:
        def __init__(self, total, node_id=None):
            pass

        def update_absolute(self, value, total=None, preview=None):
            updates.append((value, total, preview is not None))

    monkeypatch.setitem(sys.modules, "comfy", types.SimpleNamespace())
    monkeypatch.setitem(sys.modules, "comfy.latent_formats", types.SimpleNamespace(Wan22=object))
    monkeypatch.setitem(sys.modules, "comfy.utils", types.SimpleNamespace(ProgressBar=Bar))
    monkeypatch.setitem(sys.modules, "latent_preview", types.SimpleNamespace(get_previewer=lambda d, f: Previewer()))
    monkeypatch.setenv("OVI_MODELS_DIR", str(tiny_models))
    monkeypatch.setenv("OVI_OUTPUT_DIR", str(tmp_path / "out"))
    api = _load(PAIR[1])
    sampler = next(n for n in api.values() if n["class_type"] == "OviLongClipSampler")
    sampler["inputs"].update(steps=2, seconds=8.0, prompts="one\n---\ntwo")  # 2 windows
    run_api({k: v for k, v in api.items() if v["class_type"] != "OviSaveVideo"})
    # the sampler's updates come first (the decoders after it report progress without previews)
    assert updates[:4] == [(1, 4, True), (2, 4, True), (3, 4, True), (4, 4, True)]
    assert sum(u[2] for u in updates) == 4
    assert all(s[:3] == (1, 48, 1) for s in shapes) and len(shapes) == 4
