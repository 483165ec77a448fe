"""``python -m ovi_core train CONFIG.json`` and ``python -m ovi_core prepare-dataset CLIPS OUT``.

Under ``accelerate launch [--num_processes N] -m ovi_core train CONFIG.json`` every process runs the
same command; the trainer takes its rank from accelerate.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

logger = logging.getLogger(__name__)

def register(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("train", help="train a LoRA for the fusion DiT from a JSON config (see ovi_core.training)")
    t.add_argument("config", help="training config JSON (fields of ovi_core.training.config.TrainConfig)")
    t.add_argument("--set", action="append", default=[], metavar="FIELD=JSON",
                   help="override a config field, e.g. --set steps=10 --set learning_rate=5e-5")
    t.set_defaults(func=_train)

    p = sub.add_parser("prepare-dataset", help="encode a folder of clips + .txt captions into training latents")
    p.add_argument("clips", help="folder of .mp4/.mov/.mkv clips with audio (at least one clip long: 5.04 s for "
                                 "Ovi 1.0/1.1) and same-name .txt captions in Ovi's prompt format; example: "
                                 "examples/ovi_dataset")
    p.add_argument("out", help="output folder (index.json + one .safetensors per clip)")
    p.add_argument("--weights", required=True, help="weights folder (official layout, see ovi_core.io.weights)")
    p.add_argument("--model-version", default="1.0", choices=("1.0", "1.1", "1.1-10s"))
    p.add_argument("--frames", type=int, default=None, help="frames per clip (default 121; 241 for 1.1-10s)")
    p.add_argument("--fps", type=float, default=24.0)
    p.add_argument("--area", type=int, default=None, help="pixel area (default: the model's)")
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--audio-tokens", type=int, default=None)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_prepare)

def _parse_overrides(items: list[str]) -> dict:
    out = {}
    for it in items:
        if "=" not in it:
            raise ValueError(f"--set expects FIELD=VALUE, got {it!r}.")
        k, v = it.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out

def _train(args: argparse.Namespace) -> int:

    from ovi_core.training.config import TrainConfig
    from ovi_core.training.trainer import train

    cfg = TrainConfig.from_json(args.config)
    if args.set:
        cfg = TrainConfig.from_dict({**cfg.to_dict(), **_parse_overrides(args.set)})
    res = train(cfg)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    logger.info("LoRA written to %s after %d steps (%.1f s)", res.lora_path, res.steps, res.seconds)
    if res.losses:
        sys.stdout.write(json.dumps({"lora": res.lora_path, "steps": res.steps, "final_loss": res.losses[-1]}) + "\n")
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from ovi_core.training.dataset import PrepareConfig, prepare_from_weights

    frames = args.frames or (241 if args.model_version == "1.1-10s" else 121)
    area = args.area or (720 * 720 if args.model_version == "1.0" else 960 * 960)
    cfg = PrepareConfig(frames=frames, fps=args.fps, area=area, height=args.height, width=args.width,
                        audio_tokens=args.audio_tokens, version=args.model_version)
    rep = prepare_from_weights(args.clips, args.out, weights=args.weights, config=cfg, device=args.device)
    sys.stdout.write(json.dumps({"kept": len(rep.kept), "skipped": rep.skipped}, indent=1) + "\n")
    return 0 if rep.kept else 1
