"""GGUF files for the Ovi fusion DiT, following ComfyUI-GGUF's conventions (city96/ComfyUI-GGUF).

Read from ComfyUI-GGUF @795e451: ``tools/convert.py`` (``handle_tensors``, ``convert_file``, ``ModelWan``) and
``loader.py`` (``gguf_sd_loader``, ``get_orig_shape``):

* ``general.architecture`` names the model (ours: ``"ovi"``; ``"wan"``-arch files with Ovi tensor names load
  too), plus ``general.quantization_version`` and ``general.file_type``;
* tensor names are the state-dict names, unchanged (here the official ``video_model.*`` / ``audio_model.*``);
* GGUF stores dimensions innermost first, so the torch shape is the reversed GGUF shape;
* tensors with more than 4 dimensions (the video patch embedding, ``[3072, 48, 1, 2, 2]``) are stored
  flattened to 2-D with their real shape in the ``comfy.gguf.orig_shape.<name>`` INT32 array, the key
  ComfyUI-GGUF's loader reads;
* 1-D tensors, tensors of at most 1024 values and ``.modulation`` stay F32; other unquantized tensors are
  BF16 when the source is bf16, else F16.

Writing is streamed: all tensor infos are declared first (sizes are known from the shapes), then each
tensor is read, quantized, written and freed. Reading uses the ``gguf`` package only for the header, then
plain file reads per tensor (no memory map stays alive, so resident memory is the loaded model only).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import torch

from ovi_core.quant import ggml

logger = logging.getLogger(__name__)

ARCH = "ovi"
ACCEPTED_ARCHS = ("ovi", "wan")
ORIG_SHAPE_KEY = "comfy.gguf.orig_shape."
MAX_DIMS = 4
# llama.cpp file types (gguf.LlamaFileType) for the dominant quantization
FILE_TYPES = {ggml.F32: 0, ggml.F16: 1, ggml.Q8_0: 7, ggml.Q4_K: 15, ggml.Q6_K: 18, ggml.BF16: 32}


@dataclass(frozen=True)
class GGUFTensor:
    """One tensor of a GGUF file: ``qtype`` (GGML id), logical torch ``shape``, byte range in the file."""

    name: str
    qtype: int
    shape: tuple[int, ...]
    offset: int
    nbytes: int


def stored_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Shape written to the file: ``shape``, or ``[shape[0], rest]`` when it has more than 4 dimensions."""
    return shape if len(shape) <= MAX_DIMS else (shape[0], math.prod(shape[1:]))


def _byte_shape(shape: tuple[int, ...], qtype: int) -> tuple[int, ...]:
    bs, ts = ggml.BLOCK[qtype]
    shape = tuple(shape) or (1,)
    return (*shape[:-1], shape[-1] // bs * ts)


def write_gguf(path: str | os.PathLike, plan: Mapping[str, tuple[int, tuple[int, ...]]],
               tensors: Iterable[tuple[str, torch.Tensor]], *, metadata: Mapping[str, str] | None = None,
               file_type: int | None = None, arch: str = ARCH) -> None:
    """Write a GGUF file. ``plan``: ``{name: (qtype, torch shape)}`` in writing order; ``tensors`` yields
    ``(name, tensor)`` in the same order: a float tensor is quantized to its qtype as it comes, a ``uint8`` one is
    taken as that qtype's bytes already (copied as they are). ``arch``: ``general.architecture``."""
    import gguf

    if arch not in ACCEPTED_ARCHS:
        raise ValueError(f"arch must be one of {ACCEPTED_ARCHS}, got {arch!r}.")
    w = gguf.GGUFWriter(path=None, arch=arch)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    if file_type is not None:
        w.add_file_type(FILE_TYPES.get(file_type, 1))
    for k, v in (metadata or {}).items():
        w.add_string(str(k), str(v))
    for name, (qtype, shape) in plan.items():
        st = stored_shape(tuple(shape))
        if st != tuple(shape):
            w.add_array(ORIG_SHAPE_KEY + name, [int(s) for s in shape])
        w.add_tensor_info(name, _byte_shape(st, qtype), np.dtype(np.uint8), ggml.nbytes(st, qtype), raw_dtype=qtype)
    w.write_header_to_file(path=os.fspath(path))
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    order = list(plan)
    n = 0
    for name, t in tensors:
        if n >= len(order) or name != order[n]:
            raise ValueError(f"GGUF tensors must come in the declared order; got {name!r} at position {n}.")
        qtype, shape = plan[name]
        st = stored_shape(tuple(shape))
        if t.dtype == torch.uint8:
            raw = t.reshape(-1)
            if raw.numel() != ggml.nbytes(st, qtype):
                raise ValueError(f"{name!r}: {raw.numel()} bytes given, {ggml.TYPE_NAMES[qtype]} {list(shape)} "
                                 f"takes {ggml.nbytes(st, qtype)}.")
        else:
            raw = ggml.quantize(t.reshape(st), qtype)
        w.write_tensor_data(raw.numpy().reshape(_byte_shape(st, qtype)))
        n += 1
        del raw
    if n != len(order):
        raise ValueError(f"only {n} of {len(order)} declared GGUF tensors were written.")
    w.close()


def _field_str(reader, key: str) -> str | None:
    f = reader.get_field(key)
    if f is None:
        return None
    return bytes(f.parts[f.data[-1]]).decode("utf-8")


#: caps checked from the fixed 24-byte header before anything else is parsed. An Ovi fusion GGUF has about 2,500
#: tensors and a dozen metadata keys; beyond these the file is damaged or hostile (parsing 400,000 keys took the
#: ``gguf`` reader over 90 s)
MAX_TENSORS = 65536
MAX_KV = 4096
MAX_HEADER_BYTES = 64 << 20


def check_gguf_header(path: str) -> None:
    """Refuse, from the fixed header alone, a GGUF file whose tensor or metadata counts are absurd."""
    import struct

    with open(path, "rb") as f:
        head = f.read(24)
    if len(head) < 24 or head[:4] != b"GGUF":
        raise ValueError(f"{path!r} is not a GGUF file (no GGUF magic at its start); download it again.")
    version = struct.unpack("<I", head[4:8])[0]
    if version not in (2, 3):
        raise ValueError(f"{path!r}: GGUF version {version} is not supported (2 or 3); download it again "
                         "(or re-quantize with `python -m ovi_core quantize`).")
    n_tensors, n_kv = struct.unpack("<QQ", head[8:24])
    if n_tensors > MAX_TENSORS or n_kv > MAX_KV:
        raise ValueError(f"{path!r} declares {n_tensors} tensors and {n_kv} metadata keys; an Ovi fusion GGUF has "
                         f"at most {MAX_TENSORS} tensors and {MAX_KV} keys. The file is damaged or not a model "
                         "file; download it again or re-quantize with `python -m ovi_core quantize`.")


def read_gguf_index(path: str | os.PathLike) -> tuple[dict[str, GGUFTensor], dict[str, str]]:
    """``({name: GGUFTensor}, {"general.architecture": ..., other string fields})`` without reading tensors.

    Raises ``ValueError`` for an unreadable file or an architecture other than Ovi/Wan.
    """
    import gguf

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"GGUF file not found: {path!r}.")
    check_gguf_header(path)
    try:
        reader = gguf.GGUFReader(path, "r")
    except Exception as e:  # noqa: BLE001  (ValueError, struct errors, truncated files)
        raise ValueError(f"{path!r} is not a readable GGUF file ({type(e).__name__}: {e}); download it again.") from e
    try:
        meta: dict[str, str] = {}
        for key, f in reader.fields.items():
            if len(f.types) == 1 and f.types[0] == gguf.GGUFValueType.STRING:
                meta[key] = _field_str(reader, key) or ""
        arch = meta.get("general.architecture")
        if arch is not None and arch not in ACCEPTED_ARCHS:
            raise ValueError(f"{path!r} is a GGUF file for architecture {arch!r}, not an Ovi fusion model "
                             f"(expected one of {ACCEPTED_ARCHS}).")
        out: dict[str, GGUFTensor] = {}
        size = os.path.getsize(path)
        for t in reader.tensors:
            qtype = int(t.tensor_type)
            if qtype not in ggml.BLOCK:
                raise ValueError(f"{path!r}: tensor {t.name!r} is {t.tensor_type.name}; supported GGML types are "
                                 f"{sorted(ggml.TYPE_NAMES.values())}. Re-quantize with `python -m ovi_core quantize`.")
            f = reader.get_field(ORIG_SHAPE_KEY + t.name)
            if f is not None:
                shape = tuple(int(f.parts[i][0]) for i in f.data)
            else:
                shape = tuple(int(v) for v in reversed(t.shape.tolist()))
            nb = int(t.n_bytes)
            n, (per_block, block_bytes) = int(t.n_elements), ggml.BLOCK[qtype]
            if math.prod(shape) != n or n % per_block or nb != n // per_block * block_bytes or min(shape, default=1) < 1:
                raise ValueError(f"{path!r}: tensor {t.name!r} claims shape {list(shape)} but stores {n} "
                                 f"{t.tensor_type.name} values in {nb} bytes; the file is damaged or was written "
                                 "wrongly. Re-quantize with `python -m ovi_core quantize`.")
            if t.data_offset + nb > size:
                raise ValueError(f"{path!r} is truncated (tensor {t.name!r} ends past the file); download it again.")
            out[t.name] = GGUFTensor(t.name, qtype, shape, int(t.data_offset), nb)
        start = min((t.offset for t in out.values()), default=size)
        if start > MAX_HEADER_BYTES:
            raise ValueError(f"{path!r} has a {start >> 20} MiB header (over {MAX_HEADER_BYTES >> 20} MiB); an Ovi "
                             "GGUF header is well under 1 MiB. The file is damaged; download it again.")
    finally:
        mm = getattr(reader, "data", None)
        if mm is not None and hasattr(mm, "_mmap") and mm._mmap is not None:
            del mm
        del reader
    return out, meta


#: byte offsets (within one block) of the fp16 scale fields of each quantized GGML type
SCALE_FIELDS = {ggml.Q8_0: (0,), ggml.Q6_K: (208,), ggml.Q4_K: (0, 2)}
_FLOAT_NP = {ggml.F32: np.float32, ggml.F16: np.float16}


def check_gguf_values(path: str | os.PathLike, index: Mapping[str, GGUFTensor] | None = None) -> None:
    """Refuse a GGUF file with a NaN/Inf block scale (or a NaN/Inf value in an F32/F16 tensor), naming the first
    bad tensor: read through a memory map, vectorized (exponent bits of the fp16 scales, in place), before any
    weights load. ``ValueError``."""
    path = os.fspath(path)
    if index is None:
        index = read_gguf_index(path)[0]
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    try:
        for t in index.values():
            if _has_bad_values(mm, t.offset, t):
                raise ValueError(f"{path!r}: {_bad_message(t)}")
    finally:
        del mm


def _bad_message(t: GGUFTensor) -> str:
    return (f"tensor {t.name!r} ({ggml.TYPE_NAMES[t.qtype]}) holds NaN or infinite block scales or values; the file "
            "is damaged (or was quantized from a diverged model). Download it again or re-quantize with "
            "`python -m ovi_core quantize`.")


def _has_bad_values(buf: np.ndarray, offset: int, t: GGUFTensor) -> bool:
    """Whether tensor ``t`` (its bytes at ``offset`` of the uint8 array ``buf``) has a NaN/Inf scale or value:
    integer tests of the exponent bits on strided views, no copy."""
    if t.qtype in SCALE_FIELDS:  # fp16 exponent all ones = NaN/Inf
        per = ggml.BLOCK[t.qtype][1]
        return any(bool(((np.ndarray((t.nbytes // per,), np.uint16, buf, offset + o, (per,)) & 0x7C00)
                         == 0x7C00).any()) for o in SCALE_FIELDS[t.qtype])
    raw = buf[offset:offset + t.nbytes]
    if t.qtype in _FLOAT_NP:
        return not bool(np.isfinite(raw.view(_FLOAT_NP[t.qtype])).all())
    if t.qtype == ggml.BF16:  # bf16 is the top half of an f32: exponent all ones = NaN/Inf
        return bool(((raw.view(np.uint16) & 0x7F80) == 0x7F80).any())
    return False


def read_raw(f, t: GGUFTensor) -> torch.Tensor:
    """The bytes of one tensor (``uint8 [nbytes]``) from the open file ``f``, in fresh memory."""
    buf = torch.empty(t.nbytes, dtype=torch.uint8)
    f.seek(t.offset)
    got = f.readinto(memoryview(buf.numpy()))
    if got != t.nbytes:
        raise ValueError(f"tensor {t.name!r}: read {got} of {t.nbytes} bytes; the file is truncated.")
    if _has_bad_values(buf.numpy(), 0, t):  # the same check as check_gguf_values, on bytes already read
        raise ValueError(_bad_message(t))
    return buf


__all__ = ["ARCH", "GGUFTensor", "write_gguf", "read_gguf_index", "check_gguf_header", "check_gguf_values", "read_raw",
           "stored_shape"]
