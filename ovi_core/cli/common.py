"""Helpers shared by the ``generate`` front ends (one clip, long clips, long-clip redo): checks and reads done
before any weights load, and the pipeline the flags describe."""

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


def _weights_fusion(args: argparse.Namespace) -> list[str]:
    """The fusion file the weights folder gives this run (for the LoRA fit check), or none when it cannot be
    found here (the loader then says what is missing)."""
    from ovi_core.io.weights import resolve_weights

    try:
        paths = resolve_weights(getattr(args, "weights", None) or "", version=getattr(args, "model_version", "auto"),
                                seconds=getattr(args, "seconds", None), fp8=getattr(args, "fp8", False),
                                download=False)
    except (OSError, ValueError):
        return []
    return [paths.fusion]


def check_run(args: argparse.Namespace, *, prompts: list[str], outs: list[str], area: int, images=(), guides=(),
              windows_dir: str | None = None):
    """Every weight-free check of a ``generate`` run through :func:`ovi_core.validate.check_plan` (prompts,
    sampling values, size, outputs, first frames, guides, LoRAs, fusion files, windows folder). Returns its
    :class:`~ovi_core.validate.Checked`."""
    from ovi_core import validate

    outputs = []
    for out in outs:
        outputs.append((out, (".mp4",)))
        if args.wav:
            outputs.append((os.path.splitext(out)[0] + ".wav", (".wav",)))
    fusion = list(getattr(args, "fusion", None) or [])
    sampling = {"steps": args.steps, "shift": args.shift, "seed": args.seed, "slg_layer": args.slg_layer,
                "solver": args.solver, "video_guidance_scale": args.video_cfg, "audio_guidance_scale": args.audio_cfg}
    plan = validate.Plan(
        prompts=prompts, sampling=sampling, size=args.size, area=area, draft=getattr(args, "draft", False),
        blocks_on_gpu=getattr(args, "blocks_on_gpu", None),
        outputs=outputs, output_folder=args.out if len(outs) > 1 and not args.out.lower().endswith(".mp4") else None,
        windows_dir=windows_dir, images=list(images), guides=list(guides),
        loras=[validate.LoraRequest(s.path, s.strength, s.towers) for s in getattr(args, "lora", [])],
        fusion=fusion, model_files=(fusion or _weights_fusion(args)) if getattr(args, "lora", None) else (),
    )
    checked = validate.check_plan(plan)
    for spec, km in zip(getattr(args, "lora", []), checked.lora_maps, strict=True):
        logger.info("LoRA %s: %s", os.path.basename(spec.path), km.summary())
    if fusion:
        from ovi_core.model.loader import describe_files

        logger.info("fusion model: %s", describe_files(fusion))
    return checked


def open_pipeline(args: argparse.Namespace, *, fusion: str | list[str] | None, seconds: float | None):
    """The :class:`~ovi_core.pipeline.OviPipeline` the ``generate`` flags describe (weights, device, precision,
    memory mode, attention, fp8, compile; ``fusion``: a checked ``--fusion`` file, or None for the official one)."""
    from ovi_core.pipeline import OviPipeline

    return OviPipeline.from_weights(
        args.weights, version=args.model_version, seconds=seconds, device=args.device, dtype=args.precision,
        memory_mode=args.memory_mode, blocks_on_gpu=args.blocks_on_gpu, fp8=args.fp8,
        attention_backend=args.attention, download=False if args.offline else None, compile=args.compile,
        **({"fusion": fusion} if fusion else {}), **({"fp8_compute": True} if getattr(args, "fp8_compute", False)
                                                       else {}),
    )
