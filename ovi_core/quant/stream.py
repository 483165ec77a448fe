"""Reading and writing safetensors one tensor at a time, with plain file reads (no memory map).

Used where the peak memory must stay near one tensor (``quantize``) or near the *output* model (loading a
bf16 file for fp32 compute: each tensor is read, cast, and its bf16 copy freed before the next one, so the
peak is the fp32 model plus one tensor instead of the fp32 model plus the whole mapped file).
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import torch

from ovi_core.io import checkpoints as ck

_TO_ST = {v: k for k, v in ck._ST_DTYPES.items()}


@dataclass(frozen=True)
class Entry:
    """One tensor of a safetensors file: dtype, shape and absolute byte range in the file."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int
    end: int


def read_index(path: str | os.PathLike) -> tuple[dict[str, Entry], dict[str, str]]:
    """``({name: Entry}, metadata)`` of a safetensors file (header only; validated by
    :func:`ovi_core.io.checkpoints.read_safetensors_header` first)."""
    path = os.fspath(path)
    ck.read_safetensors_header(path)
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    meta = header.pop("__metadata__", None) or {}
    base = 8 + n
    out = {}
    for name, e in header.items():
        a, b = e["data_offsets"]
        out[name] = Entry(name, ck._ST_DTYPES[e["dtype"]], tuple(e["shape"]), base + a, base + b)
    return out, meta


def read_tensor(f, entry: Entry, *, device: str | torch.device = "cpu",
                buffer: torch.Tensor | None = None) -> torch.Tensor:
    """Read one tensor from the open file ``f`` into fresh memory (then moved to ``device``).

    ``buffer`` (uint8, at least the tensor's size): read into it instead and return a view of it — for a
    tensor that is cast right away, so one staging buffer serves the whole file and the freed copies
    leave no holes in the heap (which otherwise cost up to half the file in resident memory)."""
    nb = entry.end - entry.start
    buf = buffer[:nb] if buffer is not None and buffer.numel() >= nb else torch.empty(nb, dtype=torch.uint8)
    f.seek(entry.start)
    if nb:
        got = f.readinto(memoryview(buf.numpy()))
        if got != nb:
            raise ck.CheckpointError(f"{getattr(f, 'name', '?')!r}: tensor {entry.name!r} is truncated "
                                     f"({got} of {nb} bytes); download the file again.")
    t = buf.view(entry.dtype).reshape(entry.shape)
    return t if torch.device(device).type == "cpu" else t.to(device)


def iter_tensors(path: str | os.PathLike, names: Iterable[str] | None = None, *,
                 device: str | torch.device = "cpu") -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(name, tensor)`` for ``names`` (default: all, in file order), one at a time."""
    index, _ = read_index(path)
    order = sorted(index.values(), key=lambda e: e.start) if names is None else [index[n] for n in names]
    with open(os.fspath(path), "rb") as f:
        for e in order:
            yield e.name, read_tensor(f, e, device=device)


class SafetensorsWriter:
    """Write a safetensors file tensor by tensor: declare every tensor first, then :meth:`write` each in order.

    ``plan``: ``{name: (dtype, shape)}`` in the order the tensors will be written.
    """

    def __init__(self, f, plan: Mapping[str, tuple[torch.dtype, tuple[int, ...]]], *,
                 metadata: Mapping[str, str] | None = None) -> None:
        self.f = f
        header: dict = {}
        if metadata:
            header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
        off = 0
        self._sizes: list[tuple[str, int]] = []
        for name, (dtype, shape) in plan.items():
            nb = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
            header[name] = {"dtype": _TO_ST[dtype], "shape": list(shape), "data_offsets": [off, off + nb]}
            self._sizes.append((name, nb))
            off += nb
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        self._next = 0

    def write(self, name: str, tensor: torch.Tensor) -> None:
        want, nb = self._sizes[self._next]
        if name != want:
            raise ValueError(f"tensors must be written in the declared order: expected {want!r}, got {name!r}.")
        data = tensor.detach().contiguous().cpu().reshape(-1).view(torch.uint8)
        if data.numel() != nb:
            raise ValueError(f"{name!r}: {data.numel()} bytes, declared {nb}.")
        self.f.write(memoryview(data.numpy()))
        self._next += 1

    def close(self) -> None:
        if self._next != len(self._sizes):
            raise ValueError(f"only {self._next} of {len(self._sizes)} declared tensors were written.")


__all__ = ["Entry", "read_index", "read_tensor", "iter_tensors", "SafetensorsWriter"]
