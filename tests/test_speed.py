"""Faster sampling: few-step preset, CFG reuse, step cache; forward counts and bit-identity of the defaults."""

from __future__ import annotations

import pytest
import torch

from ovi_core.model.config import TINY
from ovi_core.model.loader import random_fusion
from ovi_core.sampling.av import sample_av
from ovi_core.sampling.cfg_cache import CFGCache, CFGReuse, ReuseWindow
from ovi_core.sampling.fast import ForwardCounter, SpeedOptions, apply_preset
from ovi_core.sampling.joint import make_cfg_denoiser, sample_joint
from ovi_core.sampling.settings import SamplingSettings
from ovi_core.sampling.step_cache import StepCache, StepCacheConfig
from ovi_core.text.conditioning import Conditioning

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is faster on the shared cores


@pytest.fixture(scope="module")
def model():
    return random_fusion(TINY, seed=0).float().eval()


@pytest.fixture(scope="module")
def cond():
    g = torch.Generator().manual_seed(0)
    t = lambda n: torch.randn(n, TINY.video.text_dim, generator=g)  # noqa: E731
    return Conditioning(positive=t(6), video_negative=t(4), audio_negative=t(5), prompt="x")


def _sample(model, cond, **kw):
    settings = SamplingSettings(**{"steps": 8, "slg_layer": 1, "seed": 3, **kw})
    return sample_av(model, cond, height=64, width=64, settings=settings, device="cpu", dtype=torch.float32)


def test_both_scales_one_is_one_forward_per_step(model, cond):
    dense = _sample(model, cond, steps=6)
    assert dense.stats["forwards"] == 12
    one = _sample(model, cond, steps=6, video_guidance_scale=1.0, audio_guidance_scale=1.0)
    assert one.stats["forwards"] == 6
    # one guided modality still needs the negative pass
    assert _sample(model, cond, steps=6, video_guidance_scale=1.0).stats["forwards"] == 12


def test_fast_preset_settings():
    kw = dict(steps=50, video_guidance_scale=4.0, audio_guidance_scale=3.0, shift=5.0)
    assert apply_preset("fast", seconds=5, **kw) == dict(steps=6, video_guidance_scale=1.0,
                                                          audio_guidance_scale=1.0, shift=6.0)
    assert apply_preset("fast", seconds=10, **kw)["steps"] == 10
    assert apply_preset("default", seconds=5, **kw) == kw
    with pytest.raises(ValueError, match="Unknown sampling preset"):
        apply_preset("turbo", seconds=5, **kw)


def test_defaults_and_off_switches_are_bit_identical(model, cond):
    ref = _sample(model, cond)
    for speed in (SpeedOptions(), SpeedOptions(step_cache=StepCacheConfig(threshold=0.0)),
                  SpeedOptions(cfg_reuse=CFGReuse.uniform(0.0, 1.0, 1))):  # refresh 1 = fresh every step
        got = _sample(model, cond, speed=speed)
        assert torch.equal(got.video, ref.video) and torch.equal(got.audio, ref.audio)
        assert got.stats["forwards"] == 16


def test_published_cfg_window_reuses_14_of_30():
    assert CFGReuse.uniform(0.3, 0.9, 5).skipped_steps(30) == [10, 11, 12, 13, 15, 16, 17, 18, 20, 21, 22, 23, 25, 26]
    per = CFGReuse(video=ReuseWindow(0.3, 0.9, 5), audio=ReuseWindow(0.5, 0.9, 5))
    assert per.skipped_steps(30) == [16, 17, 18, 21, 22, 23, 26]  # only where both may reuse
    assert per.skipped_steps(30, audio_guided=False) == CFGReuse.uniform(0.3, 0.9, 5).skipped_steps(30)
    assert CFGReuse(video=ReuseWindow(), audio=None).skipped_steps(30) == []
    with pytest.raises(ValueError, match="start <= end"):
        ReuseWindow(0.9, 0.3, 5)
    with pytest.raises(ValueError, match="refresh"):
        ReuseWindow(0.3, 0.9, 0)


def test_cfg_reuse_forward_counts(model, cond):
    reuse = CFGReuse.uniform(0.3, 0.9, 5)
    lat = _sample(model, cond, steps=30, speed=SpeedOptions(cfg_reuse=reuse))
    assert lat.stats["cfg_reused"] == 14 and lat.stats["cfg_negative_passes"] == 16
    assert lat.stats["forwards"] == 60 - 14
    dense = _sample(model, cond, steps=30)
    assert not torch.equal(lat.video, dense.video)  # reuse changes the result a little
    rel = (lat.video - dense.video).norm() / dense.video.norm()
    assert rel < 0.5


@pytest.mark.parametrize("mode", ["delta", "negative"])
def test_cfg_reuse_combination_matches_hand_computed(model, cond, mode):
    g = torch.Generator().manual_seed(4)
    x = [(torch.randn(1, 48, 3, 4, 4, generator=g), torch.randn(1, 15, 20, generator=g)) for _ in range(2)]
    ts = [torch.tensor([900.0]), torch.tensor([850.0])]
    pv, vn, an = [cond.positive], [cond.video_negative], [cond.audio_negative]

    def fn(v, a, t, vc, ac, **kw):
        with torch.no_grad():
            return model(v, a, t, vc, ac, **kw)

    cache = CFGCache(CFGReuse.uniform(0.0, 1.0, 2, mode=mode), steps=2)  # step 0 fresh, step 1 reused
    den = make_cfg_denoiser(fn, pos_video_ctx=pv, pos_audio_ctx=pv, neg_video_ctx=vn, neg_audio_ctx=an,
                            video_guidance_scale=4.0, audio_guidance_scale=3.0, slg_layer=1, batch_cfg=False,
                            cfg_cache=cache)
    den(*x[0], ts[0])
    got_v, got_a = den(*x[1], ts[1])
    assert cache.reused == 1 and cache.negative_passes == 1
    no, yes = torch.zeros(1, dtype=torch.bool), torch.ones(1, dtype=torch.bool)
    pos0 = fn(*x[0], ts[0], pv, pv, slg_layer=1, slg_mask=no)
    neg0 = fn(*x[0], ts[0], vn, an, slg_layer=1, slg_mask=yes)
    pos1 = fn(*x[1], ts[1], pv, pv, slg_layer=1, slg_mask=no)
    for got, p0, n0, p1, s in ((got_v, pos0[0], neg0[0], pos1[0], 4.0), (got_a, pos0[1], neg0[1], pos1[1], 3.0)):
        want = p1 + (s - 1) * (p0 - n0) if mode == "delta" else n0 + s * (p1 - n0)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_step_cache_counts_as_configured(model, cond):
    # a huge threshold skips whenever allowed: warmup 2, at most 3 in a row, the last step always runs
    cfg = StepCacheConfig(threshold=1e9, warmup=2, max_skips=3)
    lat = _sample(model, cond, steps=12, speed=SpeedOptions(step_cache=cfg))
    assert lat.stats["step_cache_skipped"] == 7 and lat.stats["step_cache_computed"] == 5
    assert lat.stats["forwards"] == 2 * 5
    cache = StepCache(cfg, steps=12)
    calls = []

    def den(v, a, t):
        calls.append(int(t))
        return v * 0.1, a * 0.1

    sample_joint(cache.wrap(den), torch.randn(1, 48, 3, 4, 4), torch.randn(1, 15, 20), steps=12, solver="euler")
    assert cache.skipped_steps == [2, 3, 4, 6, 7, 8, 10] and len(calls) == 5


def test_cfg_reuse_and_step_cache_keep_the_true_step_index(model, cond):
    reuse = CFGReuse.uniform(0.0, 1.0, 2)  # fresh on even steps, reused on odd ones
    cache = StepCacheConfig(threshold=1e9, warmup=2, max_skips=3)  # skips 2, 3, 4, 6, 7, 8, 10 of 12
    lat = _sample(model, cond, steps=12, speed=SpeedOptions(cfg_reuse=reuse, step_cache=cache))
    # computed steps 0, 1, 5, 9, 11: negative pass on 0 (even); 1, 5, 9, 11 are odd and reuse
    assert lat.stats["step_cache_computed"] == 5
    assert lat.stats["cfg_negative_passes"] == 1 and lat.stats["cfg_reused"] == 4
    assert lat.stats["forwards"] == 6


def test_step_cache_reuses_the_last_velocities(model, cond):
    """Oracle: a loop that reuses the last computed velocities on the steps the cache skipped."""
    g = torch.Generator().manual_seed(5)
    v0, a0 = torch.randn(1, 48, 3, 4, 4, generator=g), torch.randn(1, 15, 20, generator=g)
    pv = [cond.positive]

    def fn(v, a, t, vc, ac, **kw):
        with torch.no_grad():
            return model(v, a, t, vc, ac, **kw)

    den = make_cfg_denoiser(fn, pos_video_ctx=pv, pos_audio_ctx=pv, neg_video_ctx=[cond.video_negative],
                            neg_audio_ctx=[cond.audio_negative], slg_layer=1)
    cache = StepCache(StepCacheConfig(threshold=0.15, warmup=2, max_skips=2), steps=10)
    got = sample_joint(cache.wrap(den), v0, a0, steps=10)
    assert 0 < cache.skipped < 8, cache.skipped_steps
    state = {"i": 0, "last": None}

    def oracle(v, a, t):
        i = state["i"]
        state["i"] += 1
        if i not in cache.skipped_steps:
            state["last"] = den(v, a, t)
        return state["last"]

    want = sample_joint(oracle, v0, a0, steps=10)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="threshold"):
        StepCacheConfig(threshold=-1)
    with pytest.raises(ValueError, match="mode"):
        CFGReuse(mode="both")
    counter = ForwardCounter(lambda v, a, t, *x, **k: (v, a), batch=1)
    counter(torch.zeros(2, 1), torch.zeros(2, 1), None)
    assert counter.forwards == 2 and counter.calls == 1
