"""What a real ComfyUI tree does with the pack's templates and node metadata, read with ``ast`` from
``$COMFYUI_PATH`` (nothing of ComfyUI is imported): its template route lists ``example_workflows/`` (our UI files)
and none of the folders holding API files, and its node list sends OUTPUT_TOOLTIPS (and, from 0.33,
SEARCH_ALIASES). ``COMFYUI_PATH=/path/to/ComfyUI pytest tests/test_comfy_templates.py``; skipped without it."""

from __future__ import annotations

import ast
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import make_workflows as mw  # noqa: E402

COMFY = os.environ.get("COMFYUI_PATH", "")
pytestmark = pytest.mark.skipif(not COMFY, reason="set COMFYUI_PATH to a ComfyUI tree")


def _source(rel: str) -> ast.Module:
    path = os.path.join(COMFY, rel)
    assert os.path.isfile(path), f"{rel} not found in {COMFY}"
    with open(path, encoding="utf-8") as f:
        return ast.parse(f.read(), filename=path)


def _template_folders() -> list[str]:
    tree = _source(os.path.join("app", "custom_node_manager.py"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "example_workflow_folder_names"
                                                for t in node.targets):
            return [ast.literal_eval(e) for e in node.value.elts]
    raise AssertionError("example_workflow_folder_names not found: the template route changed")


def test_template_route_lists_our_template_folder_and_no_api_folder():
    folders = _template_folders()
    assert os.path.basename(mw.TEMPLATE_DIR) in folders
    assert os.path.basename(mw.API_DIR) not in folders
    for name in folders:  # any folder the route reads holds UI workflows only
        path = os.path.join(ROOT, name)
        if os.path.isdir(path) and path != mw.TEMPLATE_DIR:
            assert not [f for f in os.listdir(path) if f.endswith(".json")], path


def _reads_attribute(tree: ast.Module, attr: str) -> bool:
    return any(isinstance(n, ast.Constant) and n.value == attr for n in ast.walk(tree))


def test_node_list_sends_output_tooltips_and_search_aliases_where_known():
    tree = _source("server.py")
    assert _reads_attribute(tree, "OUTPUT_TOOLTIPS")
    with open(os.path.join(COMFY, "comfyui_version.py"), encoding="utf-8") as f:
        version = ast.literal_eval(next(ln.split("=", 1)[1].strip() for ln in f if ln.startswith("__version__")))
    major_minor = tuple(int(x) for x in version.split(".")[:2])
    if major_minor >= (0, 33):  # 0.3.64 has no search aliases; ours are then simply not sent
        assert _reads_attribute(tree, "SEARCH_ALIASES"), version
