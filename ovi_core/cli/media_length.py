"""``generate --video FILE`` / ``--audio FILE``: the given media sets the clip's length.

Without ``--seconds`` the clip is as long as the video (or, without ``--video``, the sound track): one clip
when it fits one window of the chosen model, a long clip of chained windows beyond (each window guided by
the given frames / samples it covers). An explicit ``--seconds`` shorter than the media trims it (a one-line
note says so); a longer one generates the rest. Only the media headers (video) or the sound (audio) are read
here, before any weights load; the video's frames are decoded later, one window at a time.
"""

from __future__ import annotations

import argparse
import logging
import math

from ovi_core import sizes

logger = logging.getLogger(__name__)


def _version(args: argparse.Namespace) -> str:
    from ovi_core.io.weights import resolve_weights
    from ovi_core.pipeline import fusion_file_info

    seconds = args.seconds if args.seconds in (5, 10) else None
    paths = resolve_weights(args.weights, version=args.model_version, seconds=seconds, fp8=args.fp8,
                            download=False if args.offline else None)
    info = fusion_file_info(paths.fusion)
    return info.get("version", paths.version) if args.model_version == "auto" else paths.version


def media_frames(args: argparse.Namespace) -> tuple[int, str] | None:
    """``(frames at 24 fps, what)`` of the media that sets the length: the video, else the sound track; None
    without either (or with ``--source``, which keeps its own length)."""
    if getattr(args, "source", None) or (getattr(args, "video", None) and getattr(args, "image", None)):
        return None  # --source keeps its own length; --video with --image is refused by the guide checks
    if getattr(args, "video", None):
        from ovi_core.longclip.video_guide import FileVideo, offset_frames

        return offset_frames(getattr(args, "video_offset", None) or 0) + FileVideo(args.video).frames24, "video"
    if getattr(args, "audio", None):
        from ovi_core.io.media import read_audio

        wav, rate = read_audio(args.audio)
        offset = float(getattr(args, "audio_offset", None) or 0.0)
        return math.floor((offset + wav.shape[-1] / rate) * sizes.FPS) + 1, "audio"  # frames shown while it plays
    return None


def apply(args: argparse.Namespace) -> None:
    """Set ``args.seconds`` / ``args.long_clip`` / ``args.trim_media`` from the given media (see the module
    docstring). Nothing is loaded; the media are only measured."""
    from ovi_core.cli.longclip import SINGLE_CLIP_SECONDS
    from ovi_core.longclip.plan import clip_frames

    measured = media_frames(args)
    if measured is None:
        return
    n, what = measured
    seconds = (n - 1) / sizes.FPS
    placed = getattr(args, "video", None) and getattr(args, "video_offset", None)  # frames from a later time
    if args.seconds is None:
        spec = sizes.get_spec(_version(args))
        if n <= spec.frames and not placed:
            return  # one clip of the model, as before
        if n <= spec.frames:  # a video placed later is guided by the long-clip windows: here, one window
            args.seconds, args.long_clip = (spec.frames - 1) / sizes.FPS, True
            return
        args.seconds = seconds
        args.long_clip = True  # even at exactly 5 or 10 s: the model's own window is shorter
        logger.info("the %s has %d frames at 24 fps (%.2f s): a long clip of chained %.0f s windows", what, n,
                    n / sizes.FPS, spec.seconds)
        return
    frames = sizes.get_spec(_version(args)).frames if args.seconds in SINGLE_CLIP_SECONDS and not \
        getattr(args, "long_clip", False) else clip_frames(args.seconds)
    if placed:
        args.long_clip = True  # the windows place the video (one window when the clip fits one)
    if n > frames:
        args.trim_media = True
        logger.warning("note: --seconds %g uses the first %d of the %s's %d frames at 24 fps (%.2f s); leave out "
                       "--seconds for all of it", args.seconds, frames, what, n, n / sizes.FPS)

