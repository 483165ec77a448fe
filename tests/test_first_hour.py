"""What a ComfyUI user meets in the first hour: core's file-name tokens, trimming guides in the graph, readable
nodes, long-clip prompt plans and draft sizes (issue 25)."""

from __future__ import annotations

import os
import time

import pytest
import torch

from nodes import NODE_CLASS_MAPPINGS
from ovi_core import validate

NOW = time.struct_time((2026, 3, 4, 5, 6, 7, 2, 63, -1))

# ----------------------------------------------------------------------------------------------
# Item 6: filename_prefix like core's save nodes
# ----------------------------------------------------------------------------------------------


def test_date_tokens_like_the_frontend():
    from ovi_core.io.prefix import format_date

    assert format_date("yyyy-MM-dd", NOW) == "2026-03-04"
    assert format_date("yy.M.d h:m:s", NOW) == "26.3.4 5:6:7"
    assert format_date("hhmmss", NOW) == "050607"
    assert format_date("yyy", NOW) == "yyy"  # the frontend keeps what it does not know


def test_expand_prefix_core_tokens():
    from ovi_core.io.prefix import expand_prefix

    got = expand_prefix("Ovi/%date:yyyy-MM-dd%/clip_%width%x%height%_%year%%month%%day%-%hour%%minute%%second%",
                        width=1280, height=704, now=NOW)
    assert got == "Ovi/2026-03-04/clip_1280x704_20260304-050607"
    assert expand_prefix("Ovi/%unknown%/%a.b%", now=NOW) == "Ovi/%unknown%/%a.b%"
    assert expand_prefix("plain/name") == "plain/name"


def test_expand_prefix_node_widget_from_the_prompt():
    from ovi_core.io.prefix import expand_prefix

    prompt = {"3": {"class_type": "OviJointSampler", "_meta": {"title": "Sampler"}, "inputs": {"seed": 42,
                                                                                             "model": ["1", 0]}},
              "5": {"class_type": "OviTextEncode", "inputs": {"text": "a/b:c"}}}
    assert expand_prefix("x_%Sampler.seed%", prompt=prompt) == "x_42"
    assert expand_prefix("x_%OviTextEncode.text%", prompt=prompt) == "x_a_b_c"  # the frontend's unsafe chars
    assert expand_prefix("x_%Sampler.model%", prompt=prompt) == "x_%Sampler.model%"  # a link has no value


@pytest.mark.parametrize("prefix", ["Ovi/%date:yyyy-MM-dd%/clip", "Ovi/2026-03-04 05:06/clip", "ab:c"])
def test_colon_is_not_a_drive(prefix, tmp_path):
    if os.name == "nt":
        pytest.skip("Windows file names cannot hold ':'")
    validate.check_filename_prefix(prefix, output_dir=str(tmp_path))


@pytest.mark.parametrize(("prefix", "reason"), [("/etc/x", "absolute path"), ("C:\\x", "drive letter"),
                                                ("c:x", "drive letter"), ("Ovi/../../x", "'..'")])
def test_refusals_say_the_right_reason(prefix, reason):
    with pytest.raises(ValueError, match="filename_prefix") as e:
        validate.check_filename_prefix(prefix)
    assert reason in str(e.value)


@pytest.mark.parametrize("node", ["OviSaveVideo", "OviSaveLatents"])
def test_save_nodes_accept_date_tokens_at_queue_time(node, tmp_path, monkeypatch):
    monkeypatch.setenv("OVI_OUTPUT_DIR", str(tmp_path))
    validate_inputs = NODE_CLASS_MAPPINGS[node].VALIDATE_INPUTS
    assert validate_inputs(filename_prefix="Ovi/%date:yyyy-MM-dd%/clip") is True
    assert "absolute path" in validate_inputs(filename_prefix="/abs/%date:yyyy%")


def test_save_video_names_the_file_with_its_size_and_date(tmp_path, monkeypatch):
    monkeypatch.setenv("OVI_OUTPUT_DIR", str(tmp_path))
    frames = torch.rand(3, 32, 48, 3)
    with torch.inference_mode():
        path = NODE_CLASS_MAPPINGS["OviSaveVideo"]().save(frames, 24.0, "Ovi/%date:yyyy%/c_%width%x%height%")
    path = path["result"][1]
    year = os.path.basename(os.path.dirname(path))
    assert year.isdigit() and len(year) == 4
    assert os.path.basename(path).startswith("c_48x32_")


def test_save_latents_names_the_file_with_its_size(tmp_path, monkeypatch):
    from ovi_core.io.latents import AVLatents

    monkeypatch.setenv("OVI_OUTPUT_DIR", str(tmp_path))
    lat = AVLatents(video=torch.randn(1, 48, 2, 4, 6), audio=torch.randn(1, 8, 20), version="1.1")
    path = NODE_CLASS_MAPPINGS["OviSaveLatents"]().save(lat, "Ovi/l_%width%x%height%")["result"][0]
    assert os.path.basename(path).startswith("l_96x64_")


# ----------------------------------------------------------------------------------------------
# Item 5: trim in the graph
# ----------------------------------------------------------------------------------------------


def test_trim_audio_and_frames():
    from ovi_core.conditioning.trim import trim_audio, trim_frames

    w = torch.arange(100.0).view(1, 1, 100)  # 10 s at 10 Hz
    assert trim_audio(w, 10) is w  # the defaults change nothing
    assert trim_audio(w, 10, start=2.0)[0, 0].tolist() == list(range(20, 100))
    assert trim_audio(w, 10, start=2.0, max_seconds=3.0)[0, 0].tolist() == list(range(20, 50))
    assert trim_audio(w, 10, max_seconds=50.0).shape[-1] == 100
    with pytest.raises(ValueError, match="past the end of the sound"):
        trim_audio(w, 10, start=10.0)
    with pytest.raises(ValueError, match="max_seconds"):
        trim_audio(w, 10, max_seconds=-1.0)
    f = torch.arange(48.0)  # 2 s at 24 fps
    assert trim_frames(f, 24.0) is f
    assert trim_frames(f, 24.0, start=0.5, max_seconds=0.25).tolist() == list(range(12, 18))
    assert trim_frames(f, 12.5, start=0.1).tolist()[0] == 2  # the first frame shown at or after start
    with pytest.raises(ValueError, match="past the end of the video"):
        trim_frames(f, 24.0, start=2.0)


def test_guide_inputs_checked_at_queue_time():
    audio = NODE_CLASS_MAPPINGS["OviAudioGuide"].VALIDATE_INPUTS
    assert audio(offset=1.0, seconds="5") is True
    assert audio() is True  # linked inputs: checked when the node runs
    assert "past the end of a 5 s clip" in audio(offset=6.0, seconds="5")
    assert audio(offset=6.0, seconds="10") is True
    assert "offset" in audio(offset=11.0, seconds="auto")  # ComfyUI's own min/max check is skipped for it
    assert "seconds must be one of" in audio(offset=0.0, seconds="7")
    opts = NODE_CLASS_MAPPINGS["OviVideoGuide"].INPUT_TYPES()["optional"]
    assert opts["start"][1]["default"] == 0.0 and opts["max_seconds"][1]["default"] == 0.0


@pytest.mark.parametrize("version", ["1.1", "1.1-10s"])
def test_length_errors_name_the_model(version):
    from ovi_core.conditioning.audio_in import prepare_audio
    from ovi_core.conditioning.video_in import prepare_video

    with pytest.raises(ValueError, match=f"Ovi {version} holds") as e:
        prepare_audio(torch.zeros(1, 16000 * 12), 16000, version=version)
    assert f"a {version} clip" not in str(e.value)
    with pytest.raises(ValueError, match=f"Ovi {version} holds at most"):
        prepare_video(torch.zeros(300, 64, 64, 3), 24.0, version=version, area=960 * 960)


# ----------------------------------------------------------------------------------------------
# Item 7: readable nodes
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(NODE_CLASS_MAPPINGS))
def test_every_node_explains_its_outputs(name):
    cls = NODE_CLASS_MAPPINGS[name]
    tips = getattr(cls, "OUTPUT_TOOLTIPS", None)
    assert isinstance(tips, tuple) and len(tips) == len(cls.RETURN_TYPES), name
    assert all(isinstance(t, str) and len(t) > 10 for t in tips), tips


@pytest.mark.parametrize("name", ["OviJointSampler", "OviLongClipSampler"])
def test_sampler_marks_advanced_inputs_and_keeps_common_ones_plain(name):
    spec = NODE_CLASS_MAPPINGS[name].INPUT_TYPES()
    inputs = {**spec["required"], **spec.get("optional", {})}
    advanced = {k for k, v in inputs.items() if len(v) > 1 and v[1].get("advanced")}
    assert {"width", "height", "solver", "shift", "slg_layer"} <= advanced
    assert not advanced & {"aspect", "seconds", "steps", "video_cfg", "audio_cfg", "seed"}
    assert "custom" in inputs["width"][1]["tooltip"]


@pytest.mark.parametrize("name", ["OviTextEncode", "OviLongClipSampler"])
def test_negative_boxes_have_labels(name):
    spec = NODE_CLASS_MAPPINGS[name].INPUT_TYPES()
    inputs = {**spec["required"], **spec.get("optional", {})}
    video, audio = inputs["video_negative"][1]["placeholder"], inputs["audio_negative"][1]["placeholder"]
    assert video.startswith("video negative") and audio.startswith("audio negative")


# ----------------------------------------------------------------------------------------------
# Item 4: long-clip prompts spread by time, and the plan shown before sampling
# ----------------------------------------------------------------------------------------------


def test_prompts_spread_over_windows_by_time():
    from ovi_core.longclip.plan import plan_windows
    from ovi_core.longclip.prompts import describe_prompt_plan, prompts_for_windows

    plan = plan_windows(20.0, version="1.1")
    assert plan.num_windows == 6
    assert prompts_for_windows(["a", "b", "c"], 6, plan=plan) == ["a", "a", "b", "b", "c", "c"]
    assert prompts_for_windows(["a", "b", "c"], 6) == ["a", "a", "b", "b", "c", "c"]
    assert prompts_for_windows(["a", "b"], 6, plan=plan) == ["a"] * 3 + ["b"] * 3
    assert prompts_for_windows(["x"], 6, plan=plan) == ["x"] * 6  # one prompt: as before
    six = list("abcdef")
    assert prompts_for_windows(six, 6, plan=plan) == six
    text = describe_prompt_plan(plan, prompts_for_windows(["first " * 20, "b", "c"], 6, plan=plan))
    lines = text.splitlines()
    assert len(lines) == 6 and lines[0].startswith("window 1 (0.00-5.04 s): prompt 1: first first")
    assert lines[0].endswith("...") and lines[5].startswith("window 6 (15.00-20.04 s): prompt 3: c")


def test_long_clip_node_shows_the_prompt_plan_before_sampling(monkeypatch):
    """The text reaches the node before any weights run: here the model is a stub and sampling never starts."""
    import nodes.longclip as longclip_node

    shown = []

    class Stop(Exception):
        pass

    def show_text(node_id, text, **kw):
        shown.append(text)
        raise Stop  # stop right after the plan is shown

    monkeypatch.setattr(longclip_node._comfy, "show_text", show_text)
    model = type("M", (), {"version": "1.1", "target_area": 960 * 960})()
    with pytest.raises(Stop):
        longclip_node.OviLongClipSampler().sample(
            model, None, "one\n---\ntwo\n---\nthree", 20.0, "16:9 landscape (1280x704)", 1280, 704, 1, "unipc",
            5.0, 4.0, 3.0, 11, 1, unique_id="5")
    assert "6 window(s)" in shown[0]
    assert [ln.split(": prompt ")[1] for ln in shown[0].splitlines()[1:]] == ["1: one", "1: one", "2: two",
                                                                             "2: two", "3: three", "3: three"]


# ----------------------------------------------------------------------------------------------
# Item 3: draft sizes
# ----------------------------------------------------------------------------------------------


def test_draft_sizes_stay_below_the_trained_area():
    from ovi_core import sizes

    area = 960 * 960
    assert sizes.draft_hw(352, 640, area=area) == (352, 640)
    assert sizes.draft_hw(350, 630, area=area) == (352, 640)  # snapped to multiples of 32, not scaled up
    assert sizes.draft_hw(1408, 2560, area=area) == sizes.snap_hw_to_area(1408, 2560, area=area)  # above: down
    assert validate.check_size(640, 352, area=area) == sizes.snap_hw_to_area(352, 640, area=area) != (352, 640)
    assert validate.check_size(640, 352, area=area, draft=True) == (352, 640)
    assert "not what the model was trained for" in validate.draft_note(352, 640, area=area)
    assert validate.draft_note(*sizes.snap_hw_to_area(704, 1280, area=area), area=area) is None


def test_cli_has_a_draft_flag():
    import argparse

    from ovi_core.cli import generate

    parser = argparse.ArgumentParser()
    generate.register(parser.add_subparsers())
    args = parser.parse_args(["generate", "--weights", "w", "--prompt", "p", "--out", "o.mp4", "--size", "640x352",
                              "--draft"])
    assert args.draft is True
    assert parser.parse_args(["generate", "--weights", "w", "--prompt", "p", "--out", "o.mp4"]).draft is False


def test_sampler_node_draft_preset():
    from nodes.sampling import ASPECT_PRESETS, preset_size

    area = 960 * 960
    assert preset_size("draft 16:9 landscape (640x352)", 0, 0, area=area) == (352, 640, True)
    assert preset_size("draft custom (width x height, not scaled up)", 320, 192, area=area) == (192, 320, True)
    assert preset_size("16:9 landscape (1280x704)", 0, 0, area=area)[2] is False
    assert list(ASPECT_PRESETS)[:9][-1] == "custom (width x height)"  # published choices keep their places


# ----------------------------------------------------------------------------------------------
# Item 2: a latent preview each step, through ComfyUI's previewer
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("solver", ["unipc", "euler"])
def test_sampler_reports_the_clean_video_prediction_each_step(solver):
    from ovi_core.sampling.joint import sample_joint
    from ovi_core.sampling.solvers import make_solver

    g = torch.Generator().manual_seed(0)
    seen, shown = [], []

    def denoise(video, audio, t):
        v = torch.randn(video.shape, generator=g)
        seen.append((video.clone(), v))
        return v, torch.zeros_like(audio)

    video, audio = torch.randn(1, 48, 3, 2, 2, generator=g), torch.randn(1, 5, 20, generator=g)
    plain = sample_joint(denoise, video, audio, solver=solver, steps=4)
    seen.clear()
    g.manual_seed(0)
    torch.randn(1, 48, 3, 2, 2, generator=g), torch.randn(1, 5, 20, generator=g)  # same draws as above
    out = sample_joint(denoise, video, audio, solver=solver, steps=4,
                       preview=lambda i, n, x0: shown.append((i, n, x0)))
    assert torch.equal(out[0], plain[0]) and torch.equal(out[1], plain[1])  # previews change nothing
    sigmas = make_solver(solver, steps=4, shift=5.0).sigmas
    assert [(i, n) for i, n, _ in shown] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    for k, ((x, v), (_, _, x0)) in enumerate(zip(seen, shown, strict=True)):
        assert torch.allclose(x0, x - sigmas[k] * v)


class _FakePreviewer:
    def __init__(self):
        self.latents = []

    def decode_latent_to_preview_image(self, fmt, x0):
        self.latents.append(x0)
        return (fmt, "image", 512)


class _FakeBar:
    updates: list = []

    def __init__(self, total, node_id=None):
        self.node_id = node_id

    def update_absolute(self, value, total=None, preview=None):
        _FakeBar.updates.append((self.node_id, value, total, preview))


def test_node_previews_through_comfyui_previewer(monkeypatch):
    import sys
    import types

    from nodes import _preview

    previewer = _FakePreviewer()
    asked = []
    wan22 = type("Wan22", (), {})
    monkeypatch.setitem(sys.modules, "comfy", types.SimpleNamespace())
    monkeypatch.setitem(sys.modules, "comfy.latent_formats", types.SimpleNamespace(Wan22=wan22))
    monkeypatch.setitem(sys.modules, "comfy.utils", types.SimpleNamespace(ProgressBar=_FakeBar))
    monkeypatch.setitem(sys.modules, "latent_preview", types.SimpleNamespace(
        get_previewer=lambda device, fmt: asked.append((device, type(fmt).__name__)) or previewer))
    _FakeBar.updates = []
    fn = _preview.video_preview(3, "6", "cpu")
    x0 = torch.randn(1, 48, 5, 4, 6)
    fn(1, 3, x0)
    assert asked == [("cpu", "Wan22")]  # core's Wan2.2 latent format and the run's preview settings
    assert torch.equal(previewer.latents[0], x0[:, :, 2:3])  # the middle latent frame
    assert _FakeBar.updates == [("6", 1, 3, ("JPEG", "image", 512))]
    monkeypatch.setitem(sys.modules, "latent_preview", types.SimpleNamespace(get_previewer=lambda d, f: None))
    assert _preview.video_preview(3, "6", "cpu") is None  # previews off: the sampler only counts steps
