"""Sample-rate conversion with bounded memory, whatever the two rates.

``torchaudio.functional.resample`` builds a windowed-sinc kernel of ``new / g`` phases of about
``2 * width * orig / g`` taps, ``g = gcd(orig, new)``: for usual rates (48000, 44100, 22050, 8000 -> 16000) that is
a few hundred phases, but 44101 -> 16000 (``g = 1``) asks for 16000 x ~500,000 taps, gigabytes in one request.
:func:`resample` keeps usual rates exact (the same call, bit-identical) and takes odd rates through the nearest
ratio of small integers instead (``Fraction.limit_denominator``): the audio is then played back at most
:data:`TOLERANCE` (relative) fast or slow, far below what an ear hears, and under 5 ms over a 10 s clip.
"""

from __future__ import annotations

import logging
import math
from fractions import Fraction

import torch
import torchaudio.functional as AF

logger = logging.getLogger(__name__)

MAX_KERNEL = 4_000_000  # largest o * n (reduced rates) converted exactly: torchaudio's kernel has about o * n taps
TOLERANCE = 5e-4  # the most an odd rate's ratio can be off (Dirichlet: 1 / sqrt(MAX_KERNEL)); 0.05 % is 0.9 cent


def ratio(orig: int, new: int) -> tuple[int, int]:
    """The reduced rates ``(o, n)`` that :func:`resample` converts with: ``orig / g, new / g`` when
    ``o * n <= MAX_KERNEL``, else the closest ratio ``o / n`` to ``orig / new`` within that budget."""
    orig, new = int(orig), int(new)
    if orig <= 0 or new <= 0:
        raise ValueError(f"sample rates must be positive, got {orig} and {new}")
    g = math.gcd(orig, new)
    o, n = orig // g, new // g
    if o * n <= MAX_KERNEL:
        return o, n
    big = Fraction(max(orig, new), min(orig, new))  # >= 1
    f = big.limit_denominator(max(1, math.isqrt(int(MAX_KERNEL / big))))
    a, b = f.numerator, f.denominator  # a / b ~= big, a * b <~ MAX_KERNEL
    return (a, b) if orig >= new else (b, a)


def resample(x: torch.Tensor, orig: int, new: int) -> torch.Tensor:
    """Resample the last dimension of ``x`` from ``orig`` Hz to ``new`` Hz (torchaudio's windowed sinc, its defaults).

    Rates whose reduced ratio ``o / n`` has ``o * n <= MAX_KERNEL`` are converted exactly, as
    ``torchaudio.functional.resample(x, orig, new)`` (every usual rate: 44100 -> 16000 is 441 / 160); others through
    the nearest ratio within that budget (relative error below :data:`TOLERANCE`, logged), so the kernel stays
    under about 16 MB.
    """
    orig, new = int(orig), int(new)
    if orig == new:
        return x
    o, n = ratio(orig, new)
    g = math.gcd(orig, new)
    if (o, n) == (orig // g, new // g):
        return AF.resample(x, orig, new)
    err = abs(o * new / (n * orig) - 1.0)
    logger.info("resampling %d Hz to %d Hz as %d:%d (rate off by %.1e, inaudible)", orig, new, o, n, err)
    return AF.resample(x, o, n)
