"""The joint forward's hot path (#15): complex RoPE, skip-layer on kept rows only, text k/v cache, stable
text-cache keys; and caches that never leak inference tensors into training (#13 item 8)."""

from __future__ import annotations

import pytest
import torch
from train_utils import write_latent_dataset, write_tiny_model

from ovi_core.model.config import TINY
from ovi_core.model.loader import random_fusion
from ovi_core.model.rope import apply_rope, audio_rope, audio_rope_table, video_rope, video_rope_table
from ovi_core.sampling.joint import make_cfg_denoiser, sample_joint

CPU = torch.device("cpu")


def _inputs(b=1, seed=0, f=3, h=4, w=6, la=15):
    g = torch.Generator().manual_seed(seed)
    video = torch.randn(b, 48, f, h, w, generator=g)
    audio = torch.randn(b, la, 20, generator=g)
    vctx = [torch.randn(3 + i, 32, generator=g) for i in range(b)]
    actx = [torch.randn(5 + i, 32, generator=g) for i in range(b)]
    return video, audio, vctx, actx


# -- RoPE -------------------------------------------------------------------------------------------


def _rotate_reference(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Independent oracle: pair (x[2j], x[2j+1]) -> (a cos - b sin, a sin + b cos) in float64, loop-free."""
    xd = x.double()
    a, b = xd[..., 0::2], xd[..., 1::2]
    out = torch.empty_like(xd)
    out[..., 0::2] = a * cos - b * sin
    out[..., 1::2] = a * sin + b * cos
    return out.to(x.dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("grid,head_dim,heads", [((3, 2, 3), 16, 4), ((31, 4, 4), 128, 2), ((5, 3, 7), 16, 3)])
def test_complex_rope_is_bit_identical_to_real_rotation(dtype, grid, head_dim, heads):
    g = torch.Generator().manual_seed(1)
    cos, sin = video_rope(grid, head_dim, CPU)
    table = video_rope_table(grid, head_dim, CPU)
    assert table.dtype == torch.float64 and table.shape == (*cos.shape, 2)
    assert torch.equal(table[..., 0], cos) and torch.equal(table[..., 1], sin)
    x = torch.randn(2, cos.shape[0], heads, head_dim, generator=g).to(dtype)
    got = apply_rope(x, table)
    assert got.dtype == dtype
    assert torch.equal(got, apply_rope(x, (cos, sin)))
    assert torch.equal(got, _rotate_reference(x, cos, sin))
    acos, asin = audio_rope(cos.shape[0], head_dim, 0.19676, CPU)
    atab = audio_rope_table(cos.shape[0], head_dim, 0.19676, CPU)
    assert torch.equal(apply_rope(x, atab), _rotate_reference(x, acos, asin))


@pytest.mark.parametrize("chunk_elems", [1, 700, 1 << 18])
@pytest.mark.parametrize("b", [1, 2])
def test_chunked_cpu_rope_matches_the_oracle_and_keeps_autograd(monkeypatch, chunk_elems, b):
    import ovi_core.model.rope as rope_mod

    monkeypatch.setattr(rope_mod, "CPU_CHUNK_ELEMS", chunk_elems)  # 1: one token per chunk; 700: a partial last chunk
    grid, head_dim, heads = (5, 3, 7), 16, 3
    cos, sin = video_rope(grid, head_dim, CPU)
    table = video_rope_table(grid, head_dim, CPU)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(b, cos.shape[0], heads, head_dim, generator=g).bfloat16()
    with torch.no_grad():
        got = apply_rope(x, table)
    assert torch.equal(got, _rotate_reference(x, cos, sin))
    # the autograd path (training) is the one-multiply path, with the same values and a gradient
    xg = x.float().requires_grad_(True)
    y = apply_rope(xg, table)
    assert torch.equal(y.detach(), _rotate_reference(xg.detach(), cos, sin))
    y.square().sum().backward()
    assert xg.grad is not None and torch.isfinite(xg.grad).all()
    # a non-contiguous input (a slice over heads) is read correctly
    xs = torch.randn(b, cos.shape[0], heads * 2, head_dim, generator=g).bfloat16()[:, :, ::2]
    with torch.no_grad():
        assert torch.equal(apply_rope(xs, table), _rotate_reference(xs, cos, sin))


# -- skip-layer guidance ----------------------------------------------------------------------------


def _batch_seen(model, layer: int):
    """Batch sizes that reached the video and audio blocks ``layer`` (a forward pre-hook)."""
    seen = []
    hs = [tower.blocks[layer].norm1.register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[0]))
          for tower in (model.video_model, model.audio_model)]
    return seen, hs


def test_skip_layer_runs_only_on_rows_that_keep_it():
    model = random_fusion(TINY, seed=1)
    video, audio, vctx, actx = _inputs(b=1, seed=2)
    v2, a2, vc2, ac2 = video.repeat(2, 1, 1, 1, 1), audio.repeat(2, 1, 1), vctx * 2, actx * 2
    t = torch.tensor([600.0, 600.0])
    seen, hs = _batch_seen(model, 1)
    calls = []
    model.block_hook = calls.append
    with torch.no_grad():
        mixed = model(v2, a2, t, vc2, ac2, slg_layer=1, slg_mask=torch.tensor([False, True]))
        assert seen == [1, 1] and calls == [0, 1]  # the positive row only, in both towers
        seen.clear(), calls.clear()
        neg = model(video, audio, t[:1], vctx, actx, slg_layer=1, slg_mask=torch.tensor([True]))
        assert seen == [] and calls == [0]  # sequential negative pass: the layer is skipped, not run and dropped
        none = model(video, audio, t[:1], vctx, actx, slg_layer=1)
        pos = model(video, audio, t[:1], vctx, actx, slg_layer=1, slg_mask=torch.tensor([False]))
        full = model(video, audio, t[:1], vctx, actx)
    for h in hs:
        h.remove()
    assert torch.equal(neg[0], none[0]) and torch.equal(neg[1], none[1])
    assert torch.equal(pos[0], full[0]) and torch.equal(pos[1], full[1])
    # float32: each row of the mixed batch equals its own single-row pass
    torch.testing.assert_close(mixed[0][:1], full[0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(mixed[0][1:], neg[0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(mixed[1][1:], neg[1], rtol=1e-6, atol=1e-6)


def test_skip_layer_subset_with_masks_and_training_gradients():
    """The kept-rows path indexes every per-row input (clean masks, modulation rows) and stays differentiable."""
    model = random_fusion(TINY, seed=2).train()
    video, audio, vctx, actx = _inputs(b=2, seed=3)
    t = torch.tensor([500.0, 800.0])
    vclean = torch.tensor([[True, False, False], [False, True, False]])
    aclean = torch.zeros(2, 15, dtype=torch.bool)
    aclean[1, :4] = True
    kw = dict(video_clean=vclean, audio_clean=aclean, slg_layer=1)
    v, a = model(video, audio, t, vctx, actx, slg_mask=torch.tensor([True, False]), **kw)
    (v.square().mean() + a.square().mean()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    with torch.no_grad():
        r0 = model(video[:1], audio[:1], t[:1], vctx[:1], actx[:1], video_clean=vclean[:1], audio_clean=aclean[:1],
                   slg_layer=1, slg_mask=torch.tensor([True]))
        r1 = model(video[1:], audio[1:], t[1:], vctx[1:], actx[1:], video_clean=vclean[1:], audio_clean=aclean[1:])
    torch.testing.assert_close(v[:1].detach(), r0[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(v[1:].detach(), r1[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a[1:].detach(), r1[1], rtol=1e-5, atol=1e-6)


# -- text caches ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_text_kv_cache_is_exact_and_reused(dtype):
    model = random_fusion(TINY, seed=3).to(dtype)
    video, audio, vctx, actx = _inputs(b=1, seed=4)
    t = torch.tensor([700.0])
    n = model.num_layers
    with torch.no_grad():
        ref = model(video, audio, t, vctx, actx)
        ref2 = model(video, audio, t * 0.5, vctx, actx)
        before = model.text_cache_stats()
        with model.cache_text_embeddings():
            one = model(video, audio, t, vctx, actx)
            two = model(video, audio, t * 0.5, vctx, actx)
            stats = model.text_cache_stats()
        assert model.text_cache_stats()["entries"] == 0
    for got, want in ((one, ref), (two, ref2)):
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert stats["kv_misses"] - before["kv_misses"] == 2 * n  # each block of each tower once
    assert stats["kv_hits"] - before["kv_hits"] == 2 * n  # and reused by the second forward
    assert stats["entries"] == 2


def test_text_kv_cache_sees_new_hooks_and_can_be_disabled():
    """A hook on the text projection (how a LoRA attaches) invalidates the cached keys/values."""
    model = random_fusion(TINY, seed=4)
    video, audio, vctx, actx = _inputs(b=1, seed=5)
    t = torch.tensor([300.0])
    k = model.video_model.blocks[0].cross_attn.k
    with torch.no_grad():
        with model.cache_text_embeddings():
            plain = model(video, audio, t, vctx, actx)
            h = k.register_forward_hook(lambda m, i, o: o * 3.0)
            hooked = model(video, audio, t, vctx, actx)
        want = model(video, audio, t, vctx, actx)  # uncached, with the hook
        h.remove()
        model.cache_text_kv = False
        with model.cache_text_embeddings():
            before = model.text_cache_stats()["kv_misses"]
            off = model(video, audio, t, vctx, actx)
            assert model.text_cache_stats()["kv_misses"] == before
    assert not torch.equal(plain[0], hooked[0])
    assert torch.equal(hooked[0], want[0]) and torch.equal(hooked[1], want[1])
    assert torch.equal(off[0], plain[0])


@pytest.mark.parametrize("batch_cfg", [True, False])
def test_tensor_contexts_give_stable_cache_keys(batch_cfg):
    """Five steps with tensor contexts: 2 cached contexts (one per tower), not one per step."""
    model = random_fusion(TINY, seed=5)
    video, audio, _, _ = _inputs(b=1, seed=6)
    g = torch.Generator().manual_seed(7)
    pos, neg_v, neg_a = (torch.randn(1, 4, 32, generator=g) for _ in range(3))
    denoise = make_cfg_denoiser(model, pos_video_ctx=pos, pos_audio_ctx=pos, neg_video_ctx=neg_v,
                                neg_audio_ctx=neg_a, slg_layer=1, batch_cfg=batch_cfg)
    with torch.no_grad(), model.cache_text_embeddings():
        before = model.text_cache_stats()
        sample_joint(denoise, video, audio, steps=5)
        stats = model.text_cache_stats()
    entries = 2 if batch_cfg else 4  # batched: one [2, ...] context per tower; sequential: pos and neg per tower
    assert stats["entries"] == entries
    assert stats["misses"] - before["misses"] == entries
    assert stats["hits"] - before["hits"] == 5 * 2 * (1 if batch_cfg else 2) - entries


# -- inference mode, then training (#13 item 8) -------------------------------------------------------


def test_generate_under_inference_mode_then_train(tmp_path):
    """ComfyUI runs nodes under torch.inference_mode; caches built there (RoPE tables) must not break a
    later training run in the same process ("Inference tensors cannot be saved for backward")."""
    from ovi_core.training.config import TrainConfig
    from ovi_core.training.trainer import Trainer

    ds = write_latent_dataset(str(tmp_path / "ds"), frames=3, hw=4, audio_len=15)
    path = write_tiny_model(str(tmp_path / "tiny.safetensors"))
    model = random_fusion(TINY, seed=6)
    # grid 3x4x4 latents (3x2x2 tokens) and 15 audio latents: the shapes the dataset trains on, so the
    # training forward reuses the tables first built here, under inference mode
    with torch.inference_mode():
        video, audio = torch.randn(2, 48, 3, 4, 4), torch.randn(2, 15, 20)
        ctx = torch.randn(2, 5, 32)
        with model.cache_text_embeddings():
            v, _ = model(video, audio, torch.tensor([500.0, 500.0]), ctx, ctx, first_frame_clean=True, slg_layer=1,
                         slg_mask=torch.tensor([False, True]))
    assert v.is_inference()
    table = model.video_model.rope((3, 2, 2), CPU)
    assert not table.is_inference()
    cfg = TrainConfig(dataset=ds, model=path, output_dir=str(tmp_path / "out"), steps=2, learning_rate=1e-3, rank=4,
                      mixed_precision="no", save_every=0, log_every=1, seed=3)
    trainer = Trainer(cfg)
    try:
        res = trainer.train()
    finally:
        trainer.close()
    assert len(res.losses) == 2 and all(torch.isfinite(torch.tensor(res.losses)))


# -- copies around attention ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_attention_output_needs_no_copy_to_flatten(dtype):
    """SDPA on CPU writes its output as [B, L, H, D] in memory, so the towers' ``.flatten(2)`` before the output
    projection is a view: the only copies around attention are the RoPE's (float64 and back, as the official)."""
    from ovi_core.runtime.attention import attention

    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 19, 4, 16, generator=g).to(dtype)
    k = torch.randn(2, 8, 4, 16, generator=g).to(dtype)
    out = attention(q, k, k)
    assert out.is_contiguous()
    assert out.flatten(2).data_ptr() == out.data_ptr()
