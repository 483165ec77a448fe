"""Repository-level rules: CI runs README's test command; ovi_core never imports ComfyUI."""

import ast
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMFY_MODULES = {"comfy", "comfy_api", "comfy_extras", "folder_paths", "nodes", "server", "execution"}


def _ci_command() -> str:
    lines = [ln for ln in open(os.path.join(ROOT, ".ci", "run")).read().splitlines() if ln and not ln.startswith("#")]
    return [ln for ln in lines if "pytest" in ln][0].strip()


def test_ci_runs_readme_test_command():
    readme = open(os.path.join(ROOT, "README.md")).read()
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", readme, re.S)
    commands = {ln.strip() for b in blocks for ln in b.splitlines()}
    assert _ci_command() in commands


def test_ovi_core_never_imports_comfyui():
    offenders = []
    for dirpath, _, files in os.walk(os.path.join(ROOT, "ovi_core")):
        for f in files:
            if not f.endswith(".py"):
                continue
            path = os.path.join(dirpath, f)
            tree = ast.parse(open(path).read(), path)
            for node in ast.walk(tree):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                for n in names:
                    if n.split(".")[0] in COMFY_MODULES:
                        offenders.append(f"{path}: {n}")
    assert not offenders, offenders


def test_plugin_entry_imports_as_a_loose_module():
    """pytest imports the repo-root ``__init__.py`` without a parent package when the checkout's folder name is
    not an identifier (``git clone .../ComfyUI-Ovi``); that import must work, not only ComfyUI's package import."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("__init__", os.path.join(ROOT, "__init__.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert "OviJointSampler" in module.NODE_CLASS_MAPPINGS
