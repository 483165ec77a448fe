"""Time <-> latent index arithmetic at the edges, against brute-force enumeration of sample/frame spans."""

import math
from fractions import Fraction

import pytest

from ovi_core.conditioning import ranges as r


def _audio_overlap_bruteforce(a, b, length):
    """Latents whose sample span [512 j, 512 j + 512) meets [a, b) s (16 kHz), by enumeration."""
    a, b = Fraction(str(a)), Fraction(str(b))
    return [j for j in range(length) if Fraction(512 * j, 16000) < b and Fraction(512 * (j + 1), 16000) > a]


def _video_overlap_bruteforce(a, b, length):
    a, b = Fraction(str(a)), Fraction(str(b))
    frames = [k for k in range(4 * length) if a <= Fraction(k, 24) < b]
    return sorted({0 if k == 0 else (k + 3) // 4 for k in frames if (0 if k == 0 else (k + 3) // 4) < length})


@pytest.mark.parametrize("a,b", [(2.0, 3.5), (0.0, 0.032), (0.016, 0.048), (0.16, 0.32), (0.0, 5.024),
                                 (4.99, 5.5), (1.234, 1.235), (0.032, 0.064)])
def test_audio_range_indices(a, b):
    first, stop = r.audio_latents_overlapping(a, b, length=157)
    assert list(range(first, stop)) == _audio_overlap_bruteforce(a, b, 157)


def test_audio_range_examples():
    assert r.audio_latents_overlapping(2.0, 3.5, length=157) == (62, 110)  # 1.984 .. 3.520 s
    assert r.audio_latents_overlapping(0.16, 0.32, length=157) == (5, 10)  # exact edges: 5/31.25 and 10/31.25 s
    assert r.audio_latents_overlapping(0.0, 100.0, length=157) == (0, 157)  # clipped to the clip


@pytest.mark.parametrize("a,b", [(1.0, 2.0), (0.0, 1 / 24), (0.0, 0.05), (1 / 24, 2 / 24), (0.2, 0.21),
                                 (4.9, 5.05), (0.125, 0.2917), (0.0, 5.0417)])
def test_video_range_indices(a, b):
    first, stop = r.video_latents_overlapping(a, b, length=31)
    assert list(range(first, stop)) == _video_overlap_bruteforce(a, b, 31)


def test_video_range_examples_and_frame_maps():
    assert r.video_latents_overlapping(1.0, 2.0, length=31) == (6, 13)  # pixel frames 24..47 -> latents 6..12
    assert r.video_frames_of_latent(6) == (21, 25) and r.video_frames_of_latent(12) == (45, 49)
    assert r.video_latents_overlapping(0.0, 1 / 24, length=31) == (0, 1)  # frame 0 alone is latent 0
    assert [r.video_latent_of_frame(k) for k in (0, 1, 4, 5, 8, 9, 120)] == [0, 1, 1, 2, 2, 3, 30]
    for j in range(31):
        a, b = r.video_frames_of_latent(j)
        assert all(r.video_latent_of_frame(k) == j for k in range(a, b))
    assert [r.video_latents_covered(n) for n in (0, 1, 4, 5, 8, 9, 121)] == [0, 1, 1, 2, 2, 3, 31]
    with pytest.raises(ValueError, match="no video frame"):
        r.video_latents_overlapping(0.01, 0.02, length=31)


def test_audio_coverage_at_offsets():
    # a sound of exactly 10 latents at offset 0 covers latents 0..9
    assert r.audio_latents_covered(0, 5120, length=157) == (0, 10)
    # one sample short: the last latent is only partly covered and left to the model
    assert r.audio_latents_covered(0, 5119, length=157) == (0, 9)
    # offset 1.0 s = sample 16000 = 31.25 latents: latent 31 is partly covered, 32 is the first whole one
    assert r.offset_samples(1.0) == 16000
    assert r.audio_latents_covered(16000, 16000, length=157) == (32, 62)
    # by enumeration
    for start, n in ((0, 1), (511, 1026), (512, 512), (1000, 80000), (79000, 5000)):
        first, stop = r.audio_latents_covered(start, n, length=157)
        want = [j for j in range(157) if start <= 512 * j and 512 * (j + 1) <= start + n]
        assert list(range(first, stop)) == want, (start, n)
    assert r.offset_samples(0.16) == 2560 and r.exact_seconds(0.1) == Fraction(1, 10)


def test_parse_redo():
    assert r.parse_redo("audio:2.0-3.5") == ("audio", Fraction(2), Fraction(7, 2))
    assert r.parse_redo("video:1.0-2.0") == ("video", Fraction(1), Fraction(2))
    for bad in ("audio2.0-3.5", "sound:1-2", "video:2.0", "audio:3.5-2.0", "audio:a-b", "audio:1-1"):
        with pytest.raises(ValueError, match="redo"):
            r.parse_redo(bad)
    with pytest.raises(ValueError, match="clip is"):
        r.redo_latents("audio", 6.0, 7.0, length=157, clip_seconds=5.024)
    with pytest.raises(ValueError, match=">= 0"):
        r.exact_seconds(-1)
    assert math.isclose(r.audio_seconds(157), 5.024)
