"""``python -m ovi_core native-convert IN OUT``: an official Ovi fusion file in the native ComfyUI layout.

The stock "Load Diffusion Model" node detects Ovi by the rooted layout (``ovi_core.model.rooted``): the video tower
at the root (``blocks.N...``), the audio tower under ``audio_model.``. The official files prefix the video tower with
``video_model.``; this command renames the keys (tensors, dtypes and metadata unchanged) and writes a new file.
It holds the whole file in memory while writing (about 23 GB for the bf16 11B model, 12 GB for fp8).
"""

from __future__ import annotations

import argparse
import logging
import os

logger = logging.getLogger(__name__)


def convert(src: str | os.PathLike, dst: str | os.PathLike) -> str:
    """Write ``src`` (an official Ovi fusion ``.safetensors``) to ``dst`` in the rooted layout; returns ``dst``."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from ovi_core.io.files import atomic_path
    from ovi_core.model.rooted import rooted_state_dict

    src, dst = os.fspath(src), os.fspath(dst)
    if not os.path.isfile(src):
        raise FileNotFoundError(f"{src!r} does not exist; pass an official Ovi fusion file (model.safetensors, ...)")
    if not src.endswith((".safetensors", ".sft")):
        raise ValueError(f"{src!r}: native-convert reads .safetensors only (the official Ovi files are).")
    if os.path.exists(dst):
        raise FileExistsError(f"{dst!r} exists; choose another output name or delete it first")
    with safe_open(src, framework="pt") as f:
        meta = dict(f.metadata() or {})
        keys = list(f.keys())
        if not any(k.startswith("video_model.") for k in keys) or not any(k.startswith("audio_model.") for k in keys):
            raise ValueError(f"{src!r} is not an official Ovi fusion file (it needs video_model.* and audio_model.* "
                             "tensors); a file that already loads in Load Diffusion Model needs no conversion.")
        sd = rooted_state_dict({k: f.get_tensor(k) for k in keys})
    meta["ovi.layout"] = "native (video tower at the root, audio_model.*)"
    with atomic_path(dst, suffix=".safetensors") as tmp:
        save_file(sd, tmp, metadata=meta)
    return dst


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("native-convert", help="rename an official Ovi fusion file's keys for ComfyUI's stock "
                                              "Load Diffusion Model node (video tower at the root)")
    p.add_argument("src", help="official fusion .safetensors (model.safetensors, model_960x960*.safetensors, fp8)")
    p.add_argument("dst", help="output .safetensors (e.g. ComfyUI/models/diffusion_models/ovi_native.safetensors)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    logger.info("wrote %s", convert(args.src, args.dst))
    return 0
