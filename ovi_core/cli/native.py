"""``python -m ovi_core native-convert IN OUT``: an official Ovi fusion file in the native ComfyUI layout.

The stock "Load Diffusion Model" node detects Ovi by the rooted layout (``ovi_core.model.rooted``): the video tower
at the root (``blocks.N...``), the audio tower under ``audio_model.``. The official files prefix the video tower with
``video_model.``; this command renames the keys (tensors, dtypes and metadata unchanged) and writes a new file.
It holds the whole file in memory while writing (about 23 GB for the bf16 11B model, 12 GB for fp8).

A GGUF made by ``python -m ovi_core quantize`` converts the same way, for ComfyUI-GGUF's "Unet Loader (GGUF)"
(city96/ComfyUI-GGUF): the keys are renamed, ``general.architecture`` becomes ``"wan"`` (the loader accepts only its
known image architectures; core then detects a Wan layout and Ovi's config claims it by its fusion keys), the
quantized bytes are copied unchanged, and BF16 tensors are written as F32 (exact): that loader expands BF16 only
inside its own Linear/Conv2d/LayerNorm layers, and the patch embeddings are Conv3d/Conv1d. Streamed one tensor at
a time.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections import Counter

logger = logging.getLogger(__name__)
LAYOUT = "native (video tower at the root, audio_model.*)"  # the ``ovi.layout`` metadata of converted files


def convert(src: str | os.PathLike, dst: str | os.PathLike, *, audio: str | os.PathLike | None = None) -> str:
    """Write ``src`` (an official Ovi fusion ``.safetensors``) to ``dst`` in the rooted layout; returns ``dst``.

    ``audio``: ``src`` is the video tower of a split pair (kijai's ``Wan_2_2_Ovi_video_model_*`` and
    ``..._audio_model_*``, scaled fp8 or not) and this the audio tower: both go into one file
    (:func:`merge_towers`)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from ovi_core.io.files import atomic_path
    from ovi_core.model.rooted import rooted_state_dict
    from ovi_core.quant.fp8 import MARKER

    src, dst = os.fspath(src), os.fspath(dst)
    if not os.path.isfile(src):
        raise FileNotFoundError(f"{src!r} does not exist; pass an official Ovi fusion file (model.safetensors, ...)")
    gguf_in = src.lower().endswith(".gguf")
    if not gguf_in and not src.endswith((".safetensors", ".sft")):
        raise ValueError(f"{src!r}: native-convert reads .safetensors (the official Ovi files) or .gguf (made by "
                         "`python -m ovi_core quantize`).")
    if gguf_in != dst.lower().endswith(".gguf"):
        raise ValueError(f"{dst!r}: name the output *{'.gguf' if gguf_in else '.safetensors'}, like the input.")
    if os.path.exists(dst):
        raise FileExistsError(f"{dst!r} exists; choose another output name or delete it first")
    if gguf_in:
        if audio is not None:
            raise ValueError("--audio combines two .safetensors tower files; a GGUF holds both towers already.")
        return convert_gguf(src, dst)
    if audio is not None:
        sd, meta = merge_towers(src, os.fspath(audio))
    else:
        with safe_open(src, framework="pt") as f:
            meta = dict(f.metadata() or {})
            keys = list(f.keys())
            if not any(k.startswith("video_model.") for k in keys) or not any(k.startswith("audio_model.") for k in keys):
                raise ValueError(f"{src!r} is not an official Ovi fusion file (it needs video_model.* and audio_model.* "
                                 "tensors); a file that already loads in Load Diffusion Model needs no conversion.")
            marker = {k: f.get_tensor(k) for k in keys if k == MARKER}  # scaled fp8 (`quantize --format fp8_scaled`)
            sd = {**rooted_state_dict({k: f.get_tensor(k) for k in keys if k != MARKER}), **marker}
    meta["ovi.layout"] = LAYOUT
    with atomic_path(dst, suffix=".safetensors") as tmp:
        save_file(sd, tmp, metadata=meta)
    return dst


def merge_towers(video: str, audio: str) -> tuple[dict, dict]:
    """The rooted state dict (and the video file's metadata) of a split pair: each file read through
    :func:`ovi_core.quant.kijai.layout_of` (official or kijai names, scales as ``<module>.scale_weight``), tensors
    unchanged, the scaled-fp8 marker kept."""
    from safetensors import safe_open

    from ovi_core.model.rooted import rooted_state_dict
    from ovi_core.quant.fp8 import MARKER
    from ovi_core.quant.kijai import layout_of

    out, extra, meta = {}, {}, {}
    for path, want in ((video, ("video",)), (audio, ("audio",))):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path!r} does not exist.")
        with safe_open(path, framework="pt") as f:
            keys = list(f.keys())
            lay = layout_of({k: tuple(f.get_slice(k).get_shape()) for k in keys})
            if lay is None or lay.towers != want:
                what = "not an Ovi tower file" if lay is None else f"the {lay.describe()}"
                raise ValueError(f"{path!r} is {what}; native-convert VIDEO OUT --audio AUDIO needs the {want[0]} "
                                 "tower file there (kijai's Wan_2_2_Ovi_video_model_* / ..._audio_model_*).")
            out.update({name: f.get_tensor(key) for name, key in lay.names.items()})
            out.update({w[: -len(".weight")] + ".scale_weight": f.get_tensor(key) for w, key in lay.scales.items()})
            if MARKER in keys:
                extra[MARKER] = f.get_tensor(MARKER)
            if path == video:
                meta = dict(f.metadata() or {})
    return {**rooted_state_dict(out), **extra}, meta


def convert_gguf(src: str, dst: str) -> str:
    """Write ``src`` (an Ovi fusion GGUF with official names) to ``dst`` in the rooted layout, arch ``wan`` (module
    docstring); returns ``dst``."""
    import torch

    from ovi_core.io.files import atomic_path
    from ovi_core.model.rooted import AUDIO, VIDEO, to_rooted
    from ovi_core.quant import ggml
    from ovi_core.quant.gguf_file import read_gguf_index, read_raw, write_gguf

    index, meta = read_gguf_index(src)
    names = list(index)
    if not any(k.startswith(VIDEO) for k in names) or not any(k.startswith(AUDIO) for k in names):
        raise ValueError(f"{src!r} is not an Ovi fusion GGUF with official names (it needs video_model.* and "
                         "audio_model.* tensors); a GGUF that already loads in Unet Loader (GGUF) needs no conversion.")
    plan = {to_rooted(k): (ggml.F32 if index[k].qtype == ggml.BF16 else index[k].qtype, index[k].shape)
            for k in names}

    def tensors(f):
        for k in names:
            t = index[k]
            raw = read_raw(f, t)
            yield to_rooted(k), (ggml.dequantize(raw, ggml.BF16, t.shape, torch.float32) if t.qtype == ggml.BF16
                                 else raw)

    keep = {k: v for k, v in meta.items() if not k.startswith("general.")}
    keep["ovi.layout"] = LAYOUT
    counts = Counter(q for q, _ in plan.values())
    dominant = max((q for q in counts if q in ggml.QUANTIZED), key=counts.get, default=None)
    with atomic_path(dst, suffix=".gguf") as tmp, open(src, "rb") as f:
        write_gguf(tmp, plan, tensors(f), metadata=keep, file_type=dominant, arch="wan")
    return dst


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("native-convert", help="rename an official Ovi fusion file's keys for ComfyUI's stock "
                                              "Load Diffusion Model node (video tower at the root)")
    p.add_argument("src", help="official fusion .safetensors (model.safetensors, model_960x960*.safetensors, fp8), "
                               "or a .gguf made by `quantize` (for ComfyUI-GGUF's Unet Loader (GGUF))")
    p.add_argument("dst", help="output .safetensors or .gguf, like the input (e.g. "
                               "ComfyUI/models/diffusion_models/ovi_native.safetensors)")
    p.add_argument("--audio", metavar="FILE", help="a split pair: SRC is the video tower file and FILE the audio "
                                                   "tower file (kijai's Wan_2_2_Ovi_*_model_*); both go into DST")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    logger.info("wrote %s", convert(args.src, args.dst, audio=args.audio))
    return 0
