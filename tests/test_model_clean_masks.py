"""Per-token clean masks in the fusion DiT (``video_clean`` / ``audio_clean``): clean tokens get timestep 0.

The oracle is the earlier implementation of image->AV generalised to any mask: the time modulation gathered per
token into ``[B, L, 6, dim]`` tensors before the blocks. The model keeps two rows (t, 0) and selects per token
where they are used; the values must be bit-identical.
"""

import json
import os

import pytest
import torch
from safetensors.torch import load_file

from ovi_core.model.config import TINY, FusionConfig
from ovi_core.model.fusion import OviFusionModel
from ovi_core.model.loader import load_fusion, random_fusion

DATA = os.path.join(os.path.dirname(__file__), "data")


def _expanded_reference(model: OviFusionModel, video, audio, t, vctx, actx, vclean, aclean):
    """Forward with per-token modulation tensors. ``vclean [B, Lv]`` / ``aclean [B, La]`` bool or None."""
    dt, dev = model.compute_dtype, video.device
    vm, am = model.video_model, model.audio_model
    vid, vgrid = vm.embed(video.to(dt))
    aud, agrid = am.embed(audio.to(dt))
    rows_idx = torch.arange(video.shape[0])[:, None]

    def time(tower, clean):
        if clean is None:
            return tower.embed_time(t[:, None], dt)  # [B, 1, dim], [B, 1, 6, dim]
        e, e0 = tower.embed_time(torch.stack([t, torch.zeros_like(t)], dim=1), dt)
        sel = clean.long()
        return e[rows_idx, sel], e0[rows_idx, sel]  # [B, L, dim], [B, L, 6, dim]

    ve, ve0 = time(vm, vclean)
    ae, ae0 = time(am, aclean)
    vc, ac = vm.embed_text(vctx, dt, dev), am.embed_text(actx, dt, dev)
    vrope, arope = vm.rope(vgrid, dev), am.rope(agrid, dev)
    for i in range(model.num_layers):
        vb, ab = vm.blocks[i], am.blocks[i]
        aem = ab.modulation(ae0)
        assert isinstance(aem, list) and aem[0].shape[1] in (1, aud.shape[1])
        aud = ab.self_attn_step(aud, aem, arope, backend="sdpa")
        vem = vb.modulation(ve0)
        vid = vb.self_attn_step(vid, vem, vrope, backend="sdpa")
        og = aud
        aud = ab.cross_ffn_step(aud, aem, ac, vid, arope, vrope, backend="sdpa")
        vid = vb.cross_ffn_step(vid, vem, vc, og, vrope, arope, backend="sdpa")
    return vm.output(vid, ve, vgrid), am.output(aud, ae, agrid)


def _inputs(b=2, seed=0, f=3, h=4, w=6, la=15):
    g = torch.Generator().manual_seed(seed)
    video = torch.randn(b, 48, f, h, w, generator=g)
    audio = torch.randn(b, la, 20, generator=g)
    vctx = [torch.randn(3 + i, 32, generator=g) for i in range(b)]
    actx = [torch.randn(5 + i, 32, generator=g) for i in range(b)]
    return video, audio, vctx, actx, g


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_masks_equal_per_token_expansion_bitwise(dtype):
    model = random_fusion(TINY, seed=1).to(dtype)
    video, audio, vctx, actx, g = _inputs()
    t = torch.tensor([500.0, 731.0])
    vmask = torch.rand(2, 3, 2, 3, generator=g) < 0.4  # token grid (F, H/2, W/2)
    amask = torch.rand(2, 15, generator=g) < 0.3
    with torch.no_grad():
        got = model(video, audio, t, vctx, actx, video_clean=vmask, audio_clean=amask)
        want = _expanded_reference(model, video, audio, t, vctx, actx, vmask.flatten(1), amask)
        only_audio = model(video, audio, t, vctx, actx, audio_clean=amask)
        want_audio = _expanded_reference(model, video, audio, t, vctx, actx, None, amask)
        plain = model(video, audio, t, vctx, actx)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert torch.equal(only_audio[0], want_audio[0]) and torch.equal(only_audio[1], want_audio[1])
    assert not torch.equal(only_audio[1], plain[1])  # the audio mask acts on the audio tower


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_first_frame_clean_is_frame0_mask_and_unchanged(dtype):
    """``first_frame_clean=True`` == ``video_clean`` with latent frame 0, bit for bit, and == the expansion
    that image->AV used before the masks existed."""
    model = random_fusion(TINY, seed=2).to(dtype)
    video, audio, vctx, actx, _ = _inputs(seed=1)
    t = torch.tensor([400.0, 900.0])
    frames = torch.tensor([[True, False, False]])  # [1, F]
    grid = frames[:, :, None, None].expand(2, 3, 2, 3).clone()  # [B, F, h, w]
    with torch.no_grad():
        ffc = model(video, audio, t, vctx, actx, first_frame_clean=True)
        by_frames = model(video, audio, t, vctx, actx, video_clean=frames)
        by_grid = model(video, audio, t, vctx, actx, video_clean=grid)
        both = model(video, audio, t, vctx, actx, first_frame_clean=True, video_clean=frames)
        old = _expanded_reference(model, video, audio, t, vctx, actx, grid.flatten(1), None)
    for out in (by_frames, by_grid, both, old):
        assert torch.equal(ffc[0], out[0]) and torch.equal(ffc[1], out[1])


def test_golden_i2v_by_mask_is_bitwise_first_frame_clean():
    meta = json.load(open(os.path.join(DATA, "fusion_i2v_slg.json")))
    io = load_file(os.path.join(DATA, "fusion_i2v_slg.io.safetensors"))
    assert meta["inputs.first_frame_clean"]
    cfg = FusionConfig.from_official(meta["video_config"], meta["audio_config"])
    model = load_fusion(os.path.join(DATA, "fusion_i2v_slg.weights.safetensors"), dtype=torch.bfloat16, config=cfg)
    args = (io["inputs.video"], io["inputs.audio"], io["inputs.t"], io["inputs.video_context"],
            io["inputs.audio_context"])
    f = io["inputs.video"].shape[2]
    frame0 = (torch.arange(f) == 0)[None]
    with torch.no_grad():
        a = model(*args, first_frame_clean=True, slg_layer=meta["inputs.skip_layer"])
        b = model(*args, video_clean=frame0, slg_layer=meta["inputs.skip_layer"])
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    rel = float((a[0].float() - io["outputs.video"].float()).norm() / io["outputs.video"].float().norm())
    assert rel <= 1e-2


def test_all_clean_is_timestep_zero_and_batch_one_mask_broadcasts():
    model = random_fusion(TINY, seed=3)
    video, audio, vctx, actx, g = _inputs(seed=2)
    t = torch.tensor([600.0, 600.0])
    with torch.no_grad():
        allc = model(video, audio, t, vctx, actx, video_clean=torch.ones(1, 3, dtype=torch.bool),
                     audio_clean=torch.ones(1, 15, dtype=torch.bool))
        zero = model(video, audio, torch.zeros(2), vctx, actx)
        m1 = torch.rand(1, 3, 2, 3, generator=g) < 0.5
        a1 = torch.rand(1, 15, generator=g) < 0.5
        one = model(video, audio, t, vctx, actx, video_clean=m1, audio_clean=a1)
        rep = model(video, audio, t, vctx, actx, video_clean=m1.expand(2, -1, -1, -1), audio_clean=a1.expand(2, -1))
    torch.testing.assert_close(allc[0], zero[0], rtol=1e-5, atol=1e-6)  # float32 rounding of 2 rows vs 1
    torch.testing.assert_close(allc[1], zero[1], rtol=1e-5, atol=1e-6)
    assert torch.equal(one[0], rep[0]) and torch.equal(one[1], rep[1])


def test_masks_train_with_gradients():
    model = random_fusion(TINY, seed=4).train()
    video, audio, vctx, actx, g = _inputs(b=1, seed=3)
    v, a = model(video, audio, torch.tensor([300.0]), vctx, actx,
                 video_clean=torch.tensor([[True, False, True]]), audio_clean=torch.rand(1, 15, generator=g) < 0.5)
    (v.square().mean() + a.square().mean()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)


def test_bad_masks_are_refused():
    model = random_fusion(TINY, seed=5)
    video, audio, vctx, actx, _ = _inputs(b=1)
    t = torch.tensor([500.0])
    with torch.no_grad():
        with pytest.raises(ValueError, match="video_clean must have shape"):
            model(video, audio, t, vctx, actx, video_clean=torch.ones(1, 4, dtype=torch.bool))
        with pytest.raises(ValueError, match="video_clean must have shape"):
            model(video, audio, t, vctx, actx, video_clean=torch.ones(1, 3, 4, 6, dtype=torch.bool))  # latent, not tokens
        with pytest.raises(ValueError, match="bool"):
            model(video, audio, t, vctx, actx, video_clean=torch.ones(1, 3))
        with pytest.raises(ValueError, match="audio_clean must have shape"):
            model(video, audio, t, vctx, actx, audio_clean=torch.ones(2, 15, dtype=torch.bool))
        with pytest.raises(ValueError, match="audio_clean must have shape"):
            model(video, audio, t, vctx, actx, audio_clean=torch.ones(1, 14, dtype=torch.bool))
