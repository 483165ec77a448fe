"""Window arithmetic of long clips: frame/sample counts, strides, audio starts, seams, errors."""

import math
from fractions import Fraction

import pytest
import torch

from ovi_core.longclip.assemble import SeamAssembler, stitch_latents
from ovi_core.longclip.plan import audio_start_latent, clip_frames, clip_samples, plan_windows

LENGTHS = [5, 6, 7.3, 10, 12, 20, 30, 45.5, 60, 120]


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.1-10s"])
@pytest.mark.parametrize("seconds", LENGTHS)
def test_plan_covers_the_clip_exactly(version, seconds):
    p = plan_windows(seconds, version=version)
    assert p.frames == round(seconds * 24) + 1 and p.samples == round(p.frames * 16000 / 24)
    wins = p.windows
    assert wins[0].frame_start == 0 and wins[0].audio_start == 0
    # the last window reaches the last frame, the one before does not (no window too many)
    assert wins[-1].frame_start + p.window_frames >= p.frames
    if len(wins) > 1:
        assert wins[-2].frame_start + p.window_frames < p.frames
    for a, b in zip(wins[:-1], wins[1:], strict=True):
        assert b.frame_start - a.frame_start == p.stride == 4 * (p.window_latents - p.overlap_latents)
        # the audio overlap is the previous window's audio past this window's start
        assert b.audio_overlap == a.audio_start + p.window_audio_latents - b.audio_start
        assert b.video_overlap == p.overlap_latents
    for w in wins:
        # the audio start is the latent nearest the video start: within half a latent (16 ms)
        exact = Fraction(w.frame_start, 24) * Fraction(16000, 512)
        assert abs(w.audio_start - exact) <= Fraction(1, 2)
        assert abs(w.av_offset_ms) <= 16.0 + 1e-9


def test_default_overlap_is_about_two_seconds_and_ten_second_windows_align():
    p5 = plan_windows(20, version="1.1")
    assert p5.overlap_latents == 13 and p5.overlap_frames == 49 and p5.stride == 72
    assert p5.crossfade_frames == 12 and p5.crossfade_samples == 8000
    assert 1.9 < p5.windows[1].audio_overlap * 512 / 16000 < 2.1
    p10 = plan_windows(60, version="1.1-10s")
    assert p10.stride == 192 and all(w.av_offset_ms == 0 for w in p10.windows)  # 8 s = 250 audio latents exactly


def test_one_window_for_the_model_length():
    assert plan_windows(5, version="1.1").num_windows == 1
    assert plan_windows(10, version="1.1-10s").num_windows == 1
    assert plan_windows(10, version="1.1").num_windows == 3  # 241 frames: 121 + 72 + 72 >= 241
    assert clip_frames(5) == 121 and clip_frames(10) == 241 and clip_samples(121) == 80667


def test_audio_start_rounding():
    for f in range(0, 2000, 4):
        exact = f * 125 / 96
        assert audio_start_latent(f) == math.floor(exact + 0.5)


@pytest.mark.parametrize("bad", [dict(seconds=4.9), dict(seconds=float("nan")), dict(seconds=20, overlap_seconds=0.1),
                                 dict(seconds=20, overlap_seconds=3.0), dict(seconds=20, crossfade_seconds=2.1),
                                 dict(seconds=20, crossfade_seconds=-1)])
def test_bad_plans_are_clear_errors(bad):
    with pytest.raises(ValueError):
        plan_windows(**bad, version="1.1")


def test_seams_sit_inside_both_windows_and_in_order():
    for version in ("1.1", "1.1-10s"):
        p = plan_windows(61, version=version, overlap_seconds=1.5, crossfade_seconds=0.25)
        for s in p.seams:
            prev, cur = p.windows[s.index - 1], p.windows[s.index]
            assert cur.frame_start <= s.frame0 < s.frame1 <= prev.frame_start + p.window_frames
            assert cur.sample_start <= s.sample0 < s.sample1 <= prev.sample_start + p.window_samples
            assert s.frame1 - s.frame0 == 6 and s.sample1 - s.sample0 == 4000
            g0 = cur.frame_start // 4
            assert g0 < s.latent0 < s.latent1 <= g0 + p.overlap_latents


@pytest.mark.parametrize("seconds", [5, 7.3, 23, 31])
def test_assembler_emits_exact_counts_in_order(seconds):
    """Windows whose frames/samples carry their global index: the output is exactly 0..frames-1 (no frame lost,
    repeated or reordered), and the seams only blend equal values (identical overlaps stay identical)."""
    p = plan_windows(seconds, version="1.1")
    asm = SeamAssembler(p)
    frames, samples = [], []
    for w in p.windows:
        fr = (torch.arange(p.window_frames, dtype=torch.float64) + w.frame_start).view(-1, 1, 1, 1).expand(-1, 2, 2, 3)
        wav = (torch.arange(p.window_samples, dtype=torch.float64) + w.sample_start)[None] / 1e6
        f, s = asm.add(w.index, fr, wav)
        frames.append(f[:, 0, 0, 0])
        samples.append(s[0])
    samples.append(asm.finish()[0])
    frames, samples = torch.cat(frames), torch.cat(samples)
    assert frames.shape[0] == p.frames and samples.shape[0] == p.samples
    assert torch.allclose(frames, torch.arange(p.frames, dtype=torch.float64))
    n = min(p.samples, p.windows[-1].sample_start + p.window_samples)
    assert torch.allclose(samples[:n], torch.arange(n, dtype=torch.float64) / 1e6, atol=1e-12)
    assert torch.all(samples[n:] == 0)


def test_stitched_latents_follow_the_windows():
    p = plan_windows(20, version="1.1")
    h = w = 2

    def window(k):
        win = p.windows[k]
        v = (torch.arange(p.window_latents, dtype=torch.float32) + win.frame_start // 4).view(1, 1, -1, 1, 1)
        a = (torch.arange(p.window_audio_latents, dtype=torch.float32) + win.audio_start).view(1, -1, 1)
        return v.expand(1, 48, -1, h, w).clone(), a.expand(1, -1, 20).clone()

    video, audio = stitch_latents((window(k) for k in range(p.num_windows)), p)
    assert video.shape == (1, 48, p.latent_frames, h, w) and audio.shape == (1, p.audio_latents, 20)
    assert 1 + 4 * (p.latent_frames - 1) >= p.frames > 1 + 4 * (p.latent_frames - 2)
    assert torch.allclose(video[0, 0, :, 0, 0], torch.arange(p.latent_frames, dtype=torch.float32))
    assert torch.allclose(audio[0, :, 0], torch.arange(p.audio_latents, dtype=torch.float32))
