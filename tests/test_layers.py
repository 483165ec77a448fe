"""The library's shape: imports inside ``ovi_core/`` point down the layers only, and nothing imports in a circle.

Parsed with ``ast`` (lazy imports inside functions and ``TYPE_CHECKING`` blocks count too). Layers, top to bottom
(README "Layout"): cli -> pipeline/longclip/training -> sampling/conditioning/validate -> model/text/vae/audio/lora/
quant -> io/runtime -> sizes. A module may import its own layer or a lower one; the modules, the packages of
``ovi_core`` and the scripts of ``bench/`` each form an acyclic graph.
"""

from __future__ import annotations

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# rank: prefixes (a module takes the rank of its longest matching prefix)
LAYERS = {
    0: ("ovi_core.sizes",),
    1: ("ovi_core.io", "ovi_core.runtime"),
    2: ("ovi_core.model", "ovi_core.text", "ovi_core.vae", "ovi_core.audio", "ovi_core.lora", "ovi_core.quant"),
    3: ("ovi_core.sampling", "ovi_core.conditioning", "ovi_core.validate"),
    4: ("ovi_core.pipeline", "ovi_core.longclip", "ovi_core.training", "ovi_core.tiny"),
    5: ("ovi_core.cli", "ovi_core.__main__", "ovi_core.training.__main__"),
    6: ("ovi_core",),  # the public API in ovi_core/__init__.py: nothing inside the library imports it
}


def rank(module: str) -> int:
    best, best_len = None, -1
    for r, prefixes in LAYERS.items():
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best_len:
                best, best_len = r, len(p)
    assert best is not None, f"{module} is in no layer: add it to LAYERS"
    return best


def modules_of(folder: str, package: str | None) -> dict[str, str]:
    out = {}
    base = os.path.join(ROOT, folder)
    for dp, dn, fn in os.walk(base):
        dn[:] = [d for d in dn if d != "__pycache__"]
        for f in fn:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(dp, f), base)[:-3].replace(os.sep, ".")
                name = rel[: -len(".__init__")] if rel.endswith(".__init__") else rel
                if name == "__init__":
                    name = ""
                full = ".".join(x for x in (package, name) if x)
                out[full] = os.path.join(dp, f)
    return out


def import_edges(mods: dict[str, str]) -> dict[str, set[str]]:
    """module -> the modules of ``mods`` it imports (``from P import m`` counts as importing ``P.m``)."""
    edges: dict[str, set[str]] = {}
    for mod, path in mods.items():
        is_pkg = path.endswith("__init__.py")
        deps: set[str] = set()
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read(), path)):
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    parts = parts[: len(parts) - node.level + 1]
                    src = ".".join(parts + ([node.module] if node.module else []))
                else:
                    src = node.module or ""
                subs = [f"{src}.{a.name}" for a in node.names if f"{src}.{a.name}" in mods]
                deps.update(subs)
                if len(subs) < len(node.names):
                    deps.add(src)
        edges[mod] = {d for d in deps if d in mods and d != mod}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def package_of(module: str) -> str:
    """``ovi_core.X`` for a module of package X; a ``__main__`` module (a command entry point) stands alone."""
    parts = module.split(".")
    return module if parts[-1] == "__main__" else ".".join(parts[:2])


@pytest.fixture(scope="module")
def core_edges() -> dict[str, set[str]]:
    return import_edges(modules_of("ovi_core", "ovi_core"))


def test_no_upward_imports(core_edges):
    upward = [f"{m} (layer {rank(m)}) imports {d} (layer {rank(d)})"
              for m, deps in sorted(core_edges.items()) for d in sorted(deps) if rank(d) > rank(m)]
    assert not upward, "imports that point up the layers:\n" + "\n".join(upward)


def test_no_module_circles(core_edges):
    assert cycles(core_edges) == []


def test_no_package_circles(core_edges):
    pkg_edges: dict[str, set[str]] = {}
    for m, deps in core_edges.items():
        pkg_edges.setdefault(package_of(m), set()).update(package_of(d) for d in deps if package_of(d) != package_of(m))
    assert cycles(pkg_edges) == []


def test_no_bench_circles():
    mods = modules_of("bench", None)
    assert cycles(import_edges(mods)) == []


def test_top_level_stays_small():
    """The top of ``ovi_core/`` holds the modules a user imports; everything else lives in its concept's package."""
    top = sorted(f for f in os.listdir(os.path.join(ROOT, "ovi_core")) if f.endswith(".py"))
    assert top == ["__init__.py", "__main__.py", "pipeline.py", "sizes.py", "tiny.py", "validate.py"]


def test_the_checks_can_fail():
    """The checker itself: an upward import and a circle in a made-up graph are found."""
    edges = {"ovi_core.io.files": {"ovi_core.pipeline"}, "ovi_core.pipeline": {"ovi_core.io.files"}}
    assert cycles(edges) == [["ovi_core.io.files", "ovi_core.pipeline"]]
    assert rank("ovi_core.io.files") < rank("ovi_core.pipeline")
    assert rank("ovi_core.training.__main__") > rank("ovi_core.training.trainer")
