"""``python -m ovi_core decode LATENTS --weights DIR --out clip.mp4``: saved latents -> MP4.

Decodes a ``*.ovi_latents.safetensors`` file (written by ComfyUI's OviSaveLatents, or kept by ``generate`` when
its output could not be written) with the Wan2.2 VAE and the MMAudio VAE + BigVGAN only; the fusion DiT and
the text encoder are not needed.
"""

from __future__ import annotations

import argparse
import logging
import os

logger = logging.getLogger(__name__)

_DECODERS = ("wan-vae", "mmaudio-vae", "bigvgan")


def register(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("decode", help="decode saved latents (*.ovi_latents.safetensors) to an MP4")
    d.add_argument("latents", help="the latents file")
    d.add_argument("--weights", required=True, help="weights folder in the official layout (only the VAEs and "
                   "the vocoder are read)")
    d.add_argument("--out", required=True, help="output .mp4")
    d.add_argument("--device", default="auto")
    d.add_argument("--precision", default="auto", help="auto (bf16 VAE weights on GPU, fp32 on CPU), bf16 or fp32")
    d.add_argument("--tile", type=int, default=None,
                   help="decode in tiles of N x N latents (default: untiled unless memory requires tiles)")
    d.add_argument("--offline", action="store_true", help="never download missing weights")
    d.add_argument("--wav", action="store_true", help="also write the 16 kHz WAV beside the MP4")
    d.set_defaults(func=run)


def _decoder_paths(root: str, *, download: bool) -> dict[str, str]:
    from ovi_core.io.weights import COMPONENT_FILES, _present, download_file, offline

    if not os.path.isdir(root):
        raise FileNotFoundError(f"Weights folder {root!r} does not exist. Create it or pass the right --weights.")
    missing = []
    for k in _DECODERS:
        wf = COMPONENT_FILES[k]
        if not _present(root, wf) and download and not offline():
            prefix = wf.local[: len(wf.local) - len(wf.filename.rstrip("/"))]
            try:
                download_file(wf, os.path.join(root, prefix))
            except FileNotFoundError as e:
                logger.error("%s", e)
        if not _present(root, wf):
            missing.append(f"  {os.path.join(root, wf.local)}  <- {wf.what}: huggingface.co/{wf.repo} file {wf.filename}")
    if missing:
        raise FileNotFoundError("Missing weight files for decoding (download them to these paths):\n"
                                + "\n".join(missing))
    return {k: os.path.join(root, COMPONENT_FILES[k].local) for k in _DECODERS}


def run(args: argparse.Namespace) -> int:
    import torch

    from ovi_core import validate
    from ovi_core.audio.codec import load_audio_codec
    from ovi_core.io.media import write_mp4, write_wav
    from ovi_core.pipeline import SAMPLE_RATE, decode_audio, decode_video
    from ovi_core.runtime.devices import pick_device, pick_dtype
    from ovi_core.vae.wan_vae import load_wan_vae

    if args.tile is not None and args.tile < 1:
        raise ValueError(f"--tile must be a positive number of latents, got {args.tile}.")
    outputs = [(args.out, (".mp4",))] + ([(os.path.splitext(args.out)[0] + ".wav", (".wav",))] if args.wav else [])
    lat = validate.check_plan(validate.Plan(outputs=outputs, latents=args.latents)).latents  # before the VAEs load
    paths = _decoder_paths(args.weights, download=not args.offline)
    dev = pick_device(args.device)
    dt = pick_dtype(args.precision, dev)
    vae_dtype = torch.float32 if dev.type == "cpu" else dt  # as OviPipeline.from_weights
    vae = load_wan_vae(paths["wan-vae"], device=dev, dtype=vae_dtype)
    frames, plan = decode_video(vae, lat.video, device=dev, dtype=vae_dtype, tile_latent=args.tile, return_plan=True)
    del vae
    codec = load_audio_codec(paths["mmaudio-vae"], paths["bigvgan"], device=dev, dtype=torch.float32)
    wav = decode_audio(codec, lat.audio, device=dev, dtype=torch.float32)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    write_mp4(args.out, frames, wav, fps=lat.fps, sample_rate=SAMPLE_RATE)
    if args.wav:
        write_wav(os.path.splitext(args.out)[0] + ".wav", wav, sample_rate=SAMPLE_RATE)
    logger.info("wrote %s (%d frames %dx%d%s)", args.out, frames.shape[0], frames.shape[2], frames.shape[1],
                ", tiled decode" if plan.tiled else "")
    print(args.out)
    return 0
