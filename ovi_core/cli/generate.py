"""``python -m ovi_core generate``: the whole job from the command line."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from ovi_core.cli import speed as speed_cli
from ovi_core.cli.common import check_run, open_pipeline, target_area

logger = logging.getLogger(__name__)


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = text.lower().split("x")
        return int(w), int(h)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"size must look like 1280x704 (width x height), got {text!r}") from e


def register(sub: argparse._SubParsersAction) -> None:
    from ovi_core import sizes
    from ovi_core.cli import longclip as longclip_cli
    from ovi_core.sampling.solvers import SOLVERS

    d = sizes.DEFAULTS
    g = sub.add_parser("generate", help="text (+ first frame) -> MP4 with synchronized audio")
    g.add_argument("--weights", required=True, help="folder laid out as the official download (Ovi/, "
                   "Wan2.2-TI2V-5B/, MMAudio/ext_weights/)")
    g.add_argument("--prompt", required=True, action="append", help="the prompt, or an official CSV file "
                   "(text_prompt[,image_path]); long clips: repeat it (one per window) or give a .txt file")
    g.add_argument("--image", help="first frame (PNG/JPEG): image -> audio+video")
    g.add_argument("--seconds", type=longclip_cli.seconds_arg, default=None, help="clip length: 5, 10 (needs Ovi "
                   "1.1-10s), or any length from 5 s up: a long clip of chained windows of the chosen model")
    g.add_argument("--model-version", default="auto", help="auto, 1.0, 1.1, 1.1-10s or 1.0-fp8")
    g.add_argument("--size", type=_size, default=None, help="WxH for text->AV, rescaled to the model's area")
    g.add_argument("--draft", action="store_true", help="keep a --size (or a first frame) below the model's "
                   "trained area instead of rescaling it up: quicker small clips, but quality below the trained "
                   "area is not what the model was trained for")
    g.add_argument("--steps", type=int, default=d["steps"])
    g.add_argument("--seed", type=int, default=d["seed"])
    g.add_argument("--solver", default=d["solver"], choices=SOLVERS)
    g.add_argument("--shift", type=float, default=d["shift"])
    g.add_argument("--video-cfg", type=float, default=d["video_guidance_scale"])
    g.add_argument("--audio-cfg", type=float, default=d["audio_guidance_scale"])
    g.add_argument("--slg-layer", type=int, default=d["slg_layer"], help="skip-layer guidance block (-1: off)")
    g.add_argument("--negative-video", default=d["video_negative_prompt"])
    g.add_argument("--negative-audio", default=d["audio_negative_prompt"])
    g.add_argument("--device", default="auto")
    g.add_argument("--precision", default="auto", help="auto (bf16 on GPU, fp32 on CPU), bf16 or fp32")
    g.add_argument("--memory-mode", default="auto", choices=("auto", "gpu", "offload", "block_swap"),
                   help="auto (default): offload when the DiT fits in the free VRAM with its activations, else "
                        "block_swap with as many resident blocks as fit; on CPU every mode is the same")
    g.add_argument("--blocks-on-gpu", type=int, default=10, help="resident fused blocks with --memory-mode block_swap")
    g.add_argument("--fp8", action="store_true", help="use the fp8 fusion checkpoint (Ovi 1.0)")
    g.add_argument("--fusion", nargs="+", metavar="FILE", default=None,
                   help="fusion model file(s) to use instead of the one in --weights: one file, or a video + audio "
                        "tower pair; any supported format (GGUF q8_0/q6_k/q4_k, fp8, fp8_scaled, kijai split)")
    g.add_argument("--fp8-compute", action="store_true",
                   help="multiply fp8 e4m3fn weights in fp8 (torch._scaled_mm) on CUDA sm_89+; elsewhere no effect")
    g.add_argument("--attention", default="auto", help="auto, sdpa, flash, xformers or sage")
    g.add_argument("--compile", action="store_true", help="torch.compile the fused DiT layer (slow first step)")
    g.add_argument("--offline", action="store_true", help="never download missing weights")
    g.add_argument("--wav", action="store_true", help="also write the 16 kHz WAV beside the MP4")
    g.add_argument("--out", required=True, help="output .mp4 (for a CSV: a folder, or a name to number)")
    speed_cli.add_arguments(g)  # --lora, --preset, --cfg-reuse*, --step-cache
    from ovi_core.cli.guides import add_arguments as add_guide_arguments

    add_guide_arguments(g)  # --audio, --audio-offset, --video, --source, --redo, ...
    longclip_cli.add_arguments(g)  # --overlap, --crossfade, --windows-dir
    from ovi_core.cli import references as references_cli

    references_cli.add_arguments(g)  # --ref-image, --ref-audio, --ref-video-cfg, --ref-audio-cfg
    g.set_defaults(func=run)






def _out_paths(out: str, n: int) -> list[str]:
    if n == 1:
        return [out]
    if out.lower().endswith(".mp4"):
        return [f"{out[:-4]}_{k:03d}.mp4" for k in range(n)]
    return [os.path.join(out, f"ovi_{k:03d}.mp4") for k in range(n)]




def _progress(total_label: str):
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        tqdm = None
    state = {"bar": None}

    def cb(i: int, n: int) -> None:
        if tqdm is None:
            if i == n or i % max(1, n // 10) == 0:
                logger.info("%s: step %d/%d", total_label, i, n)
            return
        if state["bar"] is None:
            state["bar"] = tqdm(total=n, desc=total_label, file=sys.stderr)
        state["bar"].update(i - state["bar"].n)
        if i >= n:
            state["bar"].close()
            state["bar"] = None

    return cb




def run(args: argparse.Namespace) -> int:
    from ovi_core import validate
    from ovi_core.cli import longclip as longclip_cli
    from ovi_core.cli import media_length
    from ovi_core.cli import references as references_cli
    from ovi_core.io.latents import OutputWriteError

    if references_cli.used(args) and args.seconds not in (None, 5, 10):
        raise ValueError("reference mode makes one window (5 s, or 10 s with a 10 s model); drop --seconds "
                         f"{args.seconds}")
    references_cli.apply_defaults(args)  # DreamID-Omni's CFG scales and negatives where Ovi's defaults stand
    if longclip_cli.long_source(args):  # --source longer than one window: re-run the windows of the range
        return longclip_cli.run_long_redo(args)
    media_length.apply(args)  # --video/--audio without --seconds: the clip follows the media's length
    if longclip_cli.is_long_clip(args):
        return longclip_cli.run_long_clip(args)
    args.prompt = longclip_cli.single_prompt(args)
    if getattr(args, "windows_dir", None):
        logger.warning("--windows-dir is used by long clips only; this is one clip, so nothing is saved there")

    jobs: list[tuple[str, str | None]]
    if validate.check_prompt_argument(args.prompt):
        from ovi_core.text.prompt import read_prompt_csv

        base = os.path.dirname(os.path.abspath(args.prompt))
        jobs = [(t, (img if img is None or os.path.isabs(img) else os.path.join(base, img)))
                for t, img in read_prompt_csv(args.prompt)]
        if not jobs:
            raise ValueError(f"{args.prompt!r} has no prompts (expected a text_prompt column).")
    else:
        jobs = [(args.prompt, args.image)]
    # everything that can be checked without the weights, through validate.check_plan, before they load
    if args.model_version != "auto":
        validate.clip_version(args.model_version, args.seconds)
    area = target_area(args)
    outs = _out_paths(args.out, len(jobs))
    from ovi_core.cli.guides import guide_requests

    guides = guide_requests(args)  # flag conflicts first; the files are read by check_run
    checked = check_run(args, prompts=[t for t, _ in jobs], outs=outs, area=area,
                        images=[img for _, img in jobs if img is not None], guides=guides)
    guides = [inp for inputs in checked.guides for inp in inputs]
    refs = references_cli.prepare(args, area=area)  # faces and voices, read and fitted before the weights load
    images = checked.images  # decoded, uint8, at most 4x the model's area
    plan = speed_cli.prepare(args)  # speed values
    fusion = checked.fusion

    pipe = open_pipeline(args, fusion=fusion, seconds=args.seconds)
    speed_cli.apply(args, pipe, plan)
    written, failed = [], []
    for n, ((text, img), out) in enumerate(zip(jobs, outs, strict=True)):
        w, h = args.size if args.size else (None, None)
        res = pipe.generate(
            text, image=images[img].float() / 255.0 if img else None, width=w, height=h, steps=args.steps,
            solver=args.solver, shift=args.shift, video_guidance_scale=args.video_cfg,
            audio_guidance_scale=args.audio_cfg, slg_layer=args.slg_layer, seed=args.seed,
            video_negative=args.negative_video, audio_negative=args.negative_audio,
            callback=_progress(f"clip {n + 1}/{len(jobs)}"), seconds=args.seconds, speed=plan.speed,
            guides=guides, original_media=not args.no_original_media, draft=getattr(args, "draft", False),
            **({"references": refs} if refs is not None else {}),
        )
        try:
            pipe.save(res, out, wav=args.wav, weights=args.weights)
        except OutputWriteError as e:
            logger.error("%s", e)
            failed.append(out)
            continue
        written.append(out)
        logger.info("wrote %s (%d frames %dx%d, %.2f s audio)", out, res.frames.shape[0], res.frames.shape[2],
                    res.frames.shape[1], res.waveform.shape[-1] / res.sample_rate)
    if written:
        print("\n".join(written))
    if failed:
        print(f"error: {len(failed)} output(s) could not be written; their latents were kept (see above)",
              file=sys.stderr)
        return 1
    return 0
