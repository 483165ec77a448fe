"""The ComfyUI functions and classes ``nodes/`` calls exist in a real ComfyUI tree with signatures that accept the
pack's calls (issue #20). Read with ``ast`` from ``$COMFYUI_PATH`` (nothing of ComfyUI is imported), so any
installed version can be checked: ``COMFYUI_PATH=/path/to/ComfyUI pytest tests/test_comfy_signatures.py``.

Skipped without ``COMFYUI_PATH`` (CI has no ComfyUI tree), as is tests/test_comfy_templates.py.
"""

from __future__ import annotations

import ast
import os

import pytest
from comfy_ast import comfy_calls

COMFY = os.environ.get("COMFYUI_PATH", "")
pytestmark = pytest.mark.skipif(not COMFY, reason="set COMFYUI_PATH to a ComfyUI tree to check its signatures")

# methods the pack calls on a ModelPatcher instance: name -> (positional args, keywords)
PATCHER_METHODS = {"loaded_size": (0, ()), "current_loaded_device": (0, ()), "detach": (0, ()),
                   "add_callback_with_key": (3, ())}
# functions looked up by name (getattr), all called without arguments
BY_NAME = ("unet_offload_device", "text_encoder_offload_device", "vae_offload_device", "extra_reserved_memory")
VRAM_STATES = ("NO_VRAM", "LOW_VRAM", "NORMAL_VRAM", "HIGH_VRAM")


def _tree(module: str) -> ast.Module:
    path = os.path.join(COMFY, *module.split(".")) + ".py"
    assert os.path.isfile(path), f"{module} not found in {COMFY}"
    with open(path, encoding="utf-8") as f:
        return ast.parse(f.read(), filename=path)


def _top(tree: ast.Module, name: str):
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == name:
            return node
    return None


def _method(cls: ast.ClassDef, name: str):
    for node in cls.body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return node
    return None


def accepts(fn: ast.FunctionDef, npos: int, keywords: tuple[str, ...], *, bound: bool = False) -> str | None:
    """Why a call with ``npos`` positional arguments and ``keywords`` cannot bind to ``fn`` (None: it can)."""
    a = fn.args
    pos = [p.arg for p in a.posonlyargs + a.args][1 if bound else 0:]
    defaults = len(a.defaults)
    required = pos[: len(pos) - defaults]
    if npos > len(pos) and a.vararg is None:
        return f"{npos} positional arguments, {fn.name} takes {len(pos)}"
    names = set(pos[npos:]) | {k.arg for k in a.kwonlyargs}
    for k in keywords:
        if k not in names and a.kwarg is None:
            return f"keyword {k!r} unknown to {fn.name}{tuple(pos)}"
    given = set(pos[:npos]) | set(keywords)
    missing = [r for r in required if r not in given]
    missing += [k.arg for k, d in zip(a.kwonlyargs, a.kw_defaults, strict=True) if d is None and k.arg not in given]
    return f"{fn.name} needs {missing}" if missing else None


def test_every_comfy_call_of_the_pack_binds():
    calls = comfy_calls()
    names = {(c.module, c.name) for c in calls}
    assert ("comfy.model_management", "load_models_gpu") in names  # the walk finds the calls that matter
    assert ("comfy.model_management", "free_memory") in names
    assert ("comfy.model_patcher", "ModelPatcher") in names
    problems = []
    for c in calls:
        node = _top(_tree(c.module), c.name)
        if node is None:
            problems.append(f"{c.where}: {c.module}.{c.name} does not exist")
            continue
        if isinstance(node, ast.ClassDef):
            init = _method(node, "__init__")
            why = accepts(init, c.npos, c.keywords, bound=True) if init else None
        else:
            why = accepts(node, c.npos, c.keywords)
        if why:
            problems.append(f"{c.where}: {c.module}.{c.name}: {why}")
    assert problems == []


def test_free_memory_and_load_models_gpu_take_what_the_pack_passes():
    mm = _tree("comfy.model_management")
    free = _top(mm, "free_memory")
    assert accepts(free, 2, ()) is None  # free_memory(bytes, device)
    assert [p.arg for p in free.args.args[:3]] == ["memory_required", "device", "keep_loaded"]
    load = _top(mm, "load_models_gpu")
    assert accepts(load, 1, ("memory_required", "force_full_load")) is None
    for name in BY_NAME + ("get_free_memory", "get_torch_device"):
        assert isinstance(_top(mm, name), ast.FunctionDef), name
    assert accepts(_top(mm, "get_free_memory"), 1, ()) is None
    vram = _top(mm, "VRAMState")
    members = {t.id for n in vram.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    assert set(VRAM_STATES) <= members
    assert any(isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "vram_state" for t in n.targets)
               for n in mm.body)


def test_model_patcher_and_its_callbacks():
    cls = _top(_tree("comfy.model_patcher"), "ModelPatcher")
    init = _method(cls, "__init__")
    assert [p.arg for p in init.args.args[:4]] == ["self", "model", "load_device", "offload_device"]
    for name, (npos, kw) in PATCHER_METHODS.items():
        fn = _method(cls, name)
        assert fn is not None, f"ModelPatcher.{name} missing"
        assert accepts(fn, npos, kw, bound=True) is None, name
    cb = _top(_tree("comfy.patcher_extension"), "CallbacksMP")
    assert any(isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "ON_DETACH" for t in n.targets)
               for n in cb.body)


def test_comfy_ops_classes():
    ops = _tree("comfy.ops")
    for name in ("disable_weight_init", "manual_cast"):
        cls = _top(ops, name)
        assert isinstance(cls, ast.ClassDef), name
    inner = {n.name for n in _top(ops, "disable_weight_init").body if isinstance(n, ast.ClassDef)}
    assert {"Linear", "Conv2d", "Conv3d", "LayerNorm", "GroupNorm"} <= inner


def test_accepts_rejects_the_old_wrapper_signature():
    """The checker would have caught the wrapper that crashed ComfyUI 0.33: a 3-parameter ``free_memory`` called
    with ``load_models_gpu``'s keywords."""
    old = ast.parse("def free_memory(memory_required, device, keep_loaded=[]): pass").body[0]
    assert accepts(old, 2, ("for_dynamic", "pins_required")) is not None
    assert accepts(_top(_tree("comfy.model_management"), "free_memory"), 2, ()) is None
