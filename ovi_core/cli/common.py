"""Helpers shared by the ``generate`` front ends (one clip and long clips): checks and reads done before any
weights load."""

from __future__ import annotations

import argparse
import logging
import os

logger = logging.getLogger(__name__)


def load_image(path: str, *, area: int):
    """First frame as uint8 ``[H, W, 3]``, shrunk while still 8-bit to at most 4x the model's area (twice the
    output side), so a huge picture never becomes a float tensor; smaller images are untouched."""
    from ovi_core.io.files import regular_file
    from ovi_core.io.media import read_image

    return read_image(regular_file(path, "Image"), max_pixels=4 * area)


def target_area(args: argparse.Namespace) -> int:
    """The pixel area the fusion file will generate at, without loading it (its header or the version's spec)."""
    from ovi_core import sizes
    from ovi_core.io.weights import FUSION_FILES, pick_version
    from ovi_core.pipeline import fusion_file_info

    v = pick_version(args.weights, version=args.model_version, seconds=args.seconds, fp8=args.fp8)
    path = os.path.join(args.weights, FUSION_FILES[v].local)
    if os.path.isfile(path):
        try:
            area = fusion_file_info(path).get("target_area")
        except ValueError:
            area = None
        if isinstance(area, int) and area > 0:
            return area
    return sizes.MODEL_SPECS["1.0" if v.startswith("1.0") else v].area


def check_outputs(args: argparse.Namespace, outs: list[str]) -> None:
    from ovi_core import validate

    if len(outs) > 1 and not args.out.lower().endswith(".mp4"):
        validate.check_output_folder(args.out)
    for out in outs:
        validate.check_output_file(out)
        if args.wav:
            validate.check_output_file(os.path.splitext(out)[0] + ".wav", suffixes=(".wav",))


def check_fusion(files: list[str] | None) -> str | list[str] | None:
    """``--fusion`` files: present, at most two, and readable as an Ovi fusion model (headers only)."""
    if not files:
        return None
    if len(files) > 2:
        raise ValueError(f"--fusion takes one fusion file or a video + audio tower pair, got {len(files)} files.")
    from ovi_core.io.files import regular_file

    for f in files:
        regular_file(f, "--fusion file")
    from ovi_core.model.loader import describe_files
    from ovi_core.quant.gguf_file import check_gguf_values
    from ovi_core.quant.sources import is_gguf

    for f in files:
        if is_gguf(f):
            check_gguf_values(f)  # NaN/Inf block scales, before the weights load

    logger.info("fusion model: %s", describe_files(files))
    return files[0] if len(files) == 1 else files
