"""``generate`` flags for guides: ``--audio FILE [--audio-offset S]``, ``--video FILE [--video-offset S]``,
``--source CLIP --redo audio:2.0-3.5`` (or ``video:1.0-2.0``), ``--guide-mode``, ``--guide-until``,
``--no-original-media``. Everything is read and checked before the weights load."""

from __future__ import annotations

import argparse
import logging

from ovi_core.io.files import regular_file

logger = logging.getLogger(__name__)


def add_arguments(g: argparse.ArgumentParser) -> None:
    """Add the guide flags to the ``generate`` sub-parser."""
    g.add_argument("--audio", help="a sound file (any format PyAV reads, any rate, mono/stereo) the clip must "
                   "carry: audio -> video (e.g. a voice line the character speaks)")
    g.add_argument("--audio-offset", type=float, default=None, help="where --audio starts in the clip, seconds "
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


def inputs_from_args(args: argparse.Namespace) -> list:
    """The guide inputs the flags ask for (empty without guide flags), read and checked now."""
    from ovi_core import sizes
    from ovi_core.conditioning.audio_in import prepare_audio, read_audio_file
    from ovi_core.conditioning.redo import redo_inputs
    from ovi_core.conditioning.video_in import prepare_video, read_video_file

    if not check_args(args):
        return []
    version, area = model_version_and_area(args)
    mode, until = args.guide_mode, args.guide_until
    if args.source:
        if until != 1.0:
            raise ValueError("--guide-until applies to --audio/--video; a redo keeps the rest of the clip exactly")
        return redo_inputs(args.source, args.redo, version=version, area=area, mode=mode)
    out = []
    trim = getattr(args, "trim_media", False)  # --seconds shorter than the media (cli.media_length noted it)
    if args.video:
        frames, fps = read_video_file(args.video, seconds=sizes.get_spec(version).frames / 24 if trim else None)
        out.append(prepare_video(frames, fps, version=version, area=area, mode=mode, until=until, trim=trim))
    if args.audio:
        wav, rate = read_audio_file(args.audio)
        out.append(prepare_audio(wav, rate, version=version, offset=args.audio_offset or 0.0, mode=mode, until=until,
                                 trim=trim))
    return out
