"""The shipped graphs' layout: no node overlaps another at the sizes ComfyUI's frontend draws them (a node's
saved size grows to DRAWN_MIN, recorded from frontends 1.49.6 and 1.27.10 per node type and input count, and its
title bar sits above its pos), checked on the written UI files; and the generator refuses a graph that would
overlap."""

import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import make_workflows as mw  # noqa: E402
import workflow_layout as wl  # noqa: E402

STEMS = list(mw.WORKFLOWS)


@pytest.fixture(scope="module")
def defs():
    return mw.node_defs()


def _ui(stem):
    with open(mw.workflow_path(stem), encoding="utf-8") as f:
        return json.load(f)


@pytest.mark.parametrize("stem", STEMS)
def test_every_node_has_a_measured_drawn_size(defs, stem):
    unknown = sorted({f"{n['type']} with {wl.input_count(defs[n['type']])} inputs" for n in _ui(stem)["nodes"]
                      if wl.drawn_min(n["type"], defs) is None})
    assert not unknown, (f"{stem}: measure {unknown} with `node tools/comfy_frontend_check.mjs --min-sizes "
                         f"{os.path.relpath(mw.workflow_path(stem), ROOT)}` on ComfyUI 0.33.0 and 0.3.64 and add "
                         "them to DRAWN_MIN in tools/workflow_layout.py (type: {inputs: (width, height)})")


@pytest.mark.parametrize("stem", STEMS)
def test_saved_nodes_are_drawn_at_their_size_and_do_not_overlap(defs, stem):
    nodes = _ui(stem)["nodes"]
    for n in nodes:
        low = wl.drawn_min(n["type"], defs) or (0, 0)
        assert n["size"][0] >= low[0] and n["size"][1] >= low[1], (stem, n["type"], n["size"], low)
    assert wl.overlaps(nodes) == [], stem


def test_the_old_audio_to_video_layout_is_refused(defs):
    """The layout before the fix: the guide 40 px under a sampler saved 460 tall, which 1.49.6 draws 594 tall."""
    spec = mw.WORKFLOWS["ovi_audio_to_video"]()
    sampler = next(n for n in spec if n["type"] == "OviJointSampler")
    guide = next(n for n in spec if n["type"] == "OviAudioGuide")
    sampler["size"] = [380, 460]
    guide.pop("below", None)
    guide["pos"] = [sampler["pos"][0], sampler["pos"][1] + 460 + wl.TITLE + 40]
    with pytest.raises(ValueError, match="OviJointSampler#6 and OviAudioGuide#11"):
        wl.layout(spec, defs)


def test_below_puts_a_node_under_the_drawn_bottom_of_another(defs):
    spec = [{"id": 1, "type": "OviJointSampler", "pos": [0, 0], "size": [380, 100]},
            {"id": 2, "type": "OviAudioGuide", "below": 1, "size": [380, 10]}]
    a, b = wl.layout(spec, defs)
    tall = wl.drawn_min("OviJointSampler", defs)[1]  # 594 with the sampler's 24 inputs
    assert a["size"] == [380, tall] and b["size"] == [380, wl.drawn_min("OviAudioGuide", defs)[1]]  # as drawn
    assert b["pos"] == [0, tall + wl.TITLE + wl.GAP]
    assert "below" in spec[1]  # the spec itself is left as it was


def test_a_node_whose_inputs_changed_in_number_is_not_trusted_to_its_old_size(defs):
    """More inputs (sockets or widgets) make the frontend draw the node taller: a size measured with another
    number of inputs does not apply, and the node counts as unmeasured."""
    sampler = defs["OviJointSampler"]
    extra = {f"extra_{i}": ("FLOAT", {"default": 1.0}) for i in range(10)}  # a count nobody measured
    grown = {**defs, "OviJointSampler": {**sampler, "input": {**sampler["input"],
                                                             "optional": {**sampler["input"].get("optional", {}),
                                                                          **extra}}}}
    assert wl.input_count(grown["OviJointSampler"]) == wl.input_count(sampler) + 10
    assert wl.drawn_min("OviJointSampler", defs) is not None
    assert wl.drawn_min("OviJointSampler", grown) is None
    assert wl.DRAWN_MIN["OviJointSampler"][24][1] < wl.DRAWN_MIN["OviJointSampler"][27][1]  # 594 < 662 px drawn
