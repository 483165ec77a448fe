"""``python -m ovi_core generate``: the whole job from the command line."""

from __future__ import annotations

import argparse
import logging
import os
import sys

logger = logging.getLogger(__name__)


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = text.lower().split("x")
        return int(w), int(h)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"size must look like 1280x704 (width x height), got {text!r}") from e


def register(sub: argparse._SubParsersAction) -> None:
    from ovi_core import sizes
    from ovi_core.sampling import SOLVERS

    d = sizes.DEFAULTS
    g = sub.add_parser("generate", help="text (+ first frame) -> MP4 with synchronized audio")
    g.add_argument("--weights", required=True, help="folder laid out as the official download (Ovi/, "
                   "Wan2.2-TI2V-5B/, MMAudio/ext_weights/)")
    g.add_argument("--prompt", required=True, help="the prompt, or an official CSV file (text_prompt[,image_path])")
    g.add_argument("--image", help="first frame (PNG/JPEG): image -> audio+video")
    g.add_argument("--seconds", type=int, choices=(5, 10), default=None, help="clip length (10 s needs Ovi 1.1-10s)")
    g.add_argument("--model-version", default="auto", help="auto, 1.0, 1.1, 1.1-10s or 1.0-fp8")
    g.add_argument("--size", type=_size, default=None, help="WxH for text->AV, rescaled to the model's area")
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
    g.add_argument("--memory-mode", default="gpu", choices=("gpu", "offload", "block_swap"))
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
    g.set_defaults(func=run)


def _load_image(path: str):
    import av
    import torch

    if not os.path.isfile(path):
        raise FileNotFoundError(f"Image not found: {path!r}.")
    with av.open(path) as c:
        frame = next(c.decode(video=0))
    arr = frame.to_ndarray(format="rgb24")
    return torch.from_numpy(arr).float() / 255.0  # [H, W, 3]


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


def _check_fusion(files: list[str] | None) -> str | list[str] | None:
    """``--fusion`` files: present, at most two, and readable as an Ovi fusion model (headers only)."""
    if not files:
        return None
    if len(files) > 2:
        raise ValueError(f"--fusion takes one fusion file or a video + audio tower pair, got {len(files)} files.")
    for f in files:
        if not os.path.isfile(f):
            raise FileNotFoundError(f"--fusion file not found: {f!r}.")
    from ovi_core.model.loader import describe_files

    logger.info("fusion model: %s", describe_files(files))
    return files[0] if len(files) == 1 else files


def run(args: argparse.Namespace) -> int:
    from ovi_core.pipeline import OviPipeline

    jobs: list[tuple[str, str | None]]
    if args.prompt.lower().endswith((".csv", ".tsv")) and os.path.isfile(args.prompt):
        from ovi_core.text.prompt import read_prompt_csv

        base = os.path.dirname(os.path.abspath(args.prompt))
        jobs = [(t, (img if img is None or os.path.isabs(img) else os.path.join(base, img)))
                for t, img in read_prompt_csv(args.prompt)]
        if not jobs:
            raise ValueError(f"{args.prompt!r} has no prompts (expected a text_prompt column).")
    else:
        jobs = [(args.prompt, args.image)]
    for _, img in jobs:  # fail before any heavy work
        if img is not None and not os.path.isfile(img):
            raise FileNotFoundError(f"Image not found: {img!r}.")
    if args.size is not None and (args.size[0] <= 0 or args.size[1] <= 0):
        raise ValueError("--size must be positive, e.g. 1280x704.")
    fusion = _check_fusion(getattr(args, "fusion", None))

    pipe = OviPipeline.from_weights(
        args.weights, version=args.model_version, seconds=args.seconds, device=args.device, dtype=args.precision,
        memory_mode=args.memory_mode, blocks_on_gpu=args.blocks_on_gpu, fp8=args.fp8,
        attention_backend=args.attention, download=False if args.offline else None, compile=args.compile,
        **({"fusion": fusion} if fusion else {}), **({"fp8_compute": True} if getattr(args, "fp8_compute", False)
                                                       else {}),
    )
    outs = []
    for n, (text, img) in enumerate(jobs):
        if len(jobs) == 1:
            out = args.out
        elif args.out.lower().endswith(".mp4"):
            out = f"{args.out[:-4]}_{n:03d}.mp4"
        else:
            out = os.path.join(args.out, f"ovi_{n:03d}.mp4")
        w, h = args.size if args.size else (None, None)
        res = pipe.generate(
            text, image=_load_image(img) if img else None, width=w, height=h, steps=args.steps,
            solver=args.solver, shift=args.shift, video_guidance_scale=args.video_cfg,
            audio_guidance_scale=args.audio_cfg, slg_layer=args.slg_layer, seed=args.seed,
            video_negative=args.negative_video, audio_negative=args.negative_audio,
            callback=_progress(f"clip {n + 1}/{len(jobs)}"),
        )
        pipe.save(res, out, wav=args.wav)
        outs.append(out)
        logger.info("wrote %s (%d frames %dx%d, %.2f s audio)", out, res.frames.shape[0], res.frames.shape[2],
                    res.frames.shape[1], res.waveform.shape[-1] / res.sample_rate)
    print("\n".join(outs))
    return 0
