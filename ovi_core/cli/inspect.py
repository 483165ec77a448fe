"""``inspect`` for fusion-model files in the formats of this package (GGUF, kijai layout, fp8_scaled)."""

from __future__ import annotations

import math
import os

from ovi_core.io import checkpoints as ck
from ovi_core.io.checkpoint_id import identify
from ovi_core.quant.sources import Source, is_gguf, open_source


def format_of(path: str | os.PathLike) -> Source | None:
    """The :class:`Source` of an Ovi fusion/tower file, or None when it is not one."""
    try:
        return open_source(path)
    except (ck.CheckpointError, ValueError):
        return None


def needs_own_report(path: str | os.PathLike) -> bool:
    """True for files the generic checkpoint inspection cannot read or name: GGUF, kijai layout, scaled fp8."""
    if is_gguf(path):
        return True
    src = format_of(path)
    return src is not None and (src.layout.style != "official" or src.layout.scaled)


def fusion_report(path: str | os.PathLike) -> dict:
    """The ``inspect`` report of a fusion/tower file: format, towers, quantized tensor types, strict check."""
    from ovi_core.model.loader import shapes_for

    path = os.fspath(path)
    src = open_source(path)
    shapes = {k: v.shape for k, v in src.infos.items()}
    ident = identify(src.infos, path=path)
    counts: dict[str, int] = {}
    for q in src.qtypes.values():
        counts[q] = counts.get(q, 0) + 1
    rep = {
        "file": path,
        "component": ident.component,
        "description": ident.description,
        "format": src.describe(),
        "version": ident.version,
        "dtype": ident.dtype,
        "parameters": sum(math.prod(s) for s in shapes.values()),
        "tensors": len(src.infos),
        "quantized_tensors": counts,
        "notes": list(ident.notes),
        "loads_strictly": False,
    }
    if len(src.layout.towers) == 1:
        other = "audio" if src.layout.towers[0] == "video" else "video"
        rep["notes"].append(f"one tower of a split pair: load it together with the {other} tower file")
    try:
        ck.check_shapes(shapes_for(shapes), shapes, path=path, what="fusion", ident=ident)
        rep["loads_strictly"] = True
    except ValueError as e:
        rep["problem"] = str(e)
    return rep


__all__ = ["format_of", "needs_own_report", "fusion_report"]
