"""``python -m ovi_core quantize IN OUT --format fp8|fp8_scaled|q8_0|q6_k|q4_k``: streamed, names kept.

* ``fp8``: the official fp8 layout (every tensor whose name contains neither ``norm`` nor ``bias`` in
  float8 e4m3fn, no scales), safetensors;
* ``fp8_scaled``: block Linear weights in float8 e4m3fn with a per-tensor ``<module>.scale_weight``
  (float32) and the ``scaled_fp8`` marker (kijai's/ComfyUI's convention), the rest unchanged; safetensors;
* ``q8_0`` / ``q6_k`` / ``q4_k``: GGUF in ComfyUI-GGUF's layout (:mod:`ovi_core.quant.gguf_file`), block
  Linear weights quantized (:mod:`ovi_core.quant.policy`).

The input (official or kijai layout, safetensors) is read one tensor at a time with plain reads and each
output tensor is written before the next is read, so the peak memory is about one tensor (plus its
float32 copy while it is quantized), never the model. Tensor names are the official ones.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import torch

from ovi_core.io import checkpoints as ck
from ovi_core.io.files import atomic_path
from ovi_core.quant import fp8 as f8
from ovi_core.quant import ggml, stream
from ovi_core.quant.gguf_file import write_gguf
from ovi_core.quant.policy import FORMATS, GGUF_FORMATS, gguf_type, quantizable
from ovi_core.quant.sources import Source, is_gguf, open_source
from ovi_core.quant.tensor import QuantizedWeight

logger = logging.getLogger(__name__)

_META_KEYS = ("ovi.version", "ovi.target_area")


def _order(src: Source) -> list[str]:
    """Official names in the order :func:`_read` yields them (the file's order for safetensors)."""
    if src.kind == "safetensors":
        index, _ = stream.read_index(src.path)
        return sorted(src.layout.names, key=lambda n: index[src.layout.names[n]].start)
    return sorted(src.layout.names)


def _read(src: Source) -> Iterator[tuple[str, torch.Tensor]]:
    """``(official name, tensor)`` in :func:`_order`, one tensor in memory at a time (scaled fp8 weights
    come dequantized to float32)."""
    lay = src.layout
    scales = {}
    order = _order(src)
    if src.kind == "safetensors":
        index, _ = stream.read_index(src.path)
        if lay.scales:
            got = dict(stream.iter_tensors(src.path, list(lay.scales.values())))
            scales = {w: f8.scale_value(got[k], name=k) for w, k in lay.scales.items()}
        with open(src.path, "rb") as f:
            for n in order:
                t = stream.read_tensor(f, index[lay.names[n]])
                if n in scales:
                    t = QuantizedWeight.from_fp8(t, scales[n]).dequantize(torch.float32)
                yield n, t
        return
    sd = ck.load_state_dict(src.path)  # memory-mapped pickle
    for k, skey in lay.scales.items():
        scales[k] = f8.scale_value(sd[skey], name=skey)
    for n in order:
        t = sd.pop(lay.names[n])
        yield n, QuantizedWeight.from_fp8(t, scales[n]).dequantize(torch.float32) if n in scales else t


def _metadata(path: str) -> dict[str, str]:
    if not ck._is_safetensors(path):
        return {}
    meta = ck.read_safetensors_header(path)[1]
    return {k: v for k, v in meta.items() if k in _META_KEYS}


def quantize_file(src_path: str | os.PathLike, out_path: str | os.PathLike, *, format: str) -> dict:
    """Write ``src_path`` (an Ovi fusion file) quantized to ``format`` at ``out_path``; returns a summary
    ``{"format", "tensors", "quantized", "bytes_in", "bytes_out", "types"}``."""
    if format not in FORMATS:
        raise ValueError(f"--format must be one of {FORMATS}, got {format!r}.")
    src_path, out_path = os.fspath(src_path), os.fspath(out_path)
    gguf_out = format in GGUF_FORMATS
    if gguf_out != out_path.lower().endswith(".gguf"):
        want = ".gguf" if gguf_out else ".safetensors"
        raise ValueError(f"format {format} writes {'GGUF' if gguf_out else 'safetensors'}; name the output *{want}.")
    if os.path.abspath(src_path) == os.path.abspath(out_path):
        raise ValueError("the output must be a new file, not the input.")
    if is_gguf(src_path):
        raise ValueError(f"{src_path!r} is already GGUF; quantize from the bf16 (or fp32) safetensors file.")
    src = open_source(src_path)
    if set(src.layout.towers) != {"video", "audio"}:
        raise ck.CheckpointError(f"{src_path!r} holds only the {src.layout.towers[0]} tower; quantize a file "
                                 "with both towers (the official fusion file, or kijai's combined file).")
    names = _order(src)  # output order = input order: each tensor is written as soon as it is read
    types: dict[str, int] = {}
    quantized = 0
    meta = {**_metadata(src_path), "ovi.quantization": format}
    with atomic_path(out_path, suffix=".gguf" if gguf_out else ".safetensors") as tmp:
        if gguf_out:
            target = GGUF_FORMATS[format]
            plan = {}
            for n in names:
                info = src.infos[n]
                q = gguf_type(n, info.shape, info.dtype, target)
                plan[n] = (q, info.shape)
                types[ggml.TYPE_NAMES[q]] = types.get(ggml.TYPE_NAMES[q], 0) + 1
                quantized += q in ggml.QUANTIZED
            write_gguf(tmp, plan, _read(src), metadata=meta, file_type=target)
        else:
            plan_st: dict[str, tuple[torch.dtype, tuple[int, ...]]] = {}
            for n in names:
                info = src.infos[n]
                dt = info.dtype
                if src.qtypes.get(n) == "fp8_scaled":
                    dt = torch.bfloat16
                if format == "fp8" and "norm" not in n and "bias" not in n:
                    dt = torch.float8_e4m3fn
                elif format == "fp8_scaled" and quantizable(n, info.shape):
                    dt = torch.float8_e4m3fn
                    plan_st[n] = (dt, info.shape)
                    plan_st[n[: -len(".weight")] + f8.SCALE_SUFFIX] = (torch.float32, ())
                    quantized += 1
                    types["F8_E4M3"] = types.get("F8_E4M3", 0) + 1
                    continue
                quantized += dt == torch.float8_e4m3fn
                plan_st[n] = (dt, info.shape)
                key = str(dt).replace("torch.", "")
                types[key] = types.get(key, 0) + 1
            if format == "fp8_scaled":
                plan_st[f8.MARKER] = (torch.float8_e4m3fn, (0,))
            # safetensors wants the header first: it is declared in read order, then filled tensor by tensor
            with open(tmp, "wb") as fo:
                w = stream.SafetensorsWriter(fo, plan_st, metadata={"format": "pt", **meta})
                pending: dict[str, torch.Tensor] = {}
                keys = list(plan_st)
                k = 0

                def drain() -> None:
                    nonlocal k
                    while k < len(keys):
                        key = keys[k]
                        if key == f8.MARKER:
                            w.write(key, torch.zeros(0, dtype=torch.float8_e4m3fn))
                        elif key.endswith(f8.SCALE_SUFFIX):
                            break  # written right after its weight
                        elif key in pending:
                            t = pending.pop(key)
                            dt, _ = plan_st[key]
                            if format == "fp8_scaled" and dt == torch.float8_e4m3fn:
                                q, s = f8.to_scaled_fp8(t)
                                w.write(key, q)
                                k += 1
                                w.write(keys[k], torch.tensor(s, dtype=torch.float32))
                            else:
                                w.write(key, t.to(dt))
                        else:
                            return
                        k += 1

                for n, t in _read(src):
                    pending[n] = t
                    drain()
                drain()
                w.close()
    out = {"format": format, "tensors": len(names), "quantized": quantized,
           "bytes_in": os.path.getsize(src_path), "bytes_out": os.path.getsize(out_path), "types": types}
    logger.info("wrote %s: %s, %d of %d tensors quantized, %.1f MiB -> %.1f MiB", out_path, format, quantized,
                len(names), out["bytes_in"] / 2**20, out["bytes_out"] / 2**20)
    return out


__all__ = ["quantize_file"]
