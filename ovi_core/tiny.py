"""``python -m ovi_core tiny-weights DIR``: a complete tiny random weight set in the official layout.

Every file has exactly the official format (file type, tensor names, nesting) at tiny widths, so the
real loading and generation code runs on CPU in seconds: tests, the ComfyUI nodes and the shipped
workflows use it where the real weights (tens of GB) are absent. Outputs are noise, by construction.

The fusion file carries ``ovi.version`` and ``ovi.target_area`` metadata: the tiny model generates at a
64x64 area instead of 720x720.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os

logger = logging.getLogger(__name__)

TINY_AREA = 64 * 64
TINY_BLOCKS = 12


def write_tiny_weights(root: str, *, seed: int = 0, version: str = "1.0") -> dict[str, str]:
    """Write the tiny weight set under ``root``; return ``{component: path}``."""
    from safetensors.torch import load_file, save_file

    from ovi_core.audio.bigvgan import write_tiny_bigvgan
    from ovi_core.audio.mmaudio_vae import write_tiny_mmaudio_vae
    from ovi_core.io.weights import COMPONENT_FILES, FUSION_FILES
    from ovi_core.model.config import TINY
    from ovi_core.model.loader import write_tiny_fusion
    from ovi_core.text.umt5 import write_tiny_text_encoder
    from ovi_core.vae.wan_vae import write_tiny_wan_vae

    paths = {k: os.path.join(root, wf.local) for k, wf in COMPONENT_FILES.items()}
    paths["fusion"] = os.path.join(root, FUSION_FILES[version].local)
    for p in paths.values():
        os.makedirs(os.path.dirname(p), exist_ok=True)

    # 12 blocks, so that the official skip-layer default (block 11) is valid on the tiny model too
    tiny = dataclasses.replace(
        TINY,
        video=dataclasses.replace(TINY.video, num_layers=TINY_BLOCKS, text_len=512),
        audio=dataclasses.replace(TINY.audio, num_layers=TINY_BLOCKS, text_len=512),
    )
    write_tiny_fusion(paths["fusion"], seed=seed, config=tiny)
    sd = load_file(paths["fusion"])
    save_file(sd, paths["fusion"], metadata={"ovi.version": version, "ovi.target_area": str(TINY_AREA),
                                               "ovi.note": "tiny random weights for tests"})
    write_tiny_text_encoder(os.path.dirname(paths["umt5"]), seed=seed)
    write_tiny_wan_vae(paths["wan-vae"], seed=seed)
    write_tiny_mmaudio_vae(paths["mmaudio-vae"], seed=seed)
    write_tiny_bigvgan(paths["bigvgan"], seed=seed)
    return paths


def register(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("tiny-weights", help="write a tiny random weight set in the official layout (for tests)")
    t.add_argument("dir")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--model-version", default="1.0", choices=("1.0", "1.1", "1.1-10s"))
    t.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    paths = write_tiny_weights(args.dir, seed=args.seed, version=args.model_version)
    for k, p in sorted(paths.items()):
        logger.info("%-12s %s", k, p)
    return 0
