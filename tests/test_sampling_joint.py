"""Joint video+audio loop and CFG/skip-layer denoiser, driven by a toy stand-in for the fusion DiT."""

import os

import pytest
import torch
from safetensors.torch import load_file

from ovi_core.sampling.joint import NonFiniteError, make_cfg_denoiser, sample_joint
from ovi_core.sampling.solvers import SOLVERS, make_solver

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
B, C, F, H, W, L, A, LT, D = 2, 48, 3, 2, 2, 5, 20, 4, 8


def _ctx_scalar(ctx, batch):
    """One number per row from a context given as [B, Lt, D] or a list of [Lt, D]."""
    if isinstance(ctx, torch.Tensor):
        assert ctx.ndim == 3 and ctx.shape[0] == batch
        return torch.stack([r.float().sin().mean() for r in ctx])
    assert isinstance(ctx, list) and len(ctx) == batch and all(r.ndim == 2 for r in ctx)
    return torch.stack([r.float().sin().mean() for r in ctx])


class ToyFusion:
    """Test double of the fusion DiT forward: 3 'layers' per row, honouring contexts, t, first frame and slg."""

    def __init__(self):
        self.calls = []

    def __call__(self, video, audio, t, video_context, audio_context, *, first_frame_clean, slg_layer, slg_mask):
        batch = video.shape[0]
        assert audio.shape[0] == batch and t.shape == (batch,) and slg_mask.shape == (batch,)
        assert slg_mask.dtype == torch.bool
        self.calls.append(
            {"batch": batch, "slg_mask": slg_mask.clone(), "slg_layer": slg_layer, "video": video.clone()}
        )
        cv = _ctx_scalar(video_context, batch).view(batch, 1, 1, 1, 1)
        ca = _ctx_scalar(audio_context, batch).view(batch, 1, 1)
        tv = (t / 1000).view(batch, 1, 1, 1, 1).expand(batch, 1, video.shape[2], 1, 1).clone()
        if first_frame_clean:
            tv[:, :, 0] = 0
        hv, ha = video.float(), audio.float()
        for layer in range(1, 4):
            skip = slg_mask & (slg_layer > 0) & (layer == slg_layer)
            nv = hv + 0.3 * torch.tanh(hv * 0.5 + cv + tv * layer) + 0.1 * ha.mean(dim=(1, 2)).view(batch, 1, 1, 1, 1)
            na = (
                ha
                + 0.3 * torch.tanh(ha * 0.5 + ca + (t / 1000).view(batch, 1, 1) * layer)
                + 0.1 * hv.mean(dim=(1, 2, 3, 4)).view(batch, 1, 1)
            )
            hv = torch.where(skip.view(batch, 1, 1, 1, 1), hv, nv)
            ha = torch.where(skip.view(batch, 1, 1), ha, na)
        return (hv - video).to(video.dtype), (ha - audio).to(audio.dtype)


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    video = torch.randn(B, C, F, H, W, generator=g)
    audio = torch.randn(B, L, A, generator=g)
    ctx = {
        "pos_video_ctx": torch.randn(B, LT, D, generator=g),
        "pos_audio_ctx": torch.randn(B, LT, D, generator=g),
        "neg_video_ctx": [torch.randn(LT + 1, D, generator=g) for _ in range(B)],  # other length: list form
        "neg_audio_ctx": torch.randn(LT, D, generator=g),  # one context shared by all rows
    }
    return video, audio, ctx


def test_batched_cfg_equals_unbatched():
    video, audio, ctx = _inputs()
    t = torch.full((B,), 731.0)
    m1, m2 = ToyFusion(), ToyFusion()
    v1, a1 = make_cfg_denoiser(m1, **ctx, batch_cfg=True, slg_layer=2)(video, audio, t)
    v2, a2 = make_cfg_denoiser(m2, **ctx, batch_cfg=False, slg_layer=2)(video, audio, t)
    assert len(m1.calls) == 1 and m1.calls[0]["batch"] == 2 * B
    assert m1.calls[0]["slg_mask"].tolist() == [False] * B + [True] * B
    assert len(m2.calls) == 2 and [c["slg_mask"].tolist() for c in m2.calls] == [[False] * B, [True] * B]
    torch.testing.assert_close(v1, v2, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(a1, a2, rtol=1e-6, atol=1e-6)


def test_cfg_formula_per_modality():
    video, audio, ctx = _inputs(1)
    t = torch.full((B,), 500.0)
    model = ToyFusion()
    v, a = make_cfg_denoiser(model, **ctx, video_guidance_scale=4.0, audio_guidance_scale=3.0, slg_layer=2)(
        video, audio, t
    )
    pos = model(
        video,
        audio,
        t,
        ctx["pos_video_ctx"],
        ctx["pos_audio_ctx"],
        first_frame_clean=False,
        slg_layer=2,
        slg_mask=torch.zeros(B, dtype=torch.bool),
    )
    neg = model(
        video,
        audio,
        t,
        ctx["neg_video_ctx"],
        [ctx["neg_audio_ctx"]] * B,
        first_frame_clean=False,
        slg_layer=2,
        slg_mask=torch.ones(B, dtype=torch.bool),
    )
    torch.testing.assert_close(v, neg[0] + 4.0 * (pos[0] - neg[0]), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(a, neg[1] + 3.0 * (pos[1] - neg[1]), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("batch_cfg", [True, False])
def test_scale_one_is_positive_pass(batch_cfg):
    video, audio, ctx = _inputs(2)
    t = torch.full((B,), 900.0)
    model = ToyFusion()
    v, a = make_cfg_denoiser(model, **ctx, video_guidance_scale=1.0, audio_guidance_scale=1.0, batch_cfg=batch_cfg)(
        video, audio, t
    )
    assert len(model.calls) == 1 and model.calls[0]["batch"] == B and not model.calls[0]["slg_mask"].any()
    pv, pa = ToyFusion()(
        video,
        audio,
        t,
        ctx["pos_video_ctx"],
        ctx["pos_audio_ctx"],
        first_frame_clean=False,
        slg_layer=11,
        slg_mask=torch.zeros(B, dtype=torch.bool),
    )
    assert torch.equal(v, pv) and torch.equal(a, pa)
    # one modality at scale 1: that modality is exactly the positive pass, the other is guided
    model = ToyFusion()
    v, a = make_cfg_denoiser(model, **ctx, video_guidance_scale=1.0, audio_guidance_scale=3.0, batch_cfg=batch_cfg)(
        video, audio, t
    )
    assert torch.equal(v, pv) and not torch.allclose(a, pa)


def test_slg_only_affects_negative_pass():
    video, audio, ctx = _inputs(3)
    t = torch.full((B,), 640.0)
    outs = {}
    for layer in (0, 1, 2):

        class Spy(ToyFusion):
            def __call__(self, *args, **kw):
                out = super().__call__(*args, **kw)
                self.out = out
                return out

        spy = Spy()
        make_cfg_denoiser(spy, **ctx, slg_layer=layer)(video, audio, t)
        outs[layer] = spy.out
        if layer == 0:  # disabled: no row skips
            assert not spy.calls[0]["slg_mask"].any()
    for layer in (1, 2):
        assert torch.equal(outs[layer][0][:B], outs[0][0][:B]) and torch.equal(outs[layer][1][:B], outs[0][1][:B])
        assert not torch.allclose(outs[layer][0][B:], outs[0][0][B:])
        assert not torch.allclose(outs[layer][1][B:], outs[0][1][B:])


@pytest.mark.parametrize("solver", SOLVERS)
def test_first_frame_held(solver):
    video, audio, ctx = _inputs(4)
    first = torch.randn(1, C, 1, H, W)
    model = ToyFusion()
    den = make_cfg_denoiser(model, **ctx, first_frame_clean=True)
    v, a = sample_joint(den, video, audio, solver=solver, steps=4, first_frame=first)
    assert torch.equal(v[:, :, :1], first.expand(B, -1, -1, -1, -1))
    assert len(model.calls) == 4
    for call in model.calls:  # the model saw the clean frame at every step (both CFG halves)
        assert torch.equal(call["video"][:, :, :1], first.expand(2 * B, -1, -1, -1, -1))
    assert not torch.equal(v[:, :, 1:], video[:, :, 1:]) and v.shape == video.shape and a.shape == audio.shape
    with pytest.raises(ValueError, match="first_frame"):
        sample_joint(den, video, audio, steps=2, first_frame=torch.zeros(1, C, 2, H, W))


def test_inputs_not_modified_and_progress():
    video, audio, ctx = _inputs(5)
    v0, a0 = video.clone(), audio.clone()
    seen = []
    sample_joint(
        make_cfg_denoiser(ToyFusion(), **ctx),
        video,
        audio,
        steps=3,
        first_frame=torch.zeros(B, C, 1, H, W),
        callback=lambda i, n: seen.append((i, n)),
    )
    assert torch.equal(video, v0) and torch.equal(audio, a0)
    assert seen == [(1, 3), (2, 3), (3, 3)]


def test_interrupt_stops():
    video, audio, ctx = _inputs(6)
    model = ToyFusion()
    checks = []

    def check():
        checks.append(1)
        if len(checks) == 3:
            raise KeyboardInterrupt("stop")

    with pytest.raises(KeyboardInterrupt):
        sample_joint(make_cfg_denoiser(model, **ctx), video, audio, steps=10, check_interrupt=check)
    assert len(model.calls) == 2


@pytest.mark.parametrize("every,calls", [(1, 3), (4, 4), (100, 10)])
def test_nan_raises(every, calls):
    video, audio, _ = _inputs(7)
    n = []

    def denoise(v, a, t):
        n.append(1)
        va = a * 0.1
        if len(n) == 3:
            va = va.clone()
            va[0, 0, 0] = float("nan")
        return v * 0.1, va

    with pytest.raises(NonFiniteError, match="NaN/Inf"):
        sample_joint(denoise, video, audio, steps=10, nan_check_every=every)
    assert len(n) == calls


@pytest.mark.parametrize("solver", SOLVERS)
def test_joint_loop_reproduces_golden(solver):
    """Both modalities stepped by independent solvers with the shared timestep reproduce the golden finals."""
    g = load_file(os.path.join(DATA, "sampler.io.safetensors"))
    start = g["inputs.start"]  # [2, 48, 3, 4, 4]
    audio = start.reshape(2, 96, 24) * 0.5  # any [B, L, C] tensor

    def denoise(v, a, t):
        return 0.7 * v - 0.3 * torch.sin(t / 200).view(-1, 1, 1, 1, 1), 0.7 * a - 0.3 * torch.sin(t / 200).view(
            -1, 1, 1
        )

    v, a = sample_joint(denoise, start, audio, solver=solver, steps=50, shift=5.0)
    ref = g[f"cases.{solver}.final"]
    torch.testing.assert_close(v, ref, rtol=1e-5, atol=1e-5)
    # the audio went through an identical, independent solver: compare with a direct run
    s = make_solver(solver, steps=50, shift=5.0)
    x = audio
    for i, t in enumerate(s.timesteps):
        x = s.step(0.7 * x - 0.3 * torch.sin(t.float() / 200), i, x)
    torch.testing.assert_close(a, x, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("solver", SOLVERS)
def test_linear_field_joint(solver):
    """Exact straight-path velocities for both modalities: the loop ends on the known clean latents."""
    g = torch.Generator().manual_seed(8)
    x0v, x0a = torch.randn(B, C, F, H, W, generator=g), torch.randn(B, L, A, generator=g)
    sig = make_solver(solver, steps=6).sigmas
    video = (1 - sig[0]) * x0v + sig[0] * torch.randn(B, C, F, H, W, generator=g)
    audio = (1 - sig[0]) * x0a + sig[0] * torch.randn(B, L, A, generator=g)
    k = []

    def denoise(v, a, t):
        s = sig[len(k)].item()
        k.append(1)
        return (v - x0v) / s, (a - x0a) / s

    v, a = sample_joint(denoise, video, audio, solver=solver, steps=6)
    torch.testing.assert_close(v, x0v, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(a, x0a, rtol=1e-4, atol=1e-4)


def test_denoiser_has_no_host_reads():
    """The CFG denoiser runs on meta tensors: no host reads of tensor values per step."""
    calls = []

    def model_fn(video, audio, t, vc, ac, *, first_frame_clean, slg_layer, slg_mask):
        calls.append(slg_mask.shape)
        return video * 2, audio * 2

    ctx = {
        k: torch.empty(1, LT, D, device="meta")
        for k in ("pos_video_ctx", "pos_audio_ctx", "neg_video_ctx", "neg_audio_ctx")
    }
    video, audio = torch.empty(B, C, F, H, W, device="meta"), torch.empty(B, L, A, device="meta")
    v, a = make_cfg_denoiser(model_fn, **ctx)(video, audio, torch.empty(B, device="meta"))
    assert v.shape == video.shape and a.shape == audio.shape and calls == [(2 * B,)]
