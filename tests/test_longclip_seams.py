"""Seam cross-fades: constant power for any correlation, no jump in the waveform, linear pixel/latent fades."""

import math

import pytest
import torch

from ovi_core.longclip.seams import audio_crossfade, correlation, equal_power_gains, fade_ramp, linear_crossfade

SR = 16000


def _tone(freq, n, phase=0.0, amp=0.5):
    t = torch.arange(n, dtype=torch.float64) / SR
    return (amp * torch.sin(2 * math.pi * freq * t + phase))[None]


def _max_step(x):
    return float((x[..., 1:] - x[..., :-1]).abs().max())


def test_gains_are_equal_power_for_unrelated_and_linear_for_identical_signals():
    g_out, g_in = equal_power_gains(1001, r=0.0)
    assert torch.allclose(g_out**2 + g_in**2, torch.ones(1001, dtype=torch.float64))
    assert abs(float(g_out[500]) - math.sqrt(0.5)) < 1e-3 and abs(float(g_in[500]) - math.sqrt(0.5)) < 1e-3
    g_out, g_in = equal_power_gains(1001, r=1.0)
    assert torch.allclose(g_out + g_in, torch.ones(1001, dtype=torch.float64))
    # monotone fades, strictly inside (0, 1)
    assert torch.all(g_in[1:] > g_in[:-1]) and torch.all(g_out[1:] < g_out[:-1])
    t = fade_ramp(8)
    assert float(t[0]) > 0 and float(t[-1]) < 1


def test_identical_overlap_is_left_unchanged():
    """Neighbouring windows share their overlap; the fade of a signal with itself must not swell by 3 dB."""
    x = _tone(220, 8000) + 0.1 * _tone(3100, 8000, 0.3)
    y = audio_crossfade(x, x.clone())
    assert correlation(x, x) == pytest.approx(1.0)
    assert torch.allclose(y, x, atol=1e-12)


def test_unrelated_signals_keep_their_power():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(1, 8000, generator=g, dtype=torch.float64) * 0.3
    b = torch.randn(1, 8000, generator=g, dtype=torch.float64) * 0.3
    y = audio_crossfade(a, b)
    mid = y[:, 3000:5000]
    ref = 0.5 * (a[:, 3000:5000].pow(2).mean() + b[:, 3000:5000].pow(2).mean())
    assert abs(float(mid.pow(2).mean()) / float(ref) - 1.0) < 0.1  # no dip in the middle (a linear fade: -3 dB)


def _stitch(a, b, overlap, fade, *, crossfade=True):
    """Two clips overlapping by ``overlap`` samples; the seam in the middle of the overlap."""
    na = a.shape[1]
    start_b = na - overlap
    s0 = start_b + (overlap - fade) // 2
    left = a[:, :s0]
    right = b[:, s0 - start_b + fade :]
    if crossfade:
        mid = audio_crossfade(a[:, s0 : s0 + fade], b[:, s0 - start_b : s0 - start_b + fade])
    else:
        mid = torch.cat([a[:, s0 : s0 + fade // 2], b[:, s0 - start_b + fade // 2 : s0 - start_b + fade]], dim=1)
    return torch.cat([left, mid, right], dim=1)


@pytest.mark.parametrize("phase", [0.0, 1.0, 2.5])
def test_crossfade_leaves_no_jump_in_the_waveform(phase):
    """Two windows that disagree in the overlap (other voice, other phase): the seam's largest sample-to-sample
    step stays within the clips' own (times the equal-power headroom sqrt 2); a hard cut at the same place
    jumps far beyond it, so the check can fail."""
    a = _tone(220, 32000) + 0.05 * _tone(2000, 32000)
    b = _tone(180, 32000, phase) + 0.05 * _tone(1700, 32000, phase)
    own = max(_max_step(a), _max_step(b))
    out = _stitch(a, b, 16000, 8000)
    assert out.shape[1] == 32000 + 16000
    assert _max_step(out) <= math.sqrt(2) * own * 1.01
    cut = _stitch(a, b, 16000, 8000, crossfade=False)
    if phase:  # the hard cut of out-of-phase tones jumps
        assert _max_step(cut) > 2 * own


def test_linear_crossfade_for_frames_and_latents():
    a = torch.zeros(12, 4, 4, 3)
    b = torch.ones(12, 4, 4, 3)
    y = linear_crossfade(a, b, dim=0)
    w = y[:, 0, 0, 0]
    assert torch.allclose(w, fade_ramp(12).float()) and torch.all(w[1:] > w[:-1])
    la, lb = torch.randn(1, 48, 3, 2, 2), torch.randn(1, 48, 3, 2, 2)
    assert torch.equal(linear_crossfade(la, la.clone(), dim=2), la)
    with pytest.raises(ValueError):
        linear_crossfade(la, lb[:, :, :2], dim=2)
