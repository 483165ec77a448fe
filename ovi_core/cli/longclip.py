"""``generate`` for long clips: ``--seconds N`` (any N >= 5), several ``--prompt`` values or a ``.txt`` file.

``--seconds 5`` and ``--seconds 10`` keep their meaning (one clip of the 5 s or the 10 s model); any other
length, several prompts or a ``.txt`` prompt file make a long clip of chained windows of the chosen model
(:mod:`ovi_core.longclip`). ``--image`` is window 1's first frame; ``--audio`` (the guide flag) is a track for
the clip from ``--audio-offset`` (default 0 s), ``--video`` its frames from ``--video-offset``. Everything is read and checked before the weights load.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from ovi_core.longclip.plan import DEFAULT_CROSSFADE_SECONDS, DEFAULT_OVERLAP_SECONDS, MIN_SECONDS

logger = logging.getLogger(__name__)

SINGLE_CLIP_SECONDS = (5, 10)


def seconds_arg(text: str) -> float | int:
    """``--seconds``: 5 and 10 stay ints (the single-clip meaning), any other length >= 5 is a float."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seconds must be a number of seconds >= 5, got {text!r}") from None
    if not value >= MIN_SECONDS or value != value:
        raise argparse.ArgumentTypeError(f"--seconds must be at least {MIN_SECONDS:g}, got {text!r}")
    return int(value) if value in SINGLE_CLIP_SECONDS else value


def add_arguments(g: argparse.ArgumentParser) -> None:
    """The long-clip flags of ``generate``."""
    g.add_argument("--overlap", type=float, default=DEFAULT_OVERLAP_SECONDS, help="long clips: seconds of picture "
                   f"and sound carried from each window into the next (default {DEFAULT_OVERLAP_SECONDS:g})")
    g.add_argument("--crossfade", type=float, default=DEFAULT_CROSSFADE_SECONDS, help="long clips: seconds of the "
                   f"blend at each seam, inside the overlap (default {DEFAULT_CROSSFADE_SECONDS:g})")
    g.add_argument("--windows-dir", default=None, help="long clips: save each finished window here; rerunning the "
                   "same command resumes an interrupted run from the saved windows")


def _prompts(values: list[str]) -> list[str]:
    from ovi_core.longclip.prompts import read_prompt_file

    out: list[str] = []
    for v in values:
        if v.lower().endswith((".csv", ".tsv")) and os.path.isfile(v):
            raise ValueError(f"{v!r} is a CSV batch (one clip per row); a long clip takes its window prompts from "
                             "several --prompt values or a .txt file (one prompt per line)")
        if v.strip().lower().endswith(".txt"):  # a prompt file, never prompt text (a typo must not become one)
            out += read_prompt_file(v)
        else:
            out.append(v)
    return out


def is_long_clip(args: argparse.Namespace) -> bool:
    """True when the flags ask for a long clip (see the module docstring)."""
    values = args.prompt if isinstance(args.prompt, list) else [args.prompt]
    if getattr(args, "long_clip", False):  # set by cli.media_length: the given media is longer than one window
        return True
    if args.seconds is not None and args.seconds not in SINGLE_CLIP_SECONDS:
        return True
    return len(values) > 1 or any(v.lower().endswith(".txt") for v in values)


def single_prompt(args: argparse.Namespace) -> str:
    """The one ``--prompt`` of a single clip (several need a long clip)."""
    values = args.prompt if isinstance(args.prompt, list) else [args.prompt]
    if len(values) > 1:
        raise ValueError(f"{len(values)} --prompt values make a long clip: give --seconds longer than one window")
    return values[0]


def _progress():
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        tqdm = None
    state = {"bar": None, "win": None}

    def cb(win: int, wins: int, step: int, steps: int) -> None:
        if tqdm is None:
            if step == steps or step % max(1, steps // 10) == 0:
                logger.info("window %d/%d, step %d/%d", win, wins, step, steps)
            return
        if state["win"] != win:
            if state["bar"] is not None:
                state["bar"].close()
            state["bar"] = tqdm(total=steps, desc=f"window {win}/{wins}", unit="step", file=sys.stderr)
            state["win"] = win
        state["bar"].update(step - state["bar"].n)
        if step >= steps and win == wins:
            state["bar"].close()
            state["bar"] = None

    return cb


def _model_version(args: argparse.Namespace) -> str:
    from ovi_core.io.weights import resolve_weights
    from ovi_core.pipeline import fusion_file_info

    paths = resolve_weights(args.weights, version=args.model_version, seconds=None, fp8=args.fp8,
                            download=False if args.offline else None)
    info = fusion_file_info(paths.fusion)
    return info.get("version", paths.version) if args.model_version == "auto" else paths.version


def _resume_key(args: argparse.Namespace, fusion, speed) -> dict:
    """What identifies the model of a run for ``--windows-dir`` (windows of another model are never reused)."""
    from ovi_core.longclip.store import file_identity

    files = [fusion] if isinstance(fusion, str) else list(fusion or [])
    return {"weights": os.path.abspath(args.weights), "version": args.model_version, "fp8": args.fp8,
            "fp8_compute": bool(getattr(args, "fp8_compute", False)), "fusion": [file_identity(f) for f in files],
            "loras": [(file_identity(s.path), s.strength, s.towers) for s in speed.loras],
            "preset": getattr(args, "preset", None)}


def run_long_clip(args: argparse.Namespace) -> int:
    from ovi_core.longclip.job import generate_long_clip
    from ovi_core.longclip.plan import plan_windows
    from ovi_core.longclip.prompts import prompts_for_windows
    from ovi_core.sampling.settings import SamplingSettings

    prompts = _prompts(args.prompt if isinstance(args.prompt, list) else [args.prompt])
    seconds = float(args.seconds) if args.seconds is not None else None
    if seconds is None:
        raise ValueError("several prompts (or a .txt prompt file) make a long clip: give its length, --seconds N")
    if getattr(args, "guide_until", 1.0) != 1.0 and not (getattr(args, "audio", None) or getattr(args, "video", None)):
        raise ValueError("--guide-until applies to a guide: add --audio FILE or --video FILE (or drop it)")
    for flag in ("source", "redo"):
        if getattr(args, flag, None):
            raise ValueError(f"--{flag} keeps its clip's length: drop --seconds and the extra prompts (long clips "
                             "take --image, --video [--video-offset S] and --audio [--audio-offset S])")
    if getattr(args, "video", None) and args.image:
        raise ValueError("--video gives the clip's frames (from --video-offset on) and is not combined with a first "
                         "frame; drop --image")
    if not args.out.lower().endswith(".mp4"):
        raise ValueError(f"--out must name an .mp4 file for a long clip, got {args.out!r}")
    # the same weight-free checks as a single clip (validate.check_plan), before anything loads
    from ovi_core.cli import speed as speed_cli
    from ovi_core.cli.common import check_run, open_pipeline, target_area

    area = target_area(args)
    checked = check_run(args, prompts=prompts, outs=[args.out], area=area, images=[args.image] if args.image else [],
                        windows_dir=getattr(args, "windows_dir", None))
    image = checked.images[args.image].float() / 255.0 if args.image else None  # [H, W, 3] in [0, 1]
    speed = speed_cli.prepare(args)  # speed values
    fusion = checked.fusion
    from ovi_core.conditioning import ranges

    audio = None
    aoff = ranges.offset_samples(args.audio_offset) if getattr(args, "audio_offset", None) else 0
    if getattr(args, "audio", None):
        from ovi_core.io.media import read_audio

        audio = read_audio(args.audio)
    video = None
    if getattr(args, "video", None):
        from ovi_core.longclip.video_guide import FileVideo, offset_frames

        # headers only; the frames are read one window at a time
        video = FileVideo(args.video, offset=offset_frames(getattr(args, "video_offset", None) or 0))
    version = _model_version(args)  # from the file names and headers; nothing is loaded yet
    plan = plan_windows(seconds, version=version, overlap_seconds=args.overlap, crossfade_seconds=args.crossfade)
    if video is not None:  # a size or an offset that does not fit: said now, not after the weights load
        from ovi_core.longclip.video_guide import WindowVideo

        WindowVideo(video, plan, area=area)
    if audio is not None and aoff < plan.samples and \
            audio[0].shape[-1] * 16000 > (plan.samples - aoff) * audio[1]:
        if not getattr(args, "trim_media", False):
            logger.warning("note: the clip is %.2f s; the audio (%.2f s from %.2f s) is cut there",
                           plan.samples / 16000, audio[0].shape[-1] / audio[1], aoff / 16000)
        audio = (audio[0][..., : -(-(plan.samples - aoff) * audio[1] // 16000)], audio[1])
    if audio is not None:  # too short for the clip: said now, not after the weights load
        from ovi_core.longclip.job import prepare_audio

        prepare_audio(*audio, plan=plan, offset=aoff)
    prompts_for_windows(prompts, plan.num_windows, plan=plan)
    logger.info("long clip with Ovi %s: %s", version, plan.describe())

    pipe = open_pipeline(args, fusion=fusion, seconds=None)
    speed_cli.apply(args, pipe, speed)
    w, h = args.size if args.size else (None, None)
    res = generate_long_clip(
        pipe, prompts, seconds=seconds, out=args.out, overlap=args.overlap, crossfade=args.crossfade, image=image,
        audio=audio, video=video, original_media=not getattr(args, "no_original_media", False), width=w, height=h,
        settings=SamplingSettings(steps=args.steps, solver=args.solver, shift=args.shift,
                                  video_guidance_scale=args.video_cfg, audio_guidance_scale=args.audio_cfg,
                                  slg_layer=args.slg_layer, seed=args.seed, speed=speed.speed),
        video_negative=args.negative_video, audio_negative=args.negative_audio,
        guide_mode=getattr(args, "guide_mode", "replace"), guide_until=getattr(args, "guide_until", 1.0),
        windows_dir=args.windows_dir, wav=args.wav, progress=_progress(),
        resume_key=_resume_key(args, fusion, speed) if args.windows_dir else None,
        draft=getattr(args, "draft", False), audio_offset=float(getattr(args, "audio_offset", None) or 0.0),
    )
    logger.info("wrote %s: %s; audio %s", res.path, res.plan.describe(), res.audio_source)
    print(res.path)
    return 0


def long_source(args: argparse.Namespace) -> bool:
    """True when ``--source`` is a video file longer than one window of the model: the redo re-runs the windows
    that cover its range (:mod:`ovi_core.longclip.redo`). Only the file's headers are read."""
    src = getattr(args, "source", None)
    if not src or str(src).endswith((".safetensors", ".sft")) or not os.path.isfile(src):
        return False  # saved latents and missing files: the single-clip path says what is wrong
    from ovi_core import sizes
    from ovi_core.cli.guides import check_args
    from ovi_core.conditioning import ranges
    from ovi_core.longclip.video_guide import FileVideo

    check_args(args)  # flag combinations and the range's syntax first, as for a clip of one window
    ranges.parse_redo(args.redo)

    return FileVideo(src).frames24 > sizes.get_spec(_model_version(args)).frames


def run_long_redo(args: argparse.Namespace) -> int:
    """``--source CLIP --redo stream:A-B`` on a clip longer than one window (see :func:`long_source`)."""
    from ovi_core.cli import speed as speed_cli
    from ovi_core.cli.common import check_run, open_pipeline, target_area
    from ovi_core.cli.guides import check_args
    from ovi_core.conditioning import ranges
    from ovi_core.conditioning.audio_in import to_mono_16k
    from ovi_core.conditioning.video_in import output_size
    from ovi_core.io.media import read_audio
    from ovi_core.longclip.prompts import encode_window_prompts, prompts_for_windows
    from ovi_core.longclip.redo import plan_redo, redo_stream
    from ovi_core.longclip.stream import ClipStreamWriter
    from ovi_core.longclip.video_guide import FileVideo
    from ovi_core.runtime.memory import on_device
    from ovi_core.sampling.settings import SamplingSettings

    check_args(args)
    if args.seconds is not None:
        raise ValueError("--source/--redo keeps the clip's length; drop --seconds")
    if getattr(args, "windows_dir", None):
        raise ValueError("--windows-dir is for long clips; a redo re-runs only the windows of its range, drop it")
    if getattr(args, "guide_until", 1.0) != 1.0:
        raise ValueError("--guide-until applies to --audio/--video; a redo keeps the rest of the clip exactly")
    if not args.out.lower().endswith(".mp4"):
        raise ValueError(f"--out must name an .mp4 file for a redo of a long clip, got {args.out!r}")
    prompts = _prompts(args.prompt if isinstance(args.prompt, list) else [args.prompt])
    checked = check_run(args, prompts=prompts, outs=[args.out], area=target_area(args))  # before anything loads
    stream, start, end = ranges.parse_redo(args.redo)
    source = FileVideo(args.source)  # headers; the frames are read window by window and chunk by chunk
    output_size(source.height, source.width, area=target_area(args))  # the size check, now
    wav, rate = read_audio(args.source)
    track = to_mono_16k(wav, rate)[None]  # [1, T] at 16 kHz: what the output keeps outside the range
    del wav
    rp = plan_redo(stream, start, end, frames=source.frames24, samples=track.shape[1], version=_model_version(args),
                   overlap=args.overlap)
    window_prompts = prompts_for_windows(prompts, rp.plan.num_windows, plan=rp.plan)
    logger.info("%s", rp.describe())
    speed = speed_cli.prepare(args)
    fusion = checked.fusion

    pipe = open_pipeline(args, fusion=fusion, seconds=None)
    speed_cli.apply(args, pipe, speed)
    with on_device(pipe.text_encoder, pipe.device, offload=pipe._offload):
        conds = encode_window_prompts(pipe.text_encoder, window_prompts, video_negative=args.negative_video,
                                      audio_negative=args.negative_audio, version=pipe.version)
    settings = SamplingSettings(steps=args.steps, solver=args.solver, shift=args.shift,
                                video_guidance_scale=args.video_cfg, audio_guidance_scale=args.audio_cfg,
                                slg_layer=args.slg_layer, seed=args.seed, speed=speed.speed)
    wav_path = os.path.splitext(args.out)[0] + ".wav" if args.wav else None
    with ClipStreamWriter(args.out, fps=24, sample_rate=16000, wav_path=wav_path) as writer:
        for frames, samples in redo_stream(pipe, conds, rp, source=source, track=track, settings=settings,
                                           guide_mode=args.guide_mode, progress=_progress()):
            writer.write(frames, samples)
    logger.info("wrote %s: %s", args.out, rp.describe())
    print(args.out)
    return 0
