"""Time <-> latent index arithmetic of both streams, exact at the edges (rational arithmetic, no float drift).

Audio: 16 kHz, 512 samples per latent (mel hop 256, VAE x2), so latent ``j`` spans samples ``[512 j, 512 (j + 1))``
= seconds ``[j / 31.25, (j + 1) / 31.25)``.

Video: 24 fps; latent frame 0 holds pixel frame 0 alone, latent frame ``j >= 1`` holds pixel frames
``4 j - 3 .. 4 j`` (Wan2.2 VAE, causal first frame); pixel frame ``k`` is shown at ``k / 24`` s.

Seconds given as floats are read through their shortest decimal form (``Fraction(repr(x))``), so ``0.16`` s is
exactly 5 audio latents and ``1.0`` s exactly pixel frame 24.
"""

from __future__ import annotations

import math
from fractions import Fraction

import torch

SAMPLE_RATE = 16_000
SAMPLES_PER_LATENT = 512
FPS = 24
FRAMES_PER_LATENT = 4
AUDIO_LATENT_RATE = Fraction(SAMPLE_RATE, SAMPLES_PER_LATENT)  # 31.25 latents per second
STREAMS = ("audio", "video")


def exact_seconds(seconds: float | int | str | Fraction, *, what: str = "time") -> Fraction:
    """``seconds`` as an exact fraction (floats via their shortest decimal form); must be finite and >= 0."""
    if isinstance(seconds, Fraction):
        value = seconds
    else:
        try:
            f = float(seconds)
        except (TypeError, ValueError):
            raise ValueError(f"{what} must be a number of seconds, got {seconds!r}") from None
        if not math.isfinite(f):
            raise ValueError(f"{what} must be a finite number of seconds, got {seconds!r}")
        value = Fraction(repr(f)) if not isinstance(seconds, str) else Fraction(str(seconds).strip())
    if value < 0:
        raise ValueError(f"{what} must be >= 0 seconds, got {float(value):g}")
    return value


def frame_rate(fps: float | int | str | Fraction) -> Fraction:
    """A frame rate as an exact fraction: a finite number of frames per second above 0 (``ValueError`` else)."""
    try:
        f = float(fps)
    except (TypeError, ValueError):
        f = float("nan")
    if not math.isfinite(f) or f <= 0:
        raise ValueError(f"fps must be a finite number of frames per second above 0, got {fps!r}; e.g. 24")
    return exact_seconds(fps, what="fps")


# -- audio ------------------------------------------------------------------------------------------------


def audio_seconds(num_latents: int) -> float:
    """Seconds spanned by ``num_latents`` audio latents (157 -> 5.024)."""
    return num_latents * SAMPLES_PER_LATENT / SAMPLE_RATE


def audio_latents_overlapping(start: float, end: float, *, length: int) -> tuple[int, int]:
    """Audio latents ``[first, stop)`` whose span overlaps ``[start, end)`` s, clipped to ``[0, length)``.

    Redoing ``2.0-3.5`` s regenerates latents 62..109 (1.984-3.520 s): every latent touching the range.
    """
    a, b = exact_seconds(start, what="range start"), exact_seconds(end, what="range end")
    if b <= a:
        raise ValueError(f"time range {float(a):g}-{float(b):g} s is empty; give start < end, e.g. 2.0-3.5")
    first, stop = math.floor(a * AUDIO_LATENT_RATE), math.ceil(b * AUDIO_LATENT_RATE)
    return max(0, min(first, length)), max(0, min(stop, length))


def audio_latents_covered(first_sample: int, num_samples: int, *, length: int) -> tuple[int, int]:
    """Audio latents ``[first, stop)`` lying entirely inside samples ``[first_sample, first_sample + num_samples)``
    (16 kHz), clipped to ``[0, length)``; a latent only partly covered is left to the model."""
    first = -(-first_sample // SAMPLES_PER_LATENT)  # ceil
    stop = (first_sample + num_samples) // SAMPLES_PER_LATENT
    first, stop = max(0, min(first, length)), max(0, min(stop, length))
    return first, max(first, stop)


def offset_samples(offset: float) -> int:
    """An offset in seconds as a 16 kHz sample index (rounded to the nearest sample)."""
    return round(exact_seconds(offset, what="audio offset") * SAMPLE_RATE)


# -- video ------------------------------------------------------------------------------------------------


def video_latent_of_frame(frame: int) -> int:
    """Latent frame holding pixel frame ``frame`` (0 -> 0, 1..4 -> 1, 5..8 -> 2, ...)."""
    if frame < 0:
        raise ValueError(f"pixel frame index must be >= 0, got {frame}")
    return 0 if frame == 0 else (frame + FRAMES_PER_LATENT - 1) // FRAMES_PER_LATENT


def video_frames_of_latent(latent: int) -> tuple[int, int]:
    """Pixel frames ``[first, stop)`` of latent frame ``latent`` (0 -> (0, 1), j -> (4j - 3, 4j + 1))."""
    if latent < 0:
        raise ValueError(f"latent frame index must be >= 0, got {latent}")
    return (0, 1) if latent == 0 else (FRAMES_PER_LATENT * latent - 3, FRAMES_PER_LATENT * latent + 1)


def video_latents_covered(num_frames: int) -> int:
    """Whole latent frames that the first ``num_frames`` pixel frames fill (1 -> 1, 4 -> 1, 5 -> 2, 121 -> 31)."""
    return 0 if num_frames < 1 else 1 + (num_frames - 1) // FRAMES_PER_LATENT


def video_latents_overlapping(start: float, end: float, *, length: int) -> tuple[int, int]:
    """Latent frames ``[first, stop)`` holding a pixel frame shown within ``[start, end)`` s, clipped to length.

    Redoing ``1.0-2.0`` s (pixel frames 24..47) regenerates latent frames 6..12 (pixel frames 21..48).
    """
    a, b = exact_seconds(start, what="range start"), exact_seconds(end, what="range end")
    if b <= a:
        raise ValueError(f"time range {float(a):g}-{float(b):g} s is empty; give start < end, e.g. 1.0-2.0")
    k0, k1 = math.ceil(a * FPS), math.ceil(b * FPS)  # pixel frames k0..k1-1 are shown in [a, b)
    if k1 <= k0:
        raise ValueError(f"time range {float(a):g}-{float(b):g} s holds no video frame (one every 1/24 s); widen it")
    first, stop = video_latent_of_frame(k0), video_latent_of_frame(k1 - 1) + 1
    return max(0, min(first, length)), max(0, min(stop, length))


# -- masks and the redo syntax ----------------------------------------------------------------------------


def span_mask(length: int, first: int, stop: int) -> torch.Tensor:
    """Bool ``[length]``, True on ``[first, stop)``."""
    m = torch.zeros(length, dtype=torch.bool)
    m[first:stop] = True
    return m


def parse_redo(text: str) -> tuple[str, Fraction, Fraction]:
    """``"audio:2.0-3.5"`` or ``"video:1.0-2.0"`` -> ``(stream, start, end)`` in exact seconds."""
    stream, sep, rng = str(text).partition(":")
    stream = stream.strip().lower()
    a, dash, b = rng.partition("-")
    if not sep or not dash or stream not in STREAMS:
        raise ValueError(f"--redo must look like audio:2.0-3.5 or video:1.0-2.0 (stream:start-end in seconds), "
                         f"got {text!r}")
    try:
        start, end = exact_seconds(a, what="range start"), exact_seconds(b, what="range end")
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"--redo {text!r}: start and end must be seconds, e.g. audio:2.0-3.5") from None
    if end <= start:
        raise ValueError(f"--redo {text!r}: the range is empty; give start < end")
    return stream, start, end


def redo_latents(stream: str, start: float | Fraction, end: float | Fraction, *, length: int,
                 clip_seconds: float) -> tuple[int, int]:
    """Latent indices ``[first, stop)`` of ``stream`` to regenerate for ``[start, end)`` s of a clip.

    Raises ``ValueError`` when the range starts past the clip's end (``clip_seconds``).
    """
    a = exact_seconds(start, what="range start")
    if a >= exact_seconds(clip_seconds):
        raise ValueError(f"redo range starts at {float(a):g} s but the clip is {clip_seconds:.3f} s long")
    fn = audio_latents_overlapping if stream == "audio" else video_latents_overlapping
    return fn(a, end, length=length)
