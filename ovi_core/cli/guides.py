"""``generate`` flags for guides: ``--audio FILE [--audio-offset S]``, ``--video FILE [--video-offset S]``,
``--source CLIP --redo audio:2.0-3.5`` (or ``video:1.0-2.0``), ``--guide-mode``, ``--guide-until``,
``--no-original-media``. Everything is read and checked before the weights load."""

from __future__ import annotations

import argparse
import logging

from ovi_core.io.files import regular_file

logger = logging.getLogger(__name__)


def _offset(text: str) -> float:
    """``--audio-offset``: a finite number of seconds >= 0 (NaN reached a float-to-int conversion)."""
    from ovi_core.conditioning.ranges import exact_seconds

    try:
        return float(exact_seconds(text, what="--audio-offset"))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_arguments(g: argparse.ArgumentParser) -> None:
    """Add the guide flags to the ``generate`` sub-parser."""
    g.add_argument("--audio", help="a sound file (any format PyAV reads, any rate, mono/stereo) the clip must "
                   "carry: audio -> video (e.g. a voice line the character speaks)")
    g.add_argument("--audio-offset", type=_offset, default=None, help="where --audio starts in the clip, seconds "
                   "(default 0); the rest of the sound track is generated")
    g.add_argument("--video", help="a video file whose frames the clip must show: video -> audio (converted to "
                   "24 fps and the model's size; a shorter video is followed by generated frames)")
    g.add_argument("--video-offset", type=float, default=None, help="where --video starts in the clip, seconds "
                   "(default 0); the frames before it are generated (makes a long clip: chained windows)")
    g.add_argument("--source", help="an existing clip (MP4, or *.ovi_latents.safetensors) to redo a time range "
                   "of, with --redo")
    g.add_argument("--redo", help="the range of --source to regenerate, keeping the rest: audio:START-END or "
                   "video:START-END in seconds, e.g. audio:2.0-3.5")
    g.add_argument("--guide-mode", default="replace", choices=("replace", "clean"),
                   help="replace (default): the given parts are noised to each step's level (as in training); "
                   "clean: they are held clean and their tokens get timestep 0 (as image->AV's first frame)")
    g.add_argument("--guide-until", type=float, default=1.0, help="replace mode: enforce the given parts during "
                   "this fraction of the steps only (default 1.0: all)")
    g.add_argument("--no-original-media", action="store_true", help="write the VAE round trip of the given "
                   "audio/frames instead of the originals")


def check_args(args: argparse.Namespace) -> bool:
    """Flag combinations and files; True when any guide flag is used."""
    used = any(getattr(args, k, None) for k in ("audio", "video", "source", "redo"))
    if args.audio_offset is not None and not args.audio:
        raise ValueError("--audio-offset needs --audio FILE")
    if getattr(args, "video_offset", None) is not None and not args.video:
        raise ValueError("--video-offset needs --video FILE")
    if bool(args.source) != bool(args.redo):
        raise ValueError("--source CLIP and --redo audio:START-END (or video:START-END) go together")
    if args.source and (args.audio or args.video):
        raise ValueError("--source/--redo keeps the clip's own audio and video; do not add --audio or --video")
    if args.source and args.image:
        raise ValueError("--source/--redo keeps the clip's own frames; drop --image")
    if args.video and args.image:
        raise ValueError("--video gives every frame including the first; drop --image")
    for flag in ("audio", "video", "source"):
        path = getattr(args, flag, None)
        if path:
            regular_file(path, f"--{flag} file")
    if not used and getattr(args, "guide_until", 1.0) != 1.0:
        raise ValueError("--guide-until applies to a guide: add --audio FILE or --video FILE (or drop it)")
    if used and args.size is not None and (args.video or args.source):
        logger.warning("--size is ignored: the clip takes the size of the given video")
    return used


def model_version_and_area(args: argparse.Namespace) -> tuple[str, int]:
    """The model version and pixel area that ``generate`` will use, from the weight files' names and headers
    (cheap; nothing is loaded)."""
    from ovi_core import sizes
    from ovi_core.io.weights import resolve_weights
    from ovi_core.pipeline import fusion_file_info

    paths = resolve_weights(args.weights, version=args.model_version, seconds=args.seconds, fp8=args.fp8,
                            download=False if args.offline else None)
    info = fusion_file_info(paths.fusion)
    version = info.get("version", paths.version) if args.model_version == "auto" else paths.version
    return version, int(info.get("target_area") or sizes.MODEL_SPECS[version].area)


def guide_requests(args: argparse.Namespace) -> list:
    """The guides the flags ask for, as :class:`ovi_core.validate.GuideRequest` (empty without guide flags); the
    flag combinations and the files' kinds are checked now, the files are read by :func:`validate.check_plan`."""
    from ovi_core.validate import GuideRequest

    if not check_args(args):
        return []
    version, area = model_version_and_area(args)
    common = {"version": version, "area": area, "mode": args.guide_mode, "until": args.guide_until}
    if args.source:
        return [GuideRequest("redo", source=args.source, redo=args.redo, **common)]
    trim = bool(getattr(args, "trim_media", False))  # --seconds shorter than the media (cli.media_length noted it)
    out = []
    if args.video:
        out.append(GuideRequest("video", path=args.video, trim=trim, **common))
    if args.audio:
        out.append(GuideRequest("audio", path=args.audio, offset=args.audio_offset or 0.0, trim=trim, **common))
    return out


def inputs_from_args(args: argparse.Namespace) -> list:
    """The guide inputs the flags ask for (empty without guide flags), read and checked now
    (:func:`ovi_core.validate.check_plan`)."""
    from ovi_core import validate

    checked = validate.check_plan(validate.Plan(guides=guide_requests(args)))
    return [inp for inputs in checked.guides for inp in inputs]
