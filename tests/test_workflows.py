"""The shipped workflows: valid graphs of existing nodes with valid widget values, and the API graphs run
end to end through the node functions on tiny weights, producing an MP4 with H.264 video and AAC audio."""

import json
import os
import sys

import pytest
import torch

from nodes import NODE_CLASS_MAPPINGS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import make_workflows as mw  # noqa: E402
import node_utils as nu  # noqa: E402

DATA = os.path.join(ROOT, "tests", "data")
PAIRS = [("ovi_text_to_av.json", "ovi_text_to_av_api.json"), ("ovi_image_to_av.json", "ovi_image_to_av_api.json"),
         ("ovi_audio_to_video.json", "ovi_audio_to_video_api.json"),
         ("ovi_video_to_audio.json", "ovi_video_to_audio_api.json")]  # run end to end here (long clip: its own file)
ALL_PAIRS = [(f"{stem}.json", f"{stem}_api.json") for stem in mw.WORKFLOWS]  # every shipped workflow
# reference -> AV (DreamID-Omni's settings, not Ovi's)
REF_PAIRS = [("ovi_reference_to_av.json", "ovi_reference_to_av_api.json")]
# Core nodes the workflows may use: LoadImage (first frame of image->AV), LoadAudio and LoadVideo (guides).
ALLOWED_CORE = set(mw.CORE_NODES)
FILE_INPUTS = {"model", "audio_model", "text_encoder", "tokenizer", "vae", "audio_vae", "vocoder", "image", "audio",
               "file", "unet_name"}


def _load(name):
    """A shipped workflow by file name: "<stem>.json" (UI, a template) or "<stem>_api.json" (API)."""
    api = name.endswith("_api.json")
    path = mw.workflow_path(name[: -len("_api.json")] if api else name[: -len(".json")], "api" if api else "ui")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def defs():
    return mw.node_defs()


def test_workflows_are_generated_from_the_spec():
    assert mw.main(["--check"]) == 0


def _jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a JPEG's frame header; AssertionError if the bytes are not a JPEG."""
    assert data[:2] == b"\xff\xd8", "not a JPEG"
    i = 2
    while i + 9 < len(data):
        assert data[i] == 0xFF, "not a JPEG"
        marker, length = data[i + 1], int.from_bytes(data[i + 2:i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a start-of-frame segment
            return int.from_bytes(data[i + 7:i + 9], "big"), int.from_bytes(data[i + 5:i + 7], "big")
        i += 2 + length
    raise AssertionError("JPEG without a frame header")


def test_templates_hold_only_ui_workflows_each_with_a_thumbnail():
    """ComfyUI (0.33) lists every example_workflows/*.json of a pack in its template browser and shows
    <name>.jpg as its picture: only UI-format files there, each with its thumbnail; API files elsewhere."""
    names = sorted(os.listdir(mw.TEMPLATE_DIR))
    jsons = [n for n in names if n.endswith(".json")]
    assert jsons == sorted(os.path.basename(mw.workflow_path(s)) for s in mw.WORKFLOWS)
    for name in jsons:
        data = _load(name)
        assert "nodes" in data and "links" in data, f"{name} is not a UI workflow"
        thumb = mw.workflow_path(name[: -len(".json")], "thumbnail")
        assert os.path.isfile(thumb), f"{name} has no thumbnail: draw it (README, Workflows) as {thumb}"
        with open(thumb, "rb") as f:
            w, h = _jpeg_size(f.read())
        assert 64 <= min(w, h) and max(w, h) <= 1024 and os.path.getsize(thumb) < 200_000, (thumb, w, h)
    assert sorted(names) == sorted(jsons + [n[: -len(".json")] + ".jpg" for n in jsons]), "stray files"
    for name in os.listdir(mw.API_DIR):
        assert name.endswith("_api.json") and "nodes" not in _load(name), name
    # ComfyUI reads any of these folder names as templates: none of them may hold API files
    for folder in ("example", "examples", "workflow", "workflows"):
        path = os.path.join(ROOT, folder)
        assert not os.path.isdir(path) or not [n for n in os.listdir(path) if n.endswith(".json")], path


def _check_value(node_type, name, spec, value):
    kind, opts = spec[0], (spec[1] if len(spec) > 1 else {})
    if isinstance(kind, list):
        if name in FILE_INPUTS:  # file lists depend on the machine: an official name or an auto-download entry
            assert isinstance(value, str) and value, (node_type, name, value)
            if node_type.startswith("Ovi") and name != "tokenizer" and name != "audio_model":
                assert value.startswith(mw.AUTO), (node_type, name, value)
        else:
            assert value in kind, (node_type, name, value, kind)
    elif kind == "INT":
        assert isinstance(value, int) and opts["min"] <= value <= opts["max"], (node_type, name, value)
    elif kind == "FLOAT":
        assert isinstance(value, (int, float)) and opts["min"] <= value <= opts["max"], (node_type, name, value)
    elif kind == "STRING":
        assert isinstance(value, str), (node_type, name)
    elif kind == "BOOLEAN":
        assert isinstance(value, bool), (node_type, name, value)
    else:
        raise AssertionError(f"{node_type}.{name}: {kind} is not a widget")


@pytest.mark.parametrize("ui_name,api_name", ALL_PAIRS)
def test_api_workflow_is_valid(defs, ui_name, api_name):
    api = _load(api_name)
    for nid, node in api.items():
        t = node["class_type"]
        assert t in NODE_CLASS_MAPPINGS or t in ALLOWED_CORE, t
        d = defs[t]
        inputs = dict(mw.ordered_inputs(d))
        required = set(d["input"]["required"])
        assert required <= set(node["inputs"]), (nid, t, required - set(node["inputs"]))
        assert set(node["inputs"]) <= set(inputs), (nid, t, set(node["inputs"]) - set(inputs))
        for name, value in node["inputs"].items():
            spec = inputs[name]
            if isinstance(value, list):  # a link [node id, output slot]
                src = api[value[0]]
                out_type = defs[src["class_type"]]["output"][value[1]]
                assert out_type == spec[0], (nid, name, out_type, spec[0])
            else:
                assert mw.is_widget(spec), (nid, name)
                _check_value(t, name, spec, value)


@pytest.mark.parametrize("ui_name,api_name", ALL_PAIRS)
def test_ui_workflow_is_loadable(defs, ui_name, api_name):
    ui, api = _load(ui_name), _load(api_name)
    assert ui["version"] == 0.4
    ids = {n["id"] for n in ui["nodes"]}
    assert ui["last_node_id"] == max(ids) and ui["last_link_id"] == len(ui["links"])
    assert {str(i) for i in ids} == set(api)
    by_id = {n["id"]: n for n in ui["nodes"]}
    for link in ui["links"]:
        lid, src, sslot, dst, dslot, typ = link
        assert by_id[src]["outputs"][sslot]["type"] == typ and lid in by_id[src]["outputs"][sslot]["links"]
        inp = by_id[dst]["inputs"][dslot]
        assert inp["link"] == lid and inp["type"] == typ
    for n in ui["nodes"]:
        d = defs[n["type"]]
        for key in ("id", "type", "pos", "size", "inputs", "outputs", "widgets_values", "mode", "order"):
            assert key in n, (n["id"], key)
        linked = {i["name"] for i in n["inputs"] if i["link"] is not None}
        widgets = [(k, s) for k, s in mw.ordered_inputs(d) if mw.is_widget(s) and k not in linked]
        values = list(n["widgets_values"])
        for name, spec in widgets:
            _check_value(n["type"], name, spec, values.pop(0))
            if (spec[1] if len(spec) > 1 else {}).get("control_after_generate"):
                assert values.pop(0) in ("fixed", "increment", "decrement", "randomize")
        assert values == list(d.get("extra_widget_values", [])), (n["type"], values)
        # UI and API agree on every widget value
        api_inputs = api[str(n["id"])]["inputs"]
        for name, _ in widgets:
            assert name in api_inputs


def test_workflows_use_official_defaults():
    for _, api_name in PAIRS:
        s = next(n for n in _load(api_name).values() if n["class_type"] == "OviJointSampler")["inputs"]
        assert (s["steps"], s["solver"], s["shift"], s["video_cfg"], s["audio_cfg"], s["slg_layer"], s["seed"]) == (
            50, "unipc", 5.0, 4.0, 3.0, 11, 103)
        enc = next(n for n in _load(api_name).values() if n["class_type"] == "OviTextEncode")["inputs"]
        assert enc["video_negative"] == "jitter, bad hands, blur, distortion"
        assert enc["audio_negative"] == "robotic, muffled, echo, distorted"


def test_reference_workflow_uses_dreamid_settings():
    api = _load("ovi_reference_to_av_api.json")
    s = next(n for n in api.values() if n["class_type"] == "OviJointSampler")["inputs"]
    assert (s["steps"], s["solver"], s["shift"], s["video_cfg"], s["audio_cfg"], s["video_ref_cfg"],
            s["audio_ref_cfg"]) == (50, "unipc", 5.0, 3.0, 4.0, 1.5, 2.0)  # DreamID-Omni inference_r2av.yaml
    assert s["references"][0] in api and api[s["references"][0]]["class_type"] == "OviReference"


# ----------------------------------------------------------------------------------------------
# End to end on tiny weights
# ----------------------------------------------------------------------------------------------


def _load_image(path):
    import numpy as np
    from PIL import Image

    img = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(img)[None]  # [1, H, W, 3] like core LoadImage


class _CoreVideo:
    """What core LoadVideo returns (VideoFromFile), reduced to get_components(): images [N, H, W, 3] in [0, 1],
    audio and frame_rate."""

    def __init__(self, path):
        self.path = path

    def get_components(self):
        from types import SimpleNamespace

        from ovi_core.conditioning.video_in import read_video_file

        frames, fps = read_video_file(self.path)
        return SimpleNamespace(images=frames.float() / 255.0, audio=None, frame_rate=fps)


def run_api(api: dict, *, workflow: dict | None = None) -> dict:
    """A tiny executor: run an API-format graph in dependency order through our node FUNCTIONs, passing the
    hidden PROMPT / EXTRA_PNGINFO inputs as ComfyUI does (the graph itself, ``{"workflow": workflow}``)."""
    done: dict[str, tuple] = {}
    hidden_values = {"PROMPT": api, "EXTRA_PNGINFO": {"workflow": workflow} if workflow is not None else None}

    def run(nid):
        if nid in done:
            return done[nid]
        node = api[nid]
        kwargs = {}
        for k, v in node["inputs"].items():
            kwargs[k] = run(v[0])[v[1]] if isinstance(v, list) else v
        if node["class_type"] == "LoadImage":
            img = _load_image(os.path.join(DATA, kwargs["image"]))
            out = (img, torch.zeros(img.shape[:3]))
        elif node["class_type"] == "LoadAudio":  # core LoadAudio: {"waveform": [1, C, T], "sample_rate"}
            from ovi_core.io.media import read_audio

            wav, rate = read_audio(os.path.join(DATA, kwargs["audio"]))
            out = ({"waveform": wav[None], "sample_rate": rate},)
        elif node["class_type"] == "LoadVideo":
            out = (_CoreVideo(os.path.join(DATA, kwargs["file"])),)
        else:
            cls = NODE_CLASS_MAPPINGS[node["class_type"]]
            for name, kind in cls.INPUT_TYPES().get("hidden", {}).items():
                if kind in hidden_values:
                    kwargs[name] = hidden_values[kind]
            with torch.inference_mode():  # as ComfyUI's executor runs every node
                out = getattr(cls(), cls.FUNCTION)(**kwargs)
            if isinstance(out, dict):
                out = out["result"]
        done[nid] = tuple(out)
        return done[nid]

    for nid in api:
        run(nid)
    return done


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    return nu.tiny_models_dir(tmp_path_factory)


@pytest.mark.parametrize("ui_name,api_name", PAIRS + REF_PAIRS)
def test_api_workflow_runs_on_tiny_weights(tiny_models, tmp_path, monkeypatch, ui_name, api_name):
    import av

    monkeypatch.setenv("OVI_MODELS_DIR", str(tiny_models))
    monkeypatch.setenv("OVI_OUTPUT_DIR", str(tmp_path / "out"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    api = _load(api_name)
    for node in api.values():
        if node["class_type"] == "OviJointSampler":
            node["inputs"]["steps"] = 2  # the official skip-layer 11 stays: the tiny DiT has 12 blocks
    ui = _load(ui_name)
    results = run_api(api, workflow=ui)
    save_id = next(k for k, n in api.items() if n["class_type"] == "OviSaveVideo")
    video, path = results[save_id]
    assert os.path.isfile(path) and path.startswith(str(tmp_path / "out"))
    with av.open(path) as c:
        kinds = {s.type: s.codec_context.name for s in c.streams}
        # the graph travels in the file (dropping it onto ComfyUI restores the workflow)
        assert json.loads(c.metadata["prompt"]) == api and json.loads(c.metadata["workflow"]) == ui
        vs = c.streams.video[0]
        assert (vs.height, vs.width) == tuple(results[next(k for k, n in api.items()
                                                           if n["class_type"] == "OviDecodeVideo")][0].shape[1:3])
    assert kinds == {"video": "h264", "audio": "aac"}
    audio = results[next(k for k, n in api.items() if n["class_type"] == "OviDecodeAudio")][0]
    assert audio["sample_rate"] == 16000 and audio["waveform"].dim() == 3 and audio["waveform"].shape[:2] == (1, 1)
