"""Guides in the joint sampler (replace / clean / until), driven by a toy denoiser; image->AV stays bit-identical."""

import pytest
import torch

from ovi_core.sampling.guides import Guide, GuideSchedule, check_guides, clean_masks
from ovi_core.sampling.joint import first_frame_guide, make_cfg_denoiser, sample_joint
from ovi_core.sampling.solvers import SOLVERS, make_solver

B, C, F, H, W, L, A = 1, 48, 5, 4, 4, 12, 20


def _toy(video, audio, t):
    """A smooth nonlinear velocity field that couples the two streams (stands in for the DiT)."""
    tv = (t / 1000).view(-1, 1, 1, 1, 1)
    v = torch.tanh(video * 0.7 + tv) + 0.1 * audio.mean(dim=(1, 2)).view(-1, 1, 1, 1, 1)
    a = torch.tanh(audio * 0.5 - t.view(-1, 1, 1) / 1000) + 0.1 * video.mean(dim=(1, 2, 3, 4)).view(-1, 1, 1)
    return v, a


class Recorder:
    """Records the states the denoiser sees."""

    def __init__(self):
        self.seen = []

    def __call__(self, video, audio, t):
        self.seen.append((video.clone(), audio.clone(), t.clone()))
        return _toy(video, audio, t)


def _noise(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, C, F, H, W, generator=g), torch.randn(B, L, A, generator=g)


def _x0(seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, C, F, H, W, generator=g) * 0.5, torch.randn(1, L, A, generator=g) * 0.5


@pytest.mark.parametrize("solver", SOLVERS)
def test_replace_equals_x0_at_masked_positions_and_differs_elsewhere(solver):
    video, audio = _noise()
    xv, xa = _x0()
    vmask = torch.tensor([False, True, True, False, False])
    amask = torch.zeros(L, dtype=torch.bool)
    amask[3:8] = True
    guides = [Guide("video", xv, vmask), Guide("audio", xa, amask)]
    rec = Recorder()
    v, a = sample_joint(rec, video, audio, solver=solver, steps=6, guides=guides)
    assert torch.equal(v[:, :, vmask], xv[:, :, vmask].expand_as(v[:, :, vmask]))
    assert torch.equal(a[:, amask], xa[:, amask])
    assert not torch.allclose(v[:, :, ~vmask], xv[:, :, ~vmask], atol=1e-2)
    assert not torch.allclose(a[:, ~amask], xa[:, ~amask], atol=1e-2)
    # before every step the model saw the forward process at the solver's own sigma with the starting noise
    sigmas = make_solver(solver, steps=6).sigmas
    for i, (sv, sa, _) in enumerate(rec.seen):
        s = sigmas[i]
        torch.testing.assert_close(sv[:, :, vmask], ((1 - s) * xv + s * video)[:, :, vmask], rtol=0, atol=1e-6)
        torch.testing.assert_close(sa[:, amask], ((1 - s) * xa + s * audio)[:, amask], rtol=0, atol=1e-6)
    # unguided result differs from the guided one in the unmasked positions too (the guide steers the rest)
    v0, a0 = sample_joint(_toy, video, audio, solver=solver, steps=6)
    assert not torch.equal(v0[:, :, ~vmask], v[:, :, ~vmask])


def test_replace_with_spatial_mask():
    video, audio = _noise()
    xv, _ = _x0()
    m = torch.zeros(F, H, W, dtype=torch.bool)
    m[:, :2, 1:3] = True
    v, _ = sample_joint(_toy, video, audio, steps=4, guides=[Guide("video", xv, m)])
    mm = m.expand_as(v[0, 0])[None, None].expand_as(v)
    assert torch.equal(v[mm], xv.expand_as(v)[mm])
    assert not torch.allclose(v[~mm], xv.expand_as(v)[~mm], atol=1e-2)


def test_clean_holds_x0_every_step():
    video, audio = _noise()
    xv, xa = _x0()
    amask = torch.zeros(L, dtype=torch.bool)
    amask[:4] = True
    rec = Recorder()
    v, a = sample_joint(rec, video, audio, steps=5, guides=[Guide("audio", xa, amask, "clean")])
    for _, sa, _ in rec.seen:
        assert torch.equal(sa[:, amask], xa[:, amask])
    assert torch.equal(a[:, amask], xa[:, amask])
    assert not torch.equal(a[:, ~amask], xa[:, ~amask])


def test_until_releases_the_guide():
    video, audio = _noise()
    _, xa = _x0()
    amask = torch.ones(L, dtype=torch.bool)
    g = Guide("audio", xa, amask, until=0.5)
    assert g.enforced_steps(6) == 3 and g.enforced_steps(5) == 3 and g.enforced_steps(1) == 1
    rec = Recorder()
    sigmas = make_solver("unipc", steps=6).sigmas
    _, a = sample_joint(rec, video, audio, steps=6, guides=[g])
    for i, (_, sa, _) in enumerate(rec.seen):
        want = (1 - sigmas[i]) * xa + sigmas[i] * audio
        assert torch.allclose(sa, want, atol=1e-6) == (i < 3), i
    assert not torch.equal(a, xa)  # released: the result is the model's


@pytest.mark.parametrize("solver", SOLVERS)
def test_first_frame_is_bit_identical_to_the_reference_loop(solver):
    """Image->AV as a guide gives exactly what the original loop (frame 0 overwritten in place) gave."""
    g = torch.Generator().manual_seed(4)
    video, audio = torch.randn(2, C, F, H, W, generator=g), torch.randn(2, L, A, generator=g)
    first = torch.randn(1, C, 1, H, W, generator=g)
    sv, sa = make_solver(solver, steps=5), make_solver(solver, steps=5)
    x, y = video.clone(), audio.clone()
    for i in range(5):
        x[:, :, :1] = first
        vv, va = _toy(x, y, sv.timesteps[i].float().expand(2))
        x, y = sv.step(vv, i, x), sa.step(va, i, y)
    x[:, :, :1] = first
    v1, a1 = sample_joint(_toy, video, audio, solver=solver, steps=5, first_frame=first)
    v2, a2 = sample_joint(_toy, video, audio, solver=solver, steps=5, guides=[first_frame_guide(first, frames=F)])
    assert torch.equal(v1, x) and torch.equal(a1, y)
    assert torch.equal(v2, x) and torch.equal(a2, y)


def test_clean_wins_over_replace_where_they_overlap():
    video, audio = _noise()
    xv, _ = _x0()
    other = xv + 1.0
    m = torch.ones(F, dtype=torch.bool)
    v, _ = sample_joint(_toy, video, audio, steps=3,
                        guides=[Guide("video", xv, m, "clean"), Guide("video", other, m, "replace")])
    assert torch.equal(v, xv)


def test_guides_are_validated():
    xv, xa = _x0()
    with pytest.raises(ValueError, match="stream"):
        Guide("picture", xv, torch.ones(F, dtype=torch.bool))
    with pytest.raises(ValueError, match="mode"):
        Guide("video", xv, torch.ones(F, dtype=torch.bool), mode="inpaint")
    with pytest.raises(ValueError, match="bool"):
        Guide("video", xv, torch.ones(F))
    with pytest.raises(ValueError, match=r"\[F\]"):
        Guide("video", xv, torch.ones(F + 1, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\[L\]"):
        Guide("audio", xa, torch.ones(L - 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="until"):
        Guide("audio", xa, torch.ones(L, dtype=torch.bool), until=0.0)
    with pytest.raises(ValueError, match="replace"):
        Guide("audio", xa, torch.ones(L, dtype=torch.bool), "clean", until=0.5)
    video, audio = _noise()
    with pytest.raises(ValueError, match="clip's size"):
        sample_joint(_toy, video[:, :, :4], audio, steps=2, guides=[Guide("video", xv, torch.ones(F, dtype=torch.bool))])
    with pytest.raises(ValueError, match="no position"):
        check_guides([Guide("audio", xa, torch.zeros(L, dtype=torch.bool))], video_shape=video.shape,
                     audio_shape=audio.shape)


def test_clean_masks_for_the_model():
    xv, xa = _x0()
    f0 = torch.zeros(F, dtype=torch.bool)
    f0[0] = True
    am = torch.zeros(L, dtype=torch.bool)
    am[2:5] = True
    vs, as_ = (B, C, F, H, W), (B, L, A)
    vc, ac = clean_masks([Guide("video", xv, f0, "clean"), Guide("audio", xa, am, "clean"),
                          Guide("audio", xa, ~am)], video_shape=vs, audio_shape=as_)
    assert vc.tolist() == [f0.tolist()] and ac.tolist() == [am.tolist()]
    sp = torch.zeros(F, H, W, dtype=torch.bool)
    sp[1, :2, 2:] = True  # one whole 2x2 patch = one token
    vc, ac = clean_masks([Guide("video", xv, sp, "clean"), Guide("video", xv, f0, "clean")], video_shape=vs,
                         audio_shape=as_)
    assert ac is None and vc.shape == (1, F, H // 2, W // 2)
    assert vc[0, 0].all() and vc[0, 1].tolist() == [[False, True], [False, False]] and not vc[0, 2:].any()
    sp[1, 2, 0] = True  # half a token
    with pytest.raises(ValueError, match="2x2"):
        clean_masks([Guide("video", xv, sp, "clean")], video_shape=vs, audio_shape=as_)
    assert clean_masks([Guide("video", xv, sp)], video_shape=vs, audio_shape=as_) == (None, None)


def test_denoiser_passes_clean_masks_only_when_given():
    calls = []

    def old_model(video, audio, t, vc, ac, *, first_frame_clean, slg_layer, slg_mask):  # no clean kwargs
        calls.append("old")
        return video * 0, audio * 0

    def new_model(video, audio, t, vc, ac, *, first_frame_clean, slg_layer, slg_mask, video_clean=None,
                  audio_clean=None):
        calls.append((video.shape[0], None if video_clean is None else tuple(video_clean.shape),
                      None if audio_clean is None else tuple(audio_clean.shape)))
        return video * 0, audio * 0

    ctx = dict(pos_video_ctx=torch.zeros(3, 4), pos_audio_ctx=torch.zeros(3, 4), neg_video_ctx=torch.zeros(3, 4),
               neg_audio_ctx=torch.zeros(3, 4))
    v, a = torch.zeros(2, C, F, H, W), torch.zeros(2, L, A)
    t = torch.full((2,), 500.0)
    make_cfg_denoiser(old_model, **ctx)(v, a, t)
    assert calls == ["old"]
    make_cfg_denoiser(new_model, **ctx, audio_clean=torch.ones(2, L, dtype=torch.bool))(v, a, t)
    make_cfg_denoiser(new_model, **ctx, batch_cfg=False, video_clean=torch.ones(1, F, dtype=torch.bool))(v, a, t)
    assert calls[1:] == [(4, None, (4, L)), (2, (1, F), None), (2, (1, F), None)]
    with pytest.raises(ValueError, match="bool"):
        make_cfg_denoiser(new_model, **ctx, audio_clean=torch.ones(1, L))


def test_no_guides_is_a_no_op():
    video, audio = _noise()
    s = GuideSchedule((), video_noise=video, audio_noise=audio, sigmas=make_solver("unipc", steps=2).sigmas, steps=2)
    assert not s
    assert s.before_step(0, video, audio)[0] is video and s.finish(video, audio)[1] is audio
