"""One fusion-model file of any supported format, seen under official tensor names.

Formats: safetensors or ``.pt`` in the official layout or kijai's (split video/audio files, combined file,
``fp8_e4m3fn_scaled``), and GGUF (:mod:`ovi_core.quant.gguf_file`). :func:`open_source` reads only headers;
:func:`iter_load` yields ready-to-adopt tensors one at a time:

* float tensors cast to the compute dtype one by one (when a cast is needed the file is read with plain
  reads, so a bf16 file loaded for fp32 compute peaks near the fp32 model, not model + mapped file);
* official fp8 tensors unchanged (upcast per layer at call time, as before);
* scaled fp8 weights and GGUF-quantized weights as :class:`~ovi_core.quant.tensor.QuantizedWeight`;
* with ``float8``, the weights of the official fp8 layout (:func:`fp8_eligible`) converted to that float8 dtype
  on the CPU, tensor by tensor, before they go to the device: a bf16 file loaded as fp8 for a GPU never holds
  a bf16 copy of the model there (the device peak is the fp8 model, not bf16 + fp8).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import torch

from ovi_core.io import checkpoints as ck
from ovi_core.io.checkpoint_id import TensorInfo, _dominant_dtype, identify
from ovi_core.quant import fp8 as f8
from ovi_core.quant import ggml, stream
from ovi_core.quant.gguf_file import GGUFTensor, read_gguf_index, read_raw
from ovi_core.quant.kijai import Layout, layout_of
from ovi_core.quant.tensor import QuantizedWeight

logger = logging.getLogger(__name__)

GGUF_EXT = (".gguf",)


def is_gguf(path: str | os.PathLike) -> bool:
    p = os.fspath(path)
    if p.lower().endswith(GGUF_EXT):
        return True
    try:
        with open(p, "rb") as f:
            return f.read(4) == b"GGUF"
    except OSError:
        return False


@dataclass
class Source:
    """A fusion-model file. ``infos``: ``{official name: TensorInfo(logical shape, stored dtype)}``;
    ``qtypes``: ``{official name: format}`` of the quantized tensors (``"Q4_K"``, ``"fp8_scaled"``, ...)."""

    path: str
    kind: str  # "safetensors" | "pickle" | "gguf"
    layout: Layout
    infos: dict[str, TensorInfo]
    qtypes: dict[str, str] = field(default_factory=dict)
    gguf: dict[str, GGUFTensor] | None = None
    raw_infos: dict[str, TensorInfo] | None = None

    @property
    def format(self) -> str:
        """E.g. ``"GGUF Q4_K"``, ``"fp8_e4m3fn_scaled"``, ``"fp8 e4m3fn"``, ``"bf16"``."""
        if self.kind == "gguf":
            counts: dict[str, int] = {}
            for q in self.qtypes.values():
                counts[q] = counts.get(q, 0) + 1
            main = max(counts, key=counts.get) if counts else "F16/F32"
            return f"GGUF {main}"
        if self.layout.scaled:
            return "fp8_e4m3fn_scaled"
        dts = {str(i.dtype).replace("torch.", "") for i in self.infos.values()}
        fp8s = sorted(d for d in dts if "float8" in d)
        if fp8s:
            return "fp8 " + fp8s[0].replace("float8_", "")
        return _dominant_dtype(self.infos)

    def describe(self) -> str:
        return f"{self.format} ({self.layout.describe()})"


def open_source(path: str | os.PathLike) -> Source:
    """Read a file's header and map it onto official names; :class:`CheckpointError` if it is no Ovi file."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"Checkpoint not found: {path!r}. Check the path, or put the file there.")
    if is_gguf(path):
        index, _meta = read_gguf_index(path)
        shapes = {k: t.shape for k, t in index.items()}
        lay = layout_of(shapes)
        if lay is None:
            raise NotOviError(f"{path!r} is a GGUF file but not of an Ovi fusion model or tower "
                                     f"(no video_model./audio_model. blocks with k_fusion; e.g. {sorted(index)[:3]}).")
        infos, qtypes = {}, {}
        for name, key in lay.names.items():
            t = index[key]
            dt = ggml.FLOAT_TYPES.get(t.qtype, torch.uint8)
            infos[name] = TensorInfo(t.shape, dt)
            if t.qtype in ggml.QUANTIZED:
                qtypes[name] = ggml.TYPE_NAMES[t.qtype]
        return Source(path, "gguf", lay, infos, qtypes, gguf=index)
    raw = ck.peek(path)
    lay = layout_of({k: v.shape for k, v in raw.items()})
    if lay is None:
        raise not_ovi(path, raw)
    infos = {name: raw[key] for name, key in lay.names.items()}
    qtypes = {}
    for w, skey in lay.scales.items():
        if w not in lay.names:
            raise ck.CheckpointError(f"{path!r} (fp8_e4m3fn_scaled): {skey!r} has no weight {w!r}; the file is "
                                     "damaged or not an Ovi file.")
        if infos[w].dtype not in f8.FP8_DTYPES:
            raise ck.CheckpointError(f"{path!r} (fp8_e4m3fn_scaled): {w!r} is {infos[w].dtype}, but it has a "
                                     "scale_weight; only float8 weights are scaled.")
        qtypes[w] = "fp8_scaled"
    if lay.scaled:
        unscaled = [n for n, i in infos.items() if i.dtype in f8.FP8_DTYPES and n not in lay.scales]
        if unscaled:
            logger.warning("%s: %d float8 tensors have no scale_weight (e.g. %s); they are used unscaled",
                           path, len(unscaled), unscaled[0])
    kind = "safetensors" if ck._is_safetensors(path) else "pickle"
    return Source(path, kind, lay, infos, qtypes, raw_infos=raw)


def read_scales(src: Source, *, whole_file: bool = True) -> dict[str, float]:
    """``{weight name: scale}`` of an fp8_scaled file, each checked by :func:`ovi_core.quant.fp8.scale_value` (a
    finite number above 0; ``ValueError`` naming the tensor). Safetensors: only the scale tensors are read; a pickled
    file is read whole, or with ``whole_file=False`` skipped (empty), as a check before loading would read it twice."""
    lay = src.layout
    if not lay.scales or src.kind == "gguf":
        return {}
    keys = list(lay.scales.values())
    if src.kind == "safetensors":
        got = dict(stream.iter_tensors(src.path, keys))
    elif whole_file:
        sd = ck.load_state_dict(src.path)
        got = {k: sd[k] for k in keys}
    else:
        return {}
    try:
        return {w: f8.scale_value(got[k], name=k) for w, k in lay.scales.items()}
    except ValueError as e:
        raise ValueError(f"{src.path!r}: {e}") from None


class NotOviError(ck.CheckpointError):
    """The file is readable but holds no Ovi fusion model or tower."""


def not_ovi(path: str, infos) -> ck.CheckpointError:
    ident = identify(infos, path=path)
    return NotOviError(
        f"{path!r} is not an Ovi fusion model or tower file (it looks like: {ident.description}). Pass the "
        "official fusion file, a GGUF made by `python -m ovi_core quantize`, or kijai's video + audio files."
    )


def _cast(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if t.dtype in f8.FP8_DTYPES or not t.is_floating_point() or t.dtype == dtype:
        return t
    return t.to(dtype)


def fp8_eligible(name: str) -> bool:
    """Whether the official fp8 layout stores tensor ``name`` in float8: all but norms and biases."""
    return "norm" not in name and "bias" not in name


def iter_load(src: Source, names: Iterable[str], *, device: str | torch.device, dtype: torch.dtype,
              float8: torch.dtype | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(official name, tensor)`` for ``names`` of ``src``, ready to adopt (see module docstring).

    ``float8`` (``torch.float8_e4m3fn`` or ``torch.float8_e5m2``): store the :func:`fp8_eligible` float tensors in
    it, converted on the CPU (after the cast to ``dtype``, as ``fp8_state_dict`` of the loaded model would) and
    only then moved to ``device``. Tensors that are float8 or quantized already are left as they are."""
    names = list(names)
    device = torch.device(device)
    if float8 is not None and float8 not in f8.FP8_DTYPES:
        raise ValueError(f"float8 must be one of {f8.FP8_DTYPES} or None, got {float8}.")
    lay = src.layout
    if src.kind == "gguf":
        with open(src.path, "rb") as f:
            for n in names:
                t = src.gguf[lay.names[n]]
                raw = read_raw(f, t)
                if t.qtype in ggml.QUANTIZED:
                    out: torch.Tensor = QuantizedWeight.from_ggml(raw, t.qtype, t.shape)
                else:
                    out = ggml.dequantize(raw, t.qtype, t.shape, dtype)
                yield n, out.to(device)
        return
    scales = read_scales(src)  # tiny tensors; read them first

    def to_fp8(n: str, dt: torch.dtype) -> bool:
        return float8 is not None and n not in scales and dt.is_floating_point and dt not in f8.FP8_DTYPES \
            and fp8_eligible(n)

    def finish(n: str, t: torch.Tensor) -> torch.Tensor:
        if n in scales:
            return QuantizedWeight.from_fp8(t, scales[n])
        t = _cast(t, dtype)
        return t.to(float8) if to_fp8(n, t.dtype) else t

    needs_cast = any(i.is_floating_point and i not in f8.FP8_DTYPES and i != dtype
                     for i in (src.infos[n].dtype for n in names))
    if src.kind == "safetensors" and (needs_cast or float8 is not None):
        index, _ = stream.read_index(src.path)
        order = sorted(names, key=lambda n: index[lay.names[n]].start)
        entries = [index[lay.names[n]] for n in order]
        staging = torch.empty(max(e.end - e.start for e in entries), dtype=torch.uint8)
        with open(src.path, "rb") as f:
            for n, e in zip(order, entries, strict=True):
                casts = n not in scales and e.dtype.is_floating_point and e.dtype not in f8.FP8_DTYPES and (
                    e.dtype != dtype or to_fp8(n, e.dtype))  # finish() returns a new tensor: read via staging
                t = stream.read_tensor(f, e, buffer=staging if casts else None)
                out = finish(n, t)
                del t
                yield n, out.to(device)
        return
    if float8 is not None or device.type == "meta":  # convert on the CPU, then move tensor by tensor
        raw_sd = ck.load_state_dict(src.path, device="cpu")
        for n in names:
            yield n, finish(n, raw_sd.pop(lay.names[n])).to(device)
        del raw_sd
        return
    raw_sd = ck.load_state_dict(src.path, device=device)
    for n in names:
        yield n, finish(n, raw_sd.pop(lay.names[n]))
    del raw_sd


__all__ = ["NotOviError", "Source", "open_source", "iter_load", "fp8_eligible", "is_gguf", "not_ovi"]
