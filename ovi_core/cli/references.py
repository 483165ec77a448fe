"""``generate`` flags for face and voice references (DreamID-Omni reference-to-AV):
``--ref-image FILE --ref-audio FILE`` (repeatable, one pair per person, up to 2), ``--ref-video-cfg``,
``--ref-audio-cfg``. Everything is read and checked before the weights load."""

from __future__ import annotations

import argparse
import logging

from ovi_core.io.files import regular_file

logger = logging.getLogger(__name__)


def add_arguments(g: argparse.ArgumentParser) -> None:
    """Add the reference flags to the ``generate`` sub-parser."""
    from ovi_core.sampling.reference import DEFAULTS

    g.add_argument("--ref-image", action="append", default=None, metavar="FILE",
                   help="a face picture of person 1 (repeat for person 2) for reference -> audio+video: made for "
                   "DreamID-Omni weights (--fusion dreamid_omni.safetensors); with plain Ovi weights it is "
                   "experimental (Ovi was not trained for it). Pair each with --ref-audio")
    g.add_argument("--ref-audio", action="append", default=None, metavar="FILE",
                   help="a voice recording of the same person (at least 2 s; seconds 1-2 are used), repeat per "
                   "person in the order of --ref-image")
    g.add_argument("--ref-video-cfg", type=float, default=DEFAULTS["video_ref_guidance_scale"],
                   help="reference guidance of the video: weight of (positive - faces removed), default 1.5; 0 skips "
                   "that pass")
    g.add_argument("--ref-audio-cfg", type=float, default=DEFAULTS["audio_ref_guidance_scale"],
                   help="reference guidance of the audio: weight of (positive - voices removed), default 2.0; 0 skips "
                   "that pass")


def used(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "ref_image", None) or getattr(args, "ref_audio", None))


def apply_defaults(args: argparse.Namespace) -> None:
    """In reference mode, DreamID-Omni's CFG scales and negative prompts replace Ovi's where the flags kept Ovi's
    defaults (a value equal to Ovi's default counts as not given, as for ``--preset``)."""
    if not used(args):
        return
    from ovi_core import sizes
    from ovi_core.sampling.reference import DEFAULTS

    d = sizes.DEFAULTS
    for attr, key in (("video_cfg", "video_guidance_scale"), ("audio_cfg", "audio_guidance_scale"),
                      ("negative_video", "video_negative_prompt"), ("negative_audio", "audio_negative_prompt")):
        if getattr(args, attr, None) == d[key]:
            setattr(args, attr, DEFAULTS[key])


def prepare(args: argparse.Namespace, *, area: int):
    """Check the flags and files and prepare the references (pixels, samples) at the output size, or None."""
    if not used(args):
        return None
    from ovi_core import validate
    from ovi_core.conditioning.reference_in import prepare_references, read_reference_files

    images, audios = list(args.ref_image or []), list(args.ref_audio or [])
    if len(images) != len(audios) or not 1 <= len(images) <= 2:
        raise ValueError(f"give one --ref-image and one --ref-audio per person (1 or 2 people), got {len(images)} "
                         f"--ref-image and {len(audios)} --ref-audio")
    for flag in ("image", "video", "source", "audio"):
        if getattr(args, flag, None):
            raise ValueError(f"--ref-image/--ref-audio (reference mode) do not combine with --{flag}; drop it")
    if args.seconds not in (None, 5, 10):
        raise ValueError("reference mode makes one window (5 s, or 10 s with a 10 s model); drop --seconds "
                         f"{args.seconds}")
    for p in images:
        regular_file(p, "--ref-image file")
    for p in audios:
        regular_file(p, "--ref-audio file")
    from ovi_core.sampling.reference import EXPERIMENTAL, is_dreamid

    fusion = getattr(args, "fusion", None) or []
    if not any(is_dreamid(f) for f in fusion):
        logger.warning("%s", EXPERIMENTAL)
    w, h = args.size if args.size else (None, None)
    height, width = validate.check_size(w, h, area=area, draft=getattr(args, "draft", False))
    imgs, auds = read_reference_files(images, audios)
    return prepare_references(imgs, auds, height=height, width=width, video_ref_scale=args.ref_video_cfg,
                              audio_ref_scale=args.ref_audio_cfg)
