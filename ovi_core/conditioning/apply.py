"""Guide inputs in a generation: size checks before heavy work, encoding with the right VAE, originals on output."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from ovi_core.sampling.guides import Guide

logger = logging.getLogger(__name__)


def guide_size(inputs: Sequence, *, image_hw: tuple[int, int] | None = None) -> tuple[int, int] | None:
    """The ``(height, width)`` in pixels that the video guides fix (``None`` if none does).

    Raises ``ValueError`` when two video inputs, or a video input and the first image (``image_hw``, its
    snapped size), disagree: the clip has one size.
    """
    found: list[tuple[str, tuple[int, int]]] = []
    if image_hw is not None:
        found.append(("the first image", tuple(image_hw)))
    for n, g in enumerate(inputs):
        if getattr(g, "stream", None) != "video":
            continue
        if isinstance(g, Guide):
            hw = (g.latent.shape[-2] * 16, g.latent.shape[-1] * 16)
        elif hasattr(g, "height"):
            hw = (g.height, g.width)
        else:
            lat = g.guide.latent
            hw = (lat.shape[-2] * 16, lat.shape[-1] * 16)
        found.append((f"video guide {n}", hw))
    sizes_seen = {hw for _, hw in found}
    if len(sizes_seen) > 1:
        desc = ", ".join(f"{name} {hw[1]}x{hw[0]}" for name, hw in found)
        raise ValueError(f"the clip has one size but its inputs disagree ({desc}); give frames and a first image of "
                         "the same aspect ratio, or drop the first image (the video's first frame is used)")
    video_hw = [hw for name, hw in found if name != "the first image"]
    return video_hw[0] if video_hw else None


def encode_inputs(inputs: Sequence, *, video_vae, audio_codec, device: torch.device | str) -> list[Guide]:
    """Each input as a :class:`Guide`: ``Guide`` objects pass through, others are encoded (video with
    ``video_vae``, audio with ``audio_codec``); the caller places the components on ``device``."""
    out = []
    for g in inputs:
        if isinstance(g, Guide):
            out.append(g)
        elif g.stream == "video":
            out.append(g.encode(video_vae, device=device))
        else:
            out.append(g.encode(audio_codec, device=device))
    return out


def splice_originals(inputs: Sequence, frames: torch.Tensor, waveform: torch.Tensor, *, original: bool = True
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Put the user's own frames / sound back where their guides held the latents (``original=False``: keep the
    decoded VAE round trip). Logs which the output carries. frames ``[F, H, W, 3]``, waveform ``[1, T]`` 16 kHz."""
    for g in inputs:
        if not hasattr(g, "splice"):
            continue
        what = "frames" if g.stream == "video" else "audio"
        if original:
            if g.stream == "video":
                frames = g.splice(frames)
            else:
                waveform = g.splice(waveform)
            logger.info("output carries your original %s where they were given (not their VAE round trip)", what)
        else:
            logger.info("output carries the VAE round trip of your %s (decoded from the latents)", what)
    return frames, waveform
