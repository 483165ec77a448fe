"""One tensor holding both Ovi streams, for hosts without nested latents (ComfyUI < 0.3.67).

Layout ("frame-packed"): ``[B, 48, F + Fa, h, w]``. Latent frames ``0..F-1`` are the video latent; the audio latent
``[B, 20, T]`` is flattened channel-major and written into ``Fa = ceil(20 T / (48 h w))`` extra frames, zero padded.
The shape alone tells ``F`` and ``T``: ``T`` is a function of ``F`` (:func:`audio_length`), and ``F + Fa`` grows
strictly with ``F``. Because the result looks like a Wan2.2 video latent (48 channels, 5-D), ComfyUI's generic
latent code (empty-latent channel fix, noise, masks, batching) treats it as one.

Audio is kept channel-first ``[B, 20, T]`` so time is dim 2 for both streams (what ComfyUI's context windows slice).
"""

from __future__ import annotations

import math

import torch

VIDEO_CHANNELS = 48
AUDIO_CHANNELS = 20
FPS = 24
AUDIO_RATE = 16000 / 512  # audio latents per second (16 kHz, hop 512)
_SPEC_LENGTHS = {121: 157, 241: 314}  # the official clip lengths (pixel frames -> audio latents)


def pixel_frames(latent_frames: int) -> int:
    return 4 * (latent_frames - 1) + 1


def audio_length(latent_frames: int) -> int:
    """Audio latents for ``latent_frames`` video latents: the official 157 (5 s) and 314 (10 s), else
    ``round(pixel_frames / 24 * 31.25)``."""
    if latent_frames < 1:
        raise ValueError(f"latent_frames must be >= 1, got {latent_frames}")
    frames = pixel_frames(latent_frames)
    return _SPEC_LENGTHS.get(frames, max(1, round(frames / FPS * AUDIO_RATE)))


def audio_frames(latent_frames: int, h: int, w: int) -> int:
    """Extra latent frames that carry the audio of a ``latent_frames x h x w`` clip."""
    return math.ceil(AUDIO_CHANNELS * audio_length(latent_frames) / (VIDEO_CHANNELS * h * w))


def split(total: int, h: int, w: int) -> tuple[int, int]:
    """``(F, T)`` of a frame-packed latent with ``total`` latent frames of ``h x w``."""
    for f in range(1, total):
        n = f + audio_frames(f, h, w)
        if n == total:
            return f, audio_length(f)
        if n > total:
            break
    raise ValueError(f"a latent of {total} frames of {h}x{w} is not a packed Ovi audio+video latent; make it with "
                     "OviEmptyLatentAV (or the Ovi latent bridge)")


def pack(video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
    """video ``[B, 48, F, h, w]`` + audio ``[B, 20, T]`` (``T == audio_length(F)``) -> ``[B, 48, F + Fa, h, w]``."""
    b, c, f, h, w = video.shape
    if c != VIDEO_CHANNELS or audio.ndim != 3 or audio.shape[:2] != (b, AUDIO_CHANNELS):
        raise ValueError(f"expected video [B, 48, F, h, w] and audio [B, 20, T], got {list(video.shape)} and "
                         f"{list(audio.shape)}")
    if audio.shape[2] != audio_length(f):
        raise ValueError(f"audio length {audio.shape[2]} does not match {f} video latent frames (expected "
                         f"{audio_length(f)})")
    fa = audio_frames(f, h, w)
    flat = audio.reshape(b, -1).to(video.dtype)  # [B, 20 T]
    pad = fa * VIDEO_CHANNELS * h * w - flat.shape[1]
    tail = torch.nn.functional.pad(flat, (0, pad)).reshape(b, fa, VIDEO_CHANNELS, h, w).transpose(1, 2)
    return torch.cat([video, tail], dim=2)  # [B, 48, F + Fa, h, w]


def unpack(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B, 48, F + Fa, h, w]`` -> (video ``[B, 48, F, h, w]``, audio ``[B, 20, T]``)."""
    if x.ndim != 5 or x.shape[1] != VIDEO_CHANNELS:
        raise ValueError(f"a packed Ovi latent is [B, 48, F + Fa, h, w], got {list(x.shape)}")
    b, _, total, h, w = x.shape
    f, t = split(total, h, w)
    tail = x[:, :, f:].transpose(1, 2).reshape(b, -1)  # [B, Fa 48 h w]
    return x[:, :, :f], tail[:, : AUDIO_CHANNELS * t].reshape(b, AUDIO_CHANNELS, t)


def video_frames(x: torch.Tensor) -> int:
    """``F`` of a frame-packed latent (where the audio frames begin)."""
    return split(x.shape[2], x.shape[3], x.shape[4])[0]
