"""Reading checkpoint files, recognising what they are, and loading them strictly.

Every component loader goes through this module so that all of them:

* read ``.safetensors`` lazily (header first, tensors one by one) and ``.pt``/``.pth`` only with
  ``torch.load(weights_only=True, mmap=True)``;
* recognise a wrong file early and say what it appears to be (:func:`ovi_core.io.checkpoint_id.identify`);
* load with ``strict=True`` into a module built on the meta device (``assign=True``), so the weights
  exist once in memory, never twice;
* report missing / unexpected / mis-shaped keys with the file name and the first offenders.

Component modules expose (by convention):

* ``full_size_shapes() -> dict[str, list[int]]``: state-dict names and shapes of the official model,
  built on the meta device;
* ``shapes_for(shapes) -> dict[str, list[int]]``: infer the config from a file's shapes and return the
  shapes the matching module expects (raises ``ValueError`` when no config fits);
* ``load_<name>(path, *, device, dtype)`` returning the ready module.
"""

from __future__ import annotations

import json
import logging
import os
import re
import struct
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from ovi_core.io.checkpoint_id import Identification, TensorInfo, identify

logger = logging.getLogger(__name__)

SAFETENSORS_EXT = (".safetensors", ".sft")
PICKLE_EXT = (".pt", ".pth", ".ckpt", ".bin")

_ST_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


class CheckpointError(ValueError):
    """A file is not the checkpoint that was asked for, or is damaged. The message says what to do."""


# ----------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------


def _check_exists(path: str | os.PathLike) -> str:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"Checkpoint not found: {path!r}. Check the path, or put the file there.")
    if os.path.isdir(path):
        raise CheckpointError(f"{path!r} is a folder, not a checkpoint file.")
    return path


def _is_safetensors(path: str) -> bool:
    if path.lower().endswith(SAFETENSORS_EXT):
        return True
    if path.lower().endswith(PICKLE_EXT):
        return False
    # Unknown extension: sniff the header (8-byte little-endian length followed by '{').
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def read_safetensors_header(path: str | os.PathLike) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Return ``({name: TensorInfo}, metadata)`` from a safetensors header without reading tensors."""
    path = _check_exists(path)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise CheckpointError(f"{path!r} is empty or truncated (only {size} bytes); download it again.")
        (n,) = struct.unpack("<Q", raw)
        if n <= 0 or n > min(size - 8, 100 * 1024 * 1024):
            raise CheckpointError(
                f"{path!r} is not a valid safetensors file (header length {n} for a {size}-byte file); "
                "it is damaged or not a safetensors file. Download it again."
            )
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{path!r}: unreadable safetensors header ({e}). Download the file again.") from e
    if not isinstance(header, dict):
        raise CheckpointError(f"{path!r}: the safetensors header is not a JSON object; the file is damaged or not a "
                              "safetensors file. Download it again.")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path!r}: the safetensors metadata is not a JSON object; the file is damaged.")
    meta = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}
    infos: dict[str, TensorInfo] = {}
    end = 0
    for name, entry in header.items():
        if not isinstance(entry, dict):
            raise CheckpointError(f"{path!r}: the header entry of tensor {name!r} is not an object; the file is damaged.")
        dtype = _ST_DTYPES.get(entry.get("dtype"))
        if dtype is None:
            raise CheckpointError(f"{path!r}: tensor {name!r} has unsupported dtype {entry.get('dtype')!r}.")
        shape, offsets = entry.get("shape"), entry.get("data_offsets")
        if (not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape)
                or not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) and o >= 0 for o in offsets) or offsets[0] > offsets[1]):
            raise CheckpointError(f"{path!r}: tensor {name!r} has a malformed shape {shape!r} or data offsets "
                                  f"{offsets!r}; the file is damaged. Download or write it again.")
        infos[name] = TensorInfo(tuple(shape), dtype)
        end = max(end, offsets[1])
    if 8 + n + end > size:
        raise CheckpointError(
            f"{path!r} is truncated: its header describes {8 + n + end} bytes but the file has {size}. "
            "The download was interrupted; download it again."
        )
    return infos, meta


def _flatten(obj: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    if isinstance(obj, torch.Tensor):
        out[prefix.rstrip(".")] = obj
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}."))
    return out


_OTHER_FORMATS = ((b"GGUF", "a GGUF file (a quantized fusion model: give it as a fusion model, --fusion or the model "
                   "loader; a LoRA or a VAE is a .safetensors or .pth file)"),
                  (b"RIFF", "a RIFF (WAV/AVI) media file"), (b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"),
                  (b"\x1aE\xdf\xa3", "a Matroska/WebM video"))


def _unreadable(path: str, e: BaseException) -> CheckpointError:
    """The error for a file torch.load refused: what it is when its first bytes say so; PyTorch's own advice (to
    turn the safe mode off, which would run code from the file) is never passed on."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        head = b""
    for magic, what in _OTHER_FORMATS:
        if head.startswith(magic):
            return CheckpointError(f"{path!r} is {what}, not a PyTorch checkpoint; give the file this input expects.")
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return CheckpointError(f"{path!r} is an MP4/MOV media file, not a PyTorch checkpoint; give the file this "
                               "input expects.")
    text = str(e)
    if "weights only load failed" in text.lower():
        detail = "it holds objects other than plain tensors, which are never unpickled"
    else:
        detail = f"{type(e).__name__}: {text.strip().splitlines()[0][:200] if text.strip() else 'no detail'}"
    return CheckpointError(f"{path!r} could not be read safely as a PyTorch checkpoint ({detail}). Only plain "
                           "tensor checkpoints are loaded (weights_only=True); the file is damaged, truncated or not "
                           "a checkpoint: use the official file or a .safetensors copy.")


def _torch_load(path: str) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as e:
        if "mmap" in str(e).lower() or "zip" in str(e).lower():
            # Legacy (non-zip) pickles cannot be memory-mapped.
            try:
                return torch.load(path, map_location="cpu", weights_only=True)
            except Exception as e2:  # noqa: BLE001
                raise _unreadable(path, e2) from e2
        raise _unreadable(path, e) from e
    except Exception as e:  # noqa: BLE001  (pickle.UnpicklingError, EOFError, ...)
        raise _unreadable(path, e) from e


def load_state_dict(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Read every tensor of a checkpoint file into a flat ``{name: tensor}`` dict.

    ``.safetensors`` is read tensor by tensor; pickles are memory-mapped with ``weights_only=True``.
    Nested dicts (``{'generator': {...}}``, ``{'state_dict': {...}}``) are flattened with ``.`` separators.
    """
    path = _check_exists(path)
    if _is_safetensors(path):
        read_safetensors_header(path)  # validates size/truncation with a clear message
        from safetensors import safe_open

        out: dict[str, torch.Tensor] = {}
        try:
            with safe_open(path, framework="pt", device=str(device)) as f:
                for k in f.keys():
                    out[k] = f.get_tensor(k)
        except Exception as e:  # noqa: BLE001  (SafetensorError on a header that passed our checks)
            raise CheckpointError(f"{path!r} could not be read ({type(e).__name__}: {e}); it is damaged. Download "
                                  "or write it again.") from e
        return out
    obj = _torch_load(path)
    sd = _flatten(obj)
    if not sd:
        raise CheckpointError(f"{path!r} holds no tensors; it is not a model checkpoint.")
    if str(device) != "cpu":
        sd = {k: v.to(device) for k, v in sd.items()}
    return sd


def read_tensor_file(
    path: str | os.PathLike, *, what: str, required: Iterable[str] = (), device: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``({name: tensor}, metadata)`` of a tensor file (``.safetensors``, or a pickle read with ``weights_only``).

    The one reader for files a user can hand us (LoRAs, prepared latents, training state): every problem
    (missing, truncated, damaged, missing tensors ``required``) is a :class:`CheckpointError` (a ``ValueError``)
    or ``FileNotFoundError`` that names the file and ``what`` it should be, never a bare library error.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} {path!r} not found" + (" (it is a folder)" if os.path.isdir(path) else "")
                                + "; check the path.")
    try:
        sd = load_state_dict(path, device=device)
        meta = read_safetensors_header(path)[1] if _is_safetensors(path) else {}
    except CheckpointError as e:
        raise CheckpointError(f"{what}: {e}") from e
    except Exception as e:  # noqa: BLE001  (SafetensorError, OSError, RuntimeError from a damaged file)
        raise CheckpointError(f"{what} {path!r} could not be read ({type(e).__name__}: {e}); it is damaged or "
                              "not such a file. Write or download it again.") from e
    missing = [k for k in required if k not in sd]
    if missing:
        raise CheckpointError(f"{what} {path!r} lacks the tensors {missing} (it holds {_first(sd)}); it is not such "
                              "a file, or it was written by something else.")
    return sd, meta


def read_json_file(path: str | os.PathLike, *, what: str) -> dict[str, Any]:
    """A JSON object from ``path``; a missing, unreadable or non-object file is a clear error naming it."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} {path!r} not found; check the path.")
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{what} {path!r} is not UTF-8 text ({e}); it is damaged.") from e
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{what} {path!r} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); "
                              "it is damaged or was edited by hand. Fix it or write it again.") from e
    except OSError as e:
        raise CheckpointError(f"{what} {path!r} could not be read: {e}") from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"{what} {path!r} holds a JSON {type(obj).__name__}, expected an object {{...}}.")
    return obj


# ----------------------------------------------------------------------------------------------
# Metadata (user input: a file's metadata can say anything)
# ----------------------------------------------------------------------------------------------


def meta_int(meta: Mapping[str, Any], key: str, *, path: str, low: int, high: int, example: str) -> int | None:
    """``int(meta[key])`` checked to lie in ``[low, high]``; ``None`` when absent; a clear error otherwise."""
    if key not in meta:
        return None
    raw = meta[key]
    try:
        val = int(str(raw).strip())
    except ValueError:
        val = None
    if val is None or not low <= val <= high:
        raise CheckpointError(f"{path!r}: its metadata {key}={str(raw)[:40]!r} is not a whole number between {low} "
                              f"and {high} (e.g. {example}). Fix or remove that metadata entry.")
    return val


def meta_choice(meta: Mapping[str, Any], key: str, *, path: str, choices: Iterable[str]) -> str | None:
    """``meta[key]`` checked to be one of ``choices``; ``None`` when absent; a clear error otherwise."""
    if key not in meta:
        return None
    choices = tuple(choices)
    val = str(meta[key]).strip()
    if val not in choices:
        raise CheckpointError(f"{path!r}: its metadata {key}={val[:40]!r} is not one of {list(choices)}. Fix or "
                              "remove that metadata entry.")
    return val


def peek(path: str | os.PathLike) -> dict[str, TensorInfo]:
    """Names, shapes and dtypes of a checkpoint's tensors, reading as little as possible."""
    path = _check_exists(path)
    if _is_safetensors(path):
        return read_safetensors_header(path)[0]
    sd = _flatten(_torch_load(path))
    return {k: TensorInfo(tuple(v.shape), v.dtype) for k, v in sd.items()}


def strip_prefix(sd: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """Return the entries under ``prefix`` with the prefix removed (others dropped)."""
    return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}


# ----------------------------------------------------------------------------------------------
# Strict loading
# ----------------------------------------------------------------------------------------------


def _first(items: Iterable[str], n: int = 5) -> str:
    items = sorted(items)
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def check_shapes(
    expected: Mapping[str, Any], got: Mapping[str, Any], *, path: str, what: str, ident: Identification | None = None
) -> None:
    """Raise :class:`CheckpointError` unless ``got`` has exactly the names and shapes of ``expected``.

    Values may be tensors, ``TensorInfo`` or shape sequences.
    """

    def _shape(v: Any) -> tuple[int, ...]:
        if isinstance(v, torch.Tensor):
            return tuple(v.shape)
        if isinstance(v, TensorInfo):
            return v.shape
        return tuple(v)

    missing = set(expected) - set(got)
    unexpected = set(got) - set(expected)
    bad = [k for k in set(expected) & set(got) if _shape(expected[k]) != _shape(got[k])]
    if not (missing or unexpected or bad):
        return
    looks = ident.description if ident is not None else "see the key names below"
    parts = [f"{path!r} does not fit the {what} (it looks like: {looks})."]
    if missing:
        parts.append(f"Missing {len(missing)} tensors: {_first(missing)}.")
    if unexpected:
        parts.append(f"Unexpected {len(unexpected)} tensors: {_first(unexpected)}.")
    if bad:
        b = sorted(bad)[:3]
        parts.append(
            "Shape mismatch: " + "; ".join(f"{k} file {_shape(got[k])} vs model {_shape(expected[k])}" for k in b) + "."
        )
    parts.append(f"Pick the {what} file (see README, 'Weights').")
    raise CheckpointError(" ".join(parts))


def load_strict(module: nn.Module, sd: Mapping[str, torch.Tensor], *, path: str, what: str) -> nn.Module:
    """``module.load_state_dict(sd, strict=True, assign=True)`` with an actionable error on mismatch.

    ``module`` is typically built on the meta device; ``assign=True`` adopts the file's tensors without a
    second copy.
    """
    expected = module.state_dict()
    check_shapes(expected, sd, path=path, what=what, ident=identify({k: TensorInfo(tuple(v.shape), v.dtype)
                                                                      for k, v in sd.items()}, path=path))
    module.load_state_dict(sd, strict=True, assign=True)
    return module


def meta_shapes(module: nn.Module) -> dict[str, list[int]]:
    """``{name: shape}`` of a module's state dict (works on the meta device)."""
    return {k: list(v.shape) for k, v in module.state_dict().items()}


_FIRST_INT = re.compile(r"\.(\d+)\.")


def count_indexed(keys: Iterable[str], prefix: str) -> int:
    """Number of consecutive ``prefix{i}.`` groups (e.g. transformer blocks) present in ``keys``."""
    idx = set()
    for k in keys:
        if k.startswith(prefix):
            head = k[len(prefix) :].split(".", 1)[0]
            if head.isdigit():
                idx.add(int(head))
    return max(idx) + 1 if idx else 0
