"""Cut a given sound or video to the part a guide uses: ``start`` seconds in, at most ``max_seconds`` long.

What the guide nodes' ``start``/``max_seconds`` inputs do, so a 6 s clip can feed a 5 s Ovi 1.1 guide without an
editor. ``start=0, max_seconds=0`` (the defaults) returns the input unchanged (the same tensor object).
"""

from __future__ import annotations

import math

import torch

from ovi_core import sizes
from ovi_core.conditioning import ranges


def _check(start: float, max_seconds: float) -> tuple[float, float]:
    s, m = float(start), float(max_seconds)
    if not (math.isfinite(s) and s >= 0):
        raise ValueError(f"start must be >= 0 seconds, got {start!r}")
    if not (math.isfinite(m) and m >= 0):
        raise ValueError(f"max_seconds must be >= 0 seconds (0: no limit), got {max_seconds!r}")
    return s, m


def trim_audio(waveform: torch.Tensor, sample_rate: int, *, start: float = 0.0,
               max_seconds: float = 0.0) -> torch.Tensor:
    """``waveform[..., T]`` from ``start`` s, at most ``max_seconds`` s (0: to the end), in samples of ``sample_rate``."""
    s, m = _check(start, max_seconds)
    if s == 0 and m == 0:
        return waveform
    rate = int(sample_rate)
    total = int(waveform.shape[-1])
    a = round(s * rate)
    if a >= total:
        raise ValueError(f"start {s:g} s is at or past the end of the sound ({total / rate:.3f} s); give a smaller "
                         f"start")
    b = total if m == 0 else min(total, a + max(1, round(m * rate)))
    return waveform[..., a:b]


def trim_frames(frames: torch.Tensor, fps: float, *, start: float = 0.0, max_seconds: float = 0.0) -> torch.Tensor:
    """``frames[N, ...]`` shown from ``start`` s on, at most ``max_seconds`` s of them (0: to the end).

    Frame ``k`` is shown at ``k / fps`` s: the first kept frame is the first at or after ``start``.
    """
    s, m = _check(start, max_seconds)
    if s == 0 and m == 0:
        return frames
    rate = float(fps)
    if not (math.isfinite(rate) and rate > 0):
        raise ValueError(f"fps must be > 0, got {fps!r}")
    total = int(frames.shape[0])
    a = math.ceil(s * rate - 1e-9)
    if a >= total:
        raise ValueError(f"start {s:g} s is at or past the end of the video ({total / rate:.3f} s, {total} frames); "
                         f"give a smaller start")
    b = total if m == 0 else min(total, a + max(1, math.floor(m * rate + 1e-9)))
    return frames[a:b]


def longest_audio_seconds(seconds: str) -> float:
    """The longest sound track a guide made for ``seconds`` ("5", "10" or "auto": any model) can land in, seconds."""
    specs = list(sizes.MODEL_SPECS.values())
    if str(seconds) == "5":
        specs = [s for s in specs if s.frames <= sizes.MODEL_SPECS["1.1"].frames]
    elif str(seconds) == "10":
        specs = [sizes.MODEL_SPECS["1.1-10s"]]
    return max(ranges.audio_seconds(s.audio_latent_length) for s in specs)
