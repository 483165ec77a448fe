"""``generate`` flags for LoRAs and faster sampling: ``--lora``, ``--preset``, ``--cfg-reuse``, ``--step-cache``.

Kept apart from ``pipeline_cli`` so that the generate command only calls :func:`add_arguments`,
:func:`prepare` (before any weights load: files and values are checked) and :func:`apply` (after).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

TOWER_WORDS = ("video", "audio", "both", "auto")


@dataclass(frozen=True)
class LoraSpec:
    path: str
    strength: float = 1.0
    towers: str = "auto"


def parse_lora(text: str) -> LoraSpec:
    """``FILE[:STRENGTH][:TOWER]`` (TOWER: video, audio, both or auto), parsed from the right so that paths
    with colons (``C:\\loras\\x.safetensors``) still work."""
    rest, strength, towers = text, 1.0, "auto"
    head, sep, tail = rest.rpartition(":")
    if sep and tail in TOWER_WORDS:
        rest, towers = head, tail
    head, sep, tail = rest.rpartition(":")
    if sep:
        try:
            strength, rest = float(tail), head
        except ValueError:
            pass
    if not rest:
        raise argparse.ArgumentTypeError(f"--lora needs a file: FILE[:STRENGTH][:TOWER], got {text!r}")
    if not math.isfinite(strength):
        raise argparse.ArgumentTypeError(f"--lora strength must be a finite number (e.g. 0.8), got {text!r}")
    word = rest.rpartition(":")[2]
    if ":" in rest and re.fullmatch(r"[A-Za-z]+", word) and not os.path.exists(rest):
        raise argparse.ArgumentTypeError(
            f"--lora {text!r}: unknown tower {word!r}; use FILE[:STRENGTH][:TOWER] with TOWER one of "
            f"{', '.join(TOWER_WORDS)}")
    return LoraSpec(rest, strength, towers)


def parse_window(text: str):
    """``START:END:REFRESH`` (fractions of the steps, refresh every k steps) -> ReuseWindow, or ``"off"``."""
    from ovi_core.sampling.cfg_cache import ReuseWindow

    if text.lower() in ("off", "none", "0"):
        return "off"
    try:
        start, end, refresh = text.split(":")
        return ReuseWindow(float(start), float(end), int(refresh))
    except ValueError as e:
        raise argparse.ArgumentTypeError(
            f"a CFG reuse window looks like START:END:REFRESH, e.g. 0.3:0.9:5 (fractions of the steps; a fresh "
            f"negative pass every 5 steps), or 'off'; got {text!r} ({e})") from e


def add_arguments(g: argparse.ArgumentParser) -> None:
    from ovi_core.sampling.fast import PRESETS

    g.add_argument("--lora", action="append", type=parse_lora, default=[], metavar="FILE[:STRENGTH][:TOWER]",
                   help="apply a LoRA (repeatable; stacks). Ovi LoRAs and Wan2.2-TI2V-5B LoRAs in ComfyUI, "
                        "diffusers or kohya naming. TOWER: video, audio, both, or auto (default: the file's "
                        "towers; Wan LoRAs go to the video tower)")
    g.add_argument("--preset", default="default", choices=sorted(PRESETS),
                   help="fast: few-step recipe for a distilled (FastWan-style) LoRA you pass with --lora: 6 steps "
                        "for 5 s, 10 for 10 s, both CFG scales 1, shift 6 (flags left at their defaults follow "
                        "the preset)")
    g.add_argument("--cfg-reuse", type=parse_window, default=None, metavar="START:END:REFRESH",
                   help="reuse the negative (guidance) pass inside a window of steps, e.g. 0.3:0.9:5; off by default")
    g.add_argument("--cfg-reuse-video", type=parse_window, default=None, metavar="START:END:REFRESH|off",
                   help="the window for the video tower only (overrides --cfg-reuse)")
    g.add_argument("--cfg-reuse-audio", type=parse_window, default=None, metavar="START:END:REFRESH|off",
                   help="the window for the audio tower only (overrides --cfg-reuse)")
    g.add_argument("--cfg-reuse-mode", default="delta", choices=("delta", "negative"),
                   help="reuse the guidance difference (delta) or the negative prediction")
    g.add_argument("--step-cache", type=float, default=0.0, metavar="THRESHOLD",
                   help="skip whole steps while the accumulated relative input change stays below THRESHOLD "
                        "(0: off, bit-identical; try 0.1-0.3)")


@dataclass
class SpeedPlan:
    loras: list[LoraSpec] = field(default_factory=list)
    speed: object = None  # SpeedOptions


def prepare(args: argparse.Namespace) -> SpeedPlan:
    """The LoRAs and the speed values of the flags. The LoRA files themselves are checked (names, values, fit to
    the model, from the headers) by :func:`ovi_core.validate.check_plan`, before any weights load."""
    from ovi_core.sampling.cfg_cache import CFGReuse
    from ovi_core.sampling.fast import SpeedOptions
    from ovi_core.sampling.step_cache import StepCacheConfig

    def window(w):
        return None if w == "off" else w

    reuse = None
    if args.cfg_reuse is not None or args.cfg_reuse_video is not None or args.cfg_reuse_audio is not None:
        both = window(args.cfg_reuse)
        reuse = CFGReuse(video=window(args.cfg_reuse_video) if args.cfg_reuse_video is not None else both,
                         audio=window(args.cfg_reuse_audio) if args.cfg_reuse_audio is not None else both,
                         mode=args.cfg_reuse_mode)
    cache = StepCacheConfig(threshold=float(args.step_cache)) if args.step_cache else None
    return SpeedPlan(loras=list(args.lora), speed=SpeedOptions(cfg_reuse=reuse, step_cache=cache))


def apply(args: argparse.Namespace, pipe, plan: SpeedPlan) -> None:
    """After loading: stack the LoRAs on the pipeline's DiT and apply the preset to ``args``."""
    from ovi_core import sizes
    from ovi_core.lora.model import lora_model
    from ovi_core.sampling.fast import apply_preset

    for spec in plan.loras:
        pipe.model = lora_model(pipe.model, spec.path, strength=spec.strength, towers=spec.towers)
    if args.preset != "default":
        d = sizes.DEFAULTS
        # the length one model pass makes: a long clip (--seconds 20) runs windows of the model's own length
        seconds = args.seconds if args.seconds in (5, 10) else (10 if str(pipe.version).endswith("10s") else 5)
        given = {"steps": args.steps, "video_guidance_scale": args.video_cfg, "audio_guidance_scale": args.audio_cfg,
                 "shift": args.shift}
        out = apply_preset(args.preset, seconds=seconds, **given)
        for key, attr in (("steps", "steps"), ("video_guidance_scale", "video_cfg"),
                          ("audio_guidance_scale", "audio_cfg"), ("shift", "shift")):
            if getattr(args, attr) == d[key]:  # a flag the user set keeps its value
                setattr(args, attr, out[key])
        if not plan.loras:
            logger.warning("--preset %s expects a few-step (FastWan-style) LoRA on the video tower; pass it with "
                           "--lora FILE (without one, %d steps give a rough clip).", args.preset, args.steps)
