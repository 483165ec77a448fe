"""What ``nodes/`` does with ComfyUI's modules, read with ``ast`` (no import): shared by test_comfy_memory.py and
test_comfy_signatures.py.

A name is "bound to a comfy module" when it comes from ``import comfy...`` / ``from comfy... import``, or is assigned
the result of a call that returns one: ``__import__("comfy...")``, ``_try_import("comfy...")``, or a function of
``nodes/`` whose body returns such a call (``_comfy.model_management()``). Attribute chains of a bound name
(``comfy.model_management``) are bound too.
"""

from __future__ import annotations

import ast
import os
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NODES = os.path.join(ROOT, "nodes")


def _comfy_string(node: ast.AST) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.split(".")[0] == "comfy":
        return node.value
    return None


def _import_call(node: ast.AST) -> str | None:
    """``"comfy.x"`` when ``node`` is ``__import__("comfy.x", ...)`` or ``_try_import("comfy.x")``."""
    if isinstance(node, ast.Call) and node.args:
        fn = node.func
        name = fn.id if isinstance(fn, ast.Name) else fn.attr if isinstance(fn, ast.Attribute) else None
        if name in ("__import__", "_try_import", "import_module"):
            return _comfy_string(node.args[0])
    return None


def module_getters(trees: dict[str, ast.Module]) -> dict[str, str]:
    """Functions of ``nodes/`` that return a comfy module: name -> module."""
    out: dict[str, str] = {}
    for tree in trees.values():
        for fn in ast.walk(tree):
            if isinstance(fn, ast.FunctionDef):
                for r in ast.walk(fn):
                    if isinstance(r, ast.Return) and r.value is not None and _import_call(r.value):
                        out[fn.name] = _import_call(r.value)
    return out


def parse_nodes() -> dict[str, ast.Module]:
    out = {}
    for f in sorted(os.listdir(NODES)):
        if f.endswith(".py"):
            with open(os.path.join(NODES, f), encoding="utf-8") as fh:
                out[f] = ast.parse(fh.read(), filename=f)
    return out


class Bindings:
    """Which names of one scope tree hold comfy modules (flow-insensitive: any binding counts)."""

    def __init__(self, tree: ast.AST, getters: dict[str, str]) -> None:
        self.getters = getters
        self.names: dict[str, str] = {}
        changed = True
        while changed:  # fixpoint: ``a = comfy.x; b = a``
            changed = False
            for node in ast.walk(tree):
                for name, mod in self._binds(node):
                    if self.names.get(name) != mod:
                        self.names[name] = mod
                        changed = True

    def _binds(self, node: ast.AST):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "comfy":
                    yield (a.asname or a.name.split(".")[0]), (a.name if a.asname else "comfy")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "comfy":
            for a in node.names:
                yield (a.asname or a.name), f"{node.module}.{a.name}"
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.NamedExpr)):
            value = node.value
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                pairs = [(t, value)]
                if isinstance(t, ast.Tuple) and isinstance(value, ast.Tuple) and len(t.elts) == len(value.elts):
                    pairs = list(zip(t.elts, value.elts, strict=True))  # ``mm, mp = get_mm(), get_mp()``
                for tgt, val in pairs:
                    mod = self.module_of(val) if val is not None else None
                    if mod and isinstance(tgt, ast.Name):
                        yield tgt.id, mod

    def module_of(self, node: ast.AST) -> str | None:
        """The comfy module (dotted) an expression evaluates to, else None."""
        if isinstance(node, ast.Name):
            return self.names.get(node.id)
        if isinstance(node, ast.Attribute):
            base = self.module_of(node.value)
            return f"{base}.{node.attr}" if base else None
        if isinstance(node, ast.Call):
            imp = _import_call(node)
            if imp:
                return imp
            fn = node.func
            name = fn.id if isinstance(fn, ast.Name) else fn.attr if isinstance(fn, ast.Attribute) else None
            if name in self.getters and not node.args:
                return self.getters[name]
        if isinstance(node, ast.BoolOp):  # ``_try_import(...) or fallback``
            for v in node.values:
                m = self.module_of(v)
                if m:
                    return m
        return None


def assignments_to_comfy(source: str, getters: dict[str, str] | None = None, filename: str = "<src>") -> list[str]:
    """Every place in ``source`` that assigns (or deletes) an attribute of a comfy module: ``mm.f = ...``,
    ``comfy.x.y += ...``, ``setattr(mm, ...)``, ``delattr(...)``, ``del mm.f``."""
    tree = ast.parse(source, filename=filename)
    b = Bindings(tree, getters or {})
    hits = []

    def check(target: ast.AST, node: ast.AST) -> None:
        if isinstance(target, ast.Attribute) and b.module_of(target.value):
            hits.append(f"{filename}:{node.lineno}: {ast.unparse(target)}")
        elif isinstance(target, (ast.Tuple, ast.List)):
            for t in target.elts:
                check(t, node)

    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            for t in node.targets:
                check(t, node)
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            check(node.target, node)
        elif isinstance(node, ast.Delete):
            for t in node.targets:
                check(t, node)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("setattr", "delattr"):
            if node.args and b.module_of(node.args[0]):
                hits.append(f"{filename}:{node.lineno}: {ast.unparse(node)}")
    return hits


@dataclass
class ComfyCall:
    """A call of a comfy function or class from ``nodes/``: ``module.name(npos positional, keywords)``."""

    where: str
    module: str
    name: str
    npos: int
    keywords: tuple[str, ...]


def comfy_calls() -> list[ComfyCall]:
    """Every direct call of a function or class of a comfy module in ``nodes/`` (``mm.load_models_gpu(...)``)."""
    trees = parse_nodes()
    getters = module_getters(trees)
    out = []
    for fname, tree in trees.items():
        b = Bindings(tree, getters)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                mod = b.module_of(node.func.value)
                if mod and not any(isinstance(a, ast.Starred) for a in node.args):
                    out.append(ComfyCall(f"{fname}:{node.lineno}", mod, node.func.attr, len(node.args),
                                         tuple(k.arg for k in node.keywords if k.arg)))
    return out
