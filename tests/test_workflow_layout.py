"""The shipped graphs' layout: no node overlaps another at the sizes ComfyUI's frontend draws them (a node's
saved size grows to DRAWN_MIN, recorded from frontends 1.49.6 and 1.27.10, and its title bar sits above its
pos), checked on the written UI files; and the generator refuses a graph that would overlap."""

import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import make_workflows as mw  # noqa: E402

STEMS = list(mw.WORKFLOWS)


def _ui(stem):
    with open(mw.workflow_path(stem), encoding="utf-8") as f:
        return json.load(f)


@pytest.mark.parametrize("stem", STEMS)
def test_every_node_type_has_a_measured_drawn_size(stem):
    unknown = {n["type"] for n in _ui(stem)["nodes"]} - set(mw.DRAWN_MIN)
    assert not unknown, (f"{stem}: measure {sorted(unknown)} with `node tools/comfy_frontend_check.mjs --min-sizes "
                         f"{os.path.relpath(mw.workflow_path(stem), ROOT)}` on ComfyUI 0.33.0 and add them to "
                         "DRAWN_MIN in tools/make_workflows.py")


@pytest.mark.parametrize("stem", STEMS)
def test_saved_nodes_are_drawn_at_their_size_and_do_not_overlap(stem):
    nodes = _ui(stem)["nodes"]
    for n in nodes:
        low = mw.DRAWN_MIN.get(n["type"], (0, 0))
        assert n["size"][0] >= low[0] and n["size"][1] >= low[1], (stem, n["type"], n["size"], low)
    assert mw.overlaps(nodes) == [], stem


def test_the_old_audio_to_video_layout_is_refused():
    """The layout before the fix: the guide 40 px under a sampler saved 460 tall, which 1.49.6 draws 594 tall."""
    spec = mw.WORKFLOWS["ovi_audio_to_video"]()
    sampler = next(n for n in spec if n["type"] == "OviJointSampler")
    guide = next(n for n in spec if n["type"] == "OviAudioGuide")
    sampler["size"] = [380, 460]
    guide.pop("below", None)
    guide["pos"] = [sampler["pos"][0], sampler["pos"][1] + 460 + mw.TITLE + 40]
    with pytest.raises(ValueError, match="OviJointSampler#6 and OviAudioGuide#11"):
        mw.layout(spec)


def test_below_puts_a_node_under_the_drawn_bottom_of_another():
    spec = [{"id": 1, "type": "OviJointSampler", "pos": [0, 0], "size": [380, 100]},
            {"id": 2, "type": "OviAudioGuide", "below": 1, "size": [380, 10]}]
    a, b = mw.layout(spec)
    assert a["size"] == [380, 594] and b["size"] == [380, 238]  # grown to what the frontend draws
    assert b["pos"] == [0, 594 + mw.TITLE + mw.GAP]
    assert "below" in spec[1]  # the spec itself is left as it was
