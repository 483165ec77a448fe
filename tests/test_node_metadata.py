"""What ComfyUI's node list shows about each node: every node has search aliases (ComfyUI >= 0.33 sends
SEARCH_ALIASES to the frontend's node search) and a tooltip for every output (OUTPUT_TOOLTIPS), so a node
added later without them fails here."""

import json

import pytest

from nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

NODES = sorted(NODE_CLASS_MAPPINGS.items())


@pytest.mark.parametrize("name,cls", NODES, ids=[n for n, _ in NODES])
def test_every_node_has_search_aliases(name, cls):
    aliases = getattr(cls, "SEARCH_ALIASES", None)
    assert isinstance(aliases, list) and aliases, f"{name}: set SEARCH_ALIASES = [...] (what a user might type)"
    assert all(isinstance(a, str) and a.strip() == a and a for a in aliases), (name, aliases)
    lowered = [a.lower() for a in aliases]
    assert len(set(lowered)) == len(lowered), (name, "duplicate alias")
    # an alias that repeats the node id or display name adds nothing to the search
    assert name.lower() not in lowered and NODE_DISPLAY_NAME_MAPPINGS[name].lower() not in lowered, name
    json.dumps(aliases)  # the server sends it as JSON


@pytest.mark.parametrize("name,cls", NODES, ids=[n for n, _ in NODES])
def test_every_output_has_a_tooltip(name, cls):
    tips = getattr(cls, "OUTPUT_TOOLTIPS", None)
    assert isinstance(tips, (tuple, list)), f"{name}: set OUTPUT_TOOLTIPS (one text per output)"
    assert len(tips) == len(cls.RETURN_TYPES), (name, len(tips), len(cls.RETURN_TYPES))
    assert all(isinstance(t, str) and t.strip() for t in tips), name
    json.dumps(list(tips))


def test_every_input_has_a_tooltip():
    missing = []
    for name, cls in NODES:
        spec = cls.INPUT_TYPES()
        for section in ("required", "optional"):
            for inp, s in spec.get(section, {}).items():
                opts = s[1] if len(s) > 1 else {}
                if not str(opts.get("tooltip", "")).strip():
                    missing.append(f"{name}.{inp}")
    assert not missing, missing
