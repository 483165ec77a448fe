"""Fusion DiT numerics: golden cases from the official code, batching, SLG, first-frame-clean, RoPE."""

import dataclasses
import json
import math
import os

import pytest
import torch
from safetensors.torch import load_file

from ovi_core.model.config import TINY, FusionConfig
from ovi_core.model.fusion import OviFusionModel
from ovi_core.model.loader import load_fusion, random_fusion
from ovi_core.model.rope import apply_rope, audio_rope, axis_pairs, video_rope
from ovi_core.runtime.attention import attention, available_backends, set_default_backend

DATA = os.path.join(os.path.dirname(__file__), "data")


def rel(x: torch.Tensor, y: torch.Tensor) -> float:
    return float((x.float() - y.float()).norm() / y.float().norm())


def _golden(case: str):
    meta = json.load(open(os.path.join(DATA, f"{case}.json")))
    io = load_file(os.path.join(DATA, f"{case}.io.safetensors"))
    return meta, io


def _run_golden(model: OviFusionModel, meta: dict, io: dict):
    with torch.no_grad():
        return model(
            io["inputs.video"],
            io["inputs.audio"],
            io["inputs.t"],
            io["inputs.video_context"],
            io["inputs.audio_context"],
            first_frame_clean=meta["inputs.first_frame_clean"],
            slg_layer=meta["inputs.skip_layer"],
        )


@pytest.mark.parametrize("case", ["fusion_t2v", "fusion_i2v_slg"])
def test_golden_bf16(case):
    meta, io = _golden(case)
    cfg = FusionConfig.from_official(meta["video_config"], meta["audio_config"])
    path = os.path.join(DATA, f"{case}.weights.safetensors")
    # inferred from shapes (dim 64 -> 4 heads); text_len is invisible in shapes (512 by default, 8 here)
    assert load_fusion(path, dtype=torch.bfloat16).config == dataclasses.replace(
        cfg, video=dataclasses.replace(cfg.video, text_len=512), audio=dataclasses.replace(cfg.audio, text_len=512)
    )
    model = load_fusion(path, dtype=torch.bfloat16, config=cfg)
    v, a = _run_golden(model, meta, io)
    assert v.dtype == torch.bfloat16 and v.shape == io["outputs.video"].shape
    assert a.shape == io["outputs.audio"].shape
    assert rel(v, io["outputs.video"]) <= 1e-2
    assert rel(a, io["outputs.audio"]) <= 1e-2


def test_golden_float32_path_is_same_math():
    """The float32 compute path differs from the bf16 reference only by rounding."""
    meta, io = _golden("fusion_i2v_slg")
    cfg = FusionConfig.from_official(meta["video_config"], meta["audio_config"])
    model = load_fusion(os.path.join(DATA, "fusion_i2v_slg.weights.safetensors"), dtype=torch.float32, config=cfg)
    v, a = _run_golden(model, meta, io)
    assert v.dtype == torch.float32
    assert rel(v, io["outputs.video"]) <= 3e-2 and rel(a, io["outputs.audio"]) <= 3e-2
    # a wrong option gives an error far above rounding
    meta_wrong = dict(meta, **{"inputs.first_frame_clean": False})
    v2, _ = _run_golden(model, meta_wrong, io)
    assert rel(v2, io["outputs.video"]) > 3e-2


@pytest.fixture(scope="module")
def tiny() -> OviFusionModel:
    return random_fusion(TINY, seed=1)


def _inputs(b: int = 1, seed: int = 0, f: int = 3, h: int = 4, w: int = 6, la: int = 15):
    g = torch.Generator().manual_seed(seed)
    video = torch.randn(b, 48, f, h, w, generator=g)
    audio = torch.randn(b, la, 20, generator=g)
    vctx = [torch.randn(3 + i, 32, generator=g) for i in range(b)]
    actx = [torch.randn(5 + i % 3, 32, generator=g) for i in range(b)]
    return video, audio, vctx, actx


def test_batch_equals_single(tiny):
    video, audio, vctx, actx = _inputs(b=2)
    t = torch.tensor([500.0, 731.0])
    with torch.no_grad():
        v, a = tiny(video, audio, t, vctx, actx, first_frame_clean=True)
        for i in range(2):
            vi, ai = tiny(video[i : i + 1], audio[i : i + 1], t[i : i + 1], vctx[i : i + 1], actx[i : i + 1],
                          first_frame_clean=True)
            torch.testing.assert_close(v[i : i + 1], vi, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(a[i : i + 1], ai, rtol=1e-5, atol=1e-5)


def test_context_tensor_equals_list_and_zero_padding(tiny):
    video, audio, vctx, actx = _inputs(b=1)
    with torch.no_grad():
        v1, a1 = tiny(video, audio, torch.tensor([300.0]), vctx, actx)
        v2, a2 = tiny(video, audio, torch.tensor([300.0]), vctx[0][None], actx[0][None])
        # explicit zero rows up to text_len are the same as the padding done inside
        pad = torch.nn.functional.pad(vctx[0], (0, 0, 0, 8 - vctx[0].shape[0]))[None]
        v3, _ = tiny(video, audio, torch.tensor([300.0]), pad, actx)
    torch.testing.assert_close(v1, v2, rtol=0, atol=0)
    torch.testing.assert_close(a1, a2, rtol=0, atol=0)
    torch.testing.assert_close(v1, v3, rtol=0, atol=0)
    with pytest.raises(ValueError, match="text_len|L <= 8"):
        tiny(video, audio, torch.tensor([300.0]), torch.randn(1, 9, 32), actx)


def test_slg_mask_only_affects_masked_rows(tiny):
    video, audio, vctx, actx = _inputs(b=1, seed=3)
    video, audio = video.repeat(2, 1, 1, 1, 1), audio.repeat(2, 1, 1)
    vctx, actx = vctx * 2, actx * 2
    t = torch.tensor([600.0, 600.0])
    with torch.no_grad():
        v_full, a_full = tiny(video, audio, t, vctx, actx)
        v_skip, a_skip = tiny(video, audio, t, vctx, actx, slg_layer=1)
        v_mix, a_mix = tiny(video, audio, t, vctx, actx, slg_layer=1, slg_mask=torch.tensor([False, True]))
        v_zero, _ = tiny(video, audio, t, vctx, actx, slg_layer=0)
    assert rel(v_skip, v_full) > 1e-2 and rel(a_skip, a_full) > 1e-2
    torch.testing.assert_close(v_mix[0], v_full[0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(a_mix[0], a_full[0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(v_mix[1], v_skip[1], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(a_mix[1], a_skip[1], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(v_zero, v_full, rtol=0, atol=0)  # layer 0 can never be skipped


def test_first_frame_clean_acts_only_through_frame0_timestep(tiny):
    video, audio, vctx, actx = _inputs(b=1, seed=4)
    with torch.no_grad():
        v0, a0 = tiny(video, audio, torch.tensor([500.0]), vctx, actx)
        v1, a1 = tiny(video, audio, torch.tensor([500.0]), vctx, actx, first_frame_clean=True)
        # at t = 0 every token already has timestep 0: the flag must change nothing
        z0 = tiny(video, audio, torch.tensor([0.0]), vctx, actx)
        z1 = tiny(video, audio, torch.tensor([0.0]), vctx, actx, first_frame_clean=True)
    assert rel(v1, v0) > 1e-3 and rel(a1, a0) > 1e-4  # audio changes only through the fusion
    torch.testing.assert_close(z0[0], z1[0], rtol=1e-5, atol=1e-6)  # float32 rounding only
    torch.testing.assert_close(z0[1], z1[1], rtol=1e-5, atol=1e-6)


def test_block_hook_and_gradient_checkpointing(tiny):
    video, audio, vctx, actx = _inputs(b=1, seed=5)
    model = random_fusion(TINY, seed=2).train()
    calls = []
    model.block_hook = calls.append
    grads = []
    for ckpt in (False, True):
        model.zero_grad()
        model.gradient_checkpointing = ckpt
        v, a = model(video, audio, torch.tensor([400.0]), vctx, actx)
        (v.square().mean() + a.square().mean()).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-7)
    assert calls == [0, 1, 0, 1]  # once per layer and forward (backward recomputation does not call it)
    calls.clear()
    with torch.no_grad():
        model.eval()(video, audio, torch.tensor([400.0]), vctx, actx, slg_layer=1)
    assert calls == [0]  # a layer skipped for every row is not visited


def test_no_rope_in_state_dict_and_no_buffers(tiny):
    assert list(tiny.buffers()) == []
    assert not any("freq" in k or "rope" in k for k in tiny.state_dict())


def test_rope_phase_alignment():
    """Audio token i and video frame f: phase difference (f - 0.19676 i) * w_j on the temporal pairs."""
    d = 128
    pt = axis_pairs(d)[0]
    assert axis_pairs(d) == (22, 21, 21) and axis_pairs(16) == (4, 2, 2)
    f_count, la = 7, 40
    x = torch.zeros(1, 1, 1, d, dtype=torch.float64)
    x[..., 0::2] = 1.0  # every pair = 1 + 0i, so the rotated pair reads (cos, sin) of its angle
    vcos, vsin = video_rope((f_count, 3, 2), d, torch.device("cpu"))
    acos, asin = audio_rope(la, d, 0.19676, torch.device("cpu"))
    vx = apply_rope(x.expand(1, f_count * 6, 1, d), (vcos, vsin)).view(f_count, 3, 2, d // 2, 2)
    ax = apply_rope(x.expand(1, la, 1, d), (acos, asin)).view(la, d // 2, 2)
    vang = torch.atan2(vx[..., 1], vx[..., 0])[:, 0, 0]  # [F, c] at h = w = 0
    aang = torch.atan2(ax[..., 1], ax[..., 0])  # [La, c]
    omega = 10000.0 ** (-torch.arange(pt, dtype=torch.float64) * 2 / (2 * pt))
    f = torch.arange(f_count, dtype=torch.float64)[:, None, None]
    i = torch.arange(la, dtype=torch.float64)[None, :, None]
    want = (f - 0.19676 * i) * omega  # [F, La, pt]
    got = vang[:, None, :pt] - aang[None, :, :pt]
    diff = torch.remainder(got - want + math.pi, 2 * math.pi) - math.pi
    assert diff.abs().max() < 1e-9
    # audio pairs past the temporal share are not rotated; video h/w pairs rotate by row/column
    assert torch.equal(ax[:, pt:, 0], torch.ones(la, d // 2 - pt, dtype=torch.float64))
    vfull = torch.atan2(vx[..., 1], vx[..., 0])
    h_omega = 10000.0 ** (-torch.arange(21, dtype=torch.float64) * 2 / 42)
    torch.testing.assert_close(vfull[0, 1, 0, pt : pt + 21], h_omega)
    torch.testing.assert_close(vfull[0, 0, 1, pt + 21 :], h_omega)
    # interleaved pairs: dims (0, 1) form pair 0
    y = apply_rope(torch.tensor([[[[0.0, 1.0] + [0.0] * (d - 2)]]], dtype=torch.float64), (vcos[6:7], vsin[6:7]))  # token 6 = frame 1
    assert abs(float(y[0, 0, 0, 0]) + math.sin(1.0)) < 1e-12 and abs(float(y[0, 0, 0, 1]) - math.cos(1.0)) < 1e-12


def test_attention_k_lens_and_backends():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 5, 3, 8, generator=g) for _ in range(3))
    k_lens = torch.tensor([5, 2])
    out = attention(q, k, v, k_lens=k_lens)
    for b in range(2):
        n = int(k_lens[b])
        s = torch.einsum("qhd,khd->hqk", q[b], k[b, :n]) / math.sqrt(8)
        ref = torch.einsum("hqk,khd->qhd", s.softmax(-1), v[b, :n])
        torch.testing.assert_close(out[b], ref, rtol=1e-5, atol=1e-5)
    assert "sdpa" in available_backends()
    # a fast backend on CPU / fp32 quietly falls back to SDPA
    torch.testing.assert_close(attention(q, k, v, backend="flash_attn_2"), attention(q, k, v, backend="sdpa"))
    with pytest.raises(ValueError, match="Unknown attention backend"):
        attention(q, k, v, backend="nope")
    with pytest.raises(ValueError):
        set_default_backend("nope")


@pytest.mark.parametrize("name", ["plain", "i2v_slg"])
def test_golden_sensitive(name):
    """Extra case from the official code with unit-scale norms (attention far from uniform): sensitive to
    RoPE direction/scale and to the block order. Bit-exact on the AMD EPYC (AVX2) machine that recorded it; on
    Intel AMX/AVX512-bf16 CPUs oneDNN rounds the bf16 matmuls differently, which moves the video output by
    rel 4.5e-3 (about one bf16 ulp, 2^-8). A reversed RoPE moves it by 0.15-0.19, so 8e-3 still catches it."""
    meta = json.load(open(os.path.join(DATA, "fusion_sensitive.json")))
    io = load_file(os.path.join(DATA, "fusion_sensitive.io.safetensors"))
    cfg = FusionConfig.from_official(meta["video_config"], meta["audio_config"])
    model = load_fusion(os.path.join(DATA, "fusion_sensitive.weights.safetensors"), dtype=torch.bfloat16, config=cfg)
    case = meta["cases"][name]
    v, a = _run_golden(
        model, {"inputs.first_frame_clean": case["first_frame_clean"], "inputs.skip_layer": case["skip_layer"]}, io
    )
    assert rel(v, io[f"outputs.{name}.video"]) <= 8e-3
    assert rel(a, io[f"outputs.{name}.audio"]) <= 3e-3


def test_text_embedding_cache_is_exact_and_reused():
    model = random_fusion(TINY, seed=3).eval()
    v, a, t = torch.randn(1, 48, 2, 4, 4), torch.randn(1, 6, 20), torch.tensor([700.0])
    ctx = [torch.randn(5, TINY.video.text_dim)]
    calls = []
    orig = model.video_model.embed_text
    model.video_model.embed_text = lambda *a_, **k: (calls.append(1), orig(*a_, **k))[1]
    with torch.no_grad():
        ref = model(v, a, t, ctx, ctx)
        with model.cache_text_embeddings():
            one = model(v, a, t, ctx, ctx)
            two = model(v, a, t * 0.5, ctx, ctx)
            ctx[0].add_(1.0)  # an in-place change of the prompt embedding invalidates the entry
            three = model(v, a, t, ctx, ctx)
    assert torch.equal(ref[0], one[0]) and torch.equal(ref[1], one[1])
    assert not torch.equal(one[0], two[0])
    assert not torch.equal(one[0], three[0])
    assert len(calls) == 1 + 1 + 1  # uncached, first cached (reused by the second), after the change


def test_text_embedding_cache_under_inference_mode():
    """ComfyUI executes nodes under torch.inference_mode, whose tensors carry no version counter."""
    model = random_fusion(TINY, seed=3).eval()
    with torch.inference_mode():
        v, a, t = torch.randn(1, 48, 2, 4, 4), torch.randn(1, 6, 20), torch.tensor([700.0])
        ctx = [torch.randn(5, TINY.video.text_dim)]
        ref = model(v, a, t, ctx, ctx)
        with model.cache_text_embeddings():
            got = model(v, a, t, ctx, ctx)
    assert torch.equal(ref[0], got[0]) and torch.equal(ref[1], got[1])
