"""The documented public API in ``ovi_core/__init__.py``: each name is the defining module's object, loaded lazily,
and the docstring's example runs as written."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import ovi_core


def test_public_names_are_the_defining_objects():
    for name, module in ovi_core._PUBLIC.items():
        assert getattr(ovi_core, name) is getattr(importlib.import_module(module), name)
    with pytest.raises(AttributeError, match="no attribute 'sample_av'"):
        ovi_core.sample_av  # noqa: B018


def test_import_stays_cheap():
    code = "import sys, ovi_core; print(any(m.startswith(('torch', 'ovi_core.pipeline')) for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_docstring_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    doc = ovi_core.__doc__
    lines = []
    for line in doc.split("::", 1)[1].splitlines()[1:]:
        if line.strip() and not line.startswith("    "):
            break
        lines.append(line[4:])
    example = "\n".join(lines)
    assert "OviPipeline.save" in example
    exec(compile(example, "ovi_core example", "exec"), {})
    assert (tmp_path / "out.mp4").stat().st_size > 0
