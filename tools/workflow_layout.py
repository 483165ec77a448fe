"""Layout of the shipped workflows (tools/make_workflows.py): where each node sits and the size it is saved at,
so that no node overlaps another at the sizes ComfyUI's frontend draws them."""

from __future__ import annotations

# Layout. A spec node gives "pos" [x, y], or "below": <node id> to sit under that node (same x, GAP below its
# drawn bottom). The frontend draws a node's title bar (TITLE px) above its pos and grows a node whose saved
# size is smaller than its widgets need; DRAWN_MIN[type][number of inputs] is that smallest drawn size, measured
# with `tools/comfy_frontend_check.mjs --min-sizes example_workflows/*.json` (largest of frontend 1.49.6 in
# ComfyUI 0.33.0 and 1.27.10 in ComfyUI 0.3.64; the heights agree, 1.49.6 is up to 17 px wider). A node whose
# inputs (required + optional) changed in number is drawn at another size, so each size is kept under the
# input count it was measured with. The generator saves every node at least that large and refuses a graph
# whose nodes overlap at those sizes; a node not measured at its input count keeps its spec size, and
# tests/test_workflow_layout.py asks for the measurement. ``defs`` below is make_workflows.node_defs().
TITLE = 30
GAP = 40
DRAWN_MIN = {
    "OviFusionModelLoader": {7: (210, 202)},
    "OviTextEncoderLoader": {5: (291, 154)},
    "OviVideoVAELoader": {3: (250, 106)},
    "OviAudioVAELoader": {3: (341, 106)},
    "OviTextEncode": {5: (210, 216)},
    "OviJointSampler": {24: (246, 594), 27: (246, 662)},  # 27: with branch s4-ref's reference inputs
    "OviDecodeVideo": {4: (210, 98)},
    "OviDecodeAudio": {3: (160, 66)},
    "OviSaveVideo": {4: (210, 102)},
    "OviAudioGuide": {10: (306, 238)},
    "OviVideoGuide": {11: (311, 258), 12: (311, 282)},  # 12: with branch s4-long's offset input
    "OviLongClipSampler": {24: (317, 676), 25: (317, 700)},  # 25: with branch s4-long's audio_offset input
    "OviTrainLoRA": {17: (237, 430)},
    # core nodes (input counts of CORE_NODES)
    "LoadImage": {1: (223, 314)},
    "LoadAudio": {1: (223, 136)},
    "LoadVideo": {1: (223, 200)},
    "PreviewImage": {1: (140, 26)},
    "UNETLoader": {2: (210, 82)},
    "RandomNoise": {1: (210, 82)},
    "KSamplerSelect": {1: (210, 58)},
    "SamplerCustomAdvanced": {5: (213, 106)},
    # the native-path nodes as branch s4-native (0224448) defines them
    "OviConditioningToNative": {1: (275, 46)},
    "EmptyOviLatentAV": {5: (257, 154)},
    "OviNativeGuider": {7: (316, 166)},
    "OviNativeSigmas": {3: (222, 106)},
    "OviLatentsFromNative": {2: (210, 58)},
    "OviNativeImageToAV": {3: (241, 66)},
    # branch s4-ref (35d2ef2)
    "OviReference": {5: (229, 106)},
}


def input_count(d: dict) -> int:
    """Number of inputs (sockets and widgets) of a node definition from node_defs()."""
    return len(d["input"].get("required", {})) + len(d["input"].get("optional", {}))


def drawn_min(node_type: str, defs: dict) -> tuple[int, int] | None:
    """The smallest size the frontend draws this node type at, as it is defined now (None: not measured)."""
    return DRAWN_MIN.get(node_type, {}).get(input_count(defs[node_type]))


def layout(nodes: list[dict], defs: dict) -> list[dict]:
    """Copies of the spec nodes with "pos" resolved and "size" at least the drawn minimum; ValueError if two
    overlap."""
    by_id = {n["id"]: dict(n) for n in nodes}
    for n in by_id.values():
        low = drawn_min(n["type"], defs) or (0, 0)
        n["size"] = [max(n["size"][0], low[0]), max(n["size"][1], low[1])]

    def place(n: dict, seen: tuple = ()) -> list:
        if "pos" not in n:
            if n["id"] in seen:
                raise ValueError(f"node {n['id']}: 'below' goes in a circle")
            above = by_id[n.pop("below")]
            x, y = place(above, (*seen, n["id"]))
            n["pos"] = [x, y + above["size"][1] + TITLE + GAP]
        return n["pos"]

    for n in by_id.values():
        place(n)
    out = [by_id[n["id"]] for n in nodes]
    clash = overlaps(out)
    if clash:
        raise ValueError("nodes overlap at the sizes the frontend draws: " + "; ".join(clash))
    return out


def overlaps(nodes: list[dict]) -> list[str]:
    """Pairs of laid-out nodes whose drawn boxes (title bar included) intersect."""

    def box(n):
        return n["pos"][0], n["pos"][1] - TITLE, n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1]

    out = []
    for i, a in enumerate(nodes):
        for b in nodes[i + 1:]:
            (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = box(a), box(b)
            if min(ax1, bx1) > max(ax0, bx0) and min(ay1, by1) > max(ay0, by0):
                out.append(f"{a['type']}#{a['id']} and {b['type']}#{b['id']}")
    return out
