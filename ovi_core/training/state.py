"""Training state on disk without pickles: tensors in safetensors, everything else in JSON.

A state (optimizer and scheduler state dicts, RNG states, step, losses) is a tree of dicts, lists, tuples,
numbers, strings, ``None`` and tensors. :func:`save_tree` writes it as ``NAME.json`` (the tree, each tensor
replaced by ``{"$tensor": key}``) plus ``NAME.safetensors`` (the tensors); :func:`load_tree` rebuilds it. The
reader accepts only those forms, so a file can hold data, never code.

Checkpoints written before this format (``state.pt``, ``rng-rank{R}.pt``) are read with
``torch.load(weights_only=True)``, which refuses any object that is not plain data (a planted pickle is an
error, not code that runs).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import Any

import torch

from ovi_core.io import checkpoints as ck
from ovi_core.io.files import atomic_path

FORMAT = 2  # 1: the pickled state.pt / rng-rank{R}.pt of the first releases
_T, _TUPLE, _DICT, _FLOAT = "$tensor", "$tuple", "$dict", "$float"


def _encode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj.detach().cpu().clone().contiguous()  # clone: safetensors refuses shared storage
        return {_T: key}
    if obj is None or isinstance(obj, (bool, str, int)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else {_FLOAT: repr(obj)}  # JSON has no nan/inf
    if isinstance(obj, tuple):
        return {_TUPLE: [_encode(v, tensors) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v, tensors) for v in obj]
    if isinstance(obj, Mapping):
        if all(isinstance(k, str) and not k.startswith("$") for k in obj):
            return {k: _encode(v, tensors) for k, v in obj.items()}
        return {_DICT: [[_encode(k, tensors), _encode(v, tensors)] for k, v in obj.items()]}
    raise TypeError(f"cannot store {type(obj).__name__} in a training state (tensors, numbers, strings, "
                    "lists, tuples and dicts only)")


def _decode(obj: Any, tensors: Mapping[str, torch.Tensor], where: str) -> Any:
    if obj is None or isinstance(obj, (bool, str, int, float)):
        return obj
    if isinstance(obj, list):
        return [_decode(v, tensors, where) for v in obj]
    if isinstance(obj, dict):
        if len(obj) == 1 and next(iter(obj)).startswith("$"):
            tag, val = next(iter(obj.items()))
            if tag == _T and isinstance(val, str) and val in tensors:
                return tensors[val]
            if tag == _TUPLE and isinstance(val, list):
                return tuple(_decode(v, tensors, where) for v in val)
            if tag == _DICT and isinstance(val, list) and all(isinstance(p, list) and len(p) == 2 for p in val):
                return {_decode(k, tensors, where): _decode(v, tensors, where) for k, v in val}
            if tag == _FLOAT and val in ("nan", "inf", "-inf"):
                return float(val)
            raise ck.CheckpointError(f"{where}: unknown or broken entry {json.dumps(obj)[:80]}; the file is damaged "
                                     "or was not written by this trainer.")
        return {k: _decode(v, tensors, where) for k, v in obj.items()}
    raise ck.CheckpointError(f"{where}: unexpected value {obj!r:.80}; the file is damaged.")


def save_tree(obj: Any, path: str) -> None:
    """Write ``path + '.json'`` and ``path + '.safetensors'`` (each atomically; the JSON last)."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    tree = _encode(obj, tensors)
    with atomic_path(path + ".safetensors", suffix=".safetensors") as tmp:
        save_file(tensors, tmp, metadata={"ovi.training_state": str(FORMAT)})
    with atomic_path(path + ".json", suffix=".json") as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump({"format": FORMAT, "tree": tree}, f, allow_nan=False)


def load_tree(path: str) -> Any:
    """The tree written by :func:`save_tree` at ``path`` (``path.json`` + ``path.safetensors``)."""
    doc = ck.read_json_file(path + ".json", what="Training state")
    if doc.get("format") != FORMAT or "tree" not in doc:
        raise ck.CheckpointError(f"Training state {path + '.json'!r} has format {doc.get('format')!r}; this "
                                 f"version reads format {FORMAT}.")
    tensors, _ = ck.read_tensor_file(path + ".safetensors", what="Training state tensors")
    return _decode(doc["tree"], tensors, path + ".json")


def has_tree(path: str) -> bool:
    return os.path.isfile(path + ".json")


def load_legacy(path: str) -> Any:
    """A pickled state of the first format, read with ``weights_only=True`` (plain data only)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Training state {path!r} not found; the checkpoint is incomplete.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001  (pickle.UnpicklingError and friends)
        raise ck.CheckpointError(
            f"Training state {path!r} was refused: it is not plain tensor data ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:200]}). Nothing in it was run. If you did not write this checkpoint, delete "
            "it; otherwise delete the checkpoint folder and resume from another, or start over."
        ) from e
