"""Core ComfyUI features on native Ovi (issue #21 item 5), on a real ComfyUI tree: fp8 weight dtype of the stock
loader, EasyCache (caches both streams on ComfyUI >= 0.13), context windows (>= 0.26, with the audio mapped by
``map_context_window_to_modalities``) and TorchCompileModel's wrapper. Each test is skipped where the host lacks the
feature. Run like tests/test_native_host.py (``COMFYUI_PATH`` + the host's python)."""

from __future__ import annotations

import os
import shutil

import pytest
import torch

COMFY = os.environ.get("COMFYUI_PATH", "")
pytestmark = pytest.mark.skipif(not COMFY, reason="set COMFYUI_PATH to a ComfyUI tree")

import test_native_host as nh  # noqa: E402

host = nh.host  # the tiny native model on the host (a module fixture)
_conds, _load, _streams = nh._conds, nh._load, nh._streams


def _run(host, patcher, steps=3, width=64, height=64, keep_first_frame=False):
    import comfy.sample
    import comfy.samplers

    from nodes.native.guider import OviGuider
    from nodes.native.nodes import OviEmptyLatentAV, OviNativeSigmas

    dim = patcher.model.diffusion_model.config.video.text_dim
    pos, vneg, aneg = _conds(dim)
    x = OviEmptyLatentAV().make(width, height, "5", "1.0", 1)[0]["samples"]
    mask = None
    if keep_first_frame:  # image->AV as a mask: frame 0 clean
        from nodes.native.nodes import _nested_or_packed, _streams

        v, a = _streams(x)
        v = v.clone()
        v[:, :, 0] = 0.5
        vm = torch.ones_like(v)
        vm[:, :, 0] = 0
        x, mask = _nested_or_packed(v, a), _nested_or_packed(vm, torch.ones_like(a))
    noise = comfy.sample.prepare_noise(x, 5)
    g = OviGuider(patcher, video_cfg=4.0, audio_cfg=3.0, slg_layer=11)
    g.set_conds([[pos, {}]], [[vneg, {host["mod"].AUDIO_CONTEXT_KEY: aneg}]])
    sigmas = OviNativeSigmas().get_sigmas("euler", steps, 5.0)[0]
    return g.sample(noise, x, comfy.samplers.sampler_object("euler"), sigmas, denoise_mask=mask, callback=None,
                    disable_pbar=True, seed=5)


def _rel(a, b):
    return ((a - b).norm() / b.norm()).item()


def test_fp8_weight_dtype(host):
    patcher = _load(host["native"], dtype=torch.float8_e4m3fn)
    assert patcher.model.diffusion_model.blocks[0].self_attn.q.weight.dtype == torch.float8_e4m3fn
    v, a = _streams(_run(host, patcher, steps=2))
    rv, ra = _streams(_run(host, _load(host["native"]), steps=2))
    assert torch.isfinite(v).all() and torch.isfinite(a).all()
    assert _rel(v, rv) < 0.1 and _rel(a, ra) < 0.1  # fp8 weights: close, not equal


class _Counting:
    """Counts the DiT's real computations (``_forward``, which the DIFFUSION_MODEL wrappers such as EasyCache
    skip when they reuse a step)."""

    def __init__(self, dit):
        self.dit, self.n = dit, 0
        dit._forward = self  # an instance attribute shadows the method for this test only

    def __call__(self, *args, **kwargs):
        self.n += 1
        return type(self.dit)._forward(self.dit, *args, **kwargs)

    def remove(self):
        del self.dit._forward


def test_easycache_both_streams(host):
    ec = pytest.importorskip("comfy_extras.nodes_easycache")
    patcher = _load(host["native"])
    count = _Counting(patcher.model.diffusion_model)
    try:
        ref = _run(host, patcher, steps=8)
        n_ref, count.n = count.n, 0
        off = ec.EasyCacheNode.execute(patcher, 0.0, 0.0, 1.0, False).result[0]  # the node's own code, no reuse
        same = _run(host, off, steps=8)
        n_off, count.n = count.n, 0
        on = ec.EasyCacheNode.execute(patcher, 0.5, 0.0, 1.0, True).result[0]
        out = _run(host, on, steps=8)
        n_on = count.n
    finally:
        count.remove()
    for x, y in zip(_streams(same), _streams(ref), strict=True):
        assert _rel(x, y) < 1e-6
    assert n_off == n_ref and n_on < n_ref  # the cache skipped forwards of the [video, audio] model
    v, a = _streams(out)
    assert torch.isfinite(v).all() and torch.isfinite(a).all() and a.shape == (1, 20, 157)


def test_context_windows_map_audio(host):
    cw = pytest.importorskip("comfy.context_windows")
    if not hasattr(cw, "WindowingState"):
        pytest.skip("this ComfyUI has no multimodal context windows (< 0.26)")
    patcher = _load(host["native"]).clone()
    patcher.model_options["context_handler"] = cw.IndexListContextHandler(
        context_schedule=cw.get_matching_context_schedule(cw.ContextSchedules.STATIC_STANDARD),
        fuse_method=cw.get_matching_fuse_method(cw.ContextFuseMethods.PYRAMID), context_length=12, context_overlap=4,
        context_stride=1, closed_loop=False, dim=2, freenoise=False, cond_retain_index_list=[],
        split_conds_to_windows=False)
    cw.create_prepare_sampling_wrapper(patcher)
    seen = []
    dit = patcher.model.diffusion_model
    hook = dit.register_forward_pre_hook(lambda m, args: seen.append([t.shape[2] for t in args[0]]))
    try:
        out = _run(host, patcher, steps=2)
    finally:
        hook.remove()
    v, a = _streams(out)
    assert v.shape == (1, 48, 31, 4, 4) and a.shape == (1, 20, 157)
    assert torch.isfinite(v).all() and torch.isfinite(a).all()
    assert any(s[0] == 12 for s in seen)  # windows of 12 video latent frames ...
    assert all(s[1] < 157 for s in seen if s[0] == 12)  # ... each with its part of the audio
    masked = _run(host, patcher, steps=2, keep_first_frame=True)  # the per-stream masks are cut per window too
    v, _ = _streams(masked)
    torch.testing.assert_close(v[:, :, 0], torch.full_like(v[:, :, 0], 0.5))
    m = patcher.model.map_context_window_to_modalities(list(range(0, 12)), [(1, 48, 31, 4, 4), (1, 20, 157)], 2)
    assert m[1][0] == 0 and m[1][-1] == round(12 * 157 / 31) - 1


@pytest.mark.parametrize("backend", ["eager", "inductor"])
def test_torch_compile_wrapper(host, backend):
    """Core TorchCompileModel's wrapper on the native model: ``eager`` checks the wrapper path, ``inductor`` (the
    node's default; needs a C compiler on CPU) generated kernels, fp32 within 1e-4 of the uncompiled run."""
    tc = pytest.importorskip("comfy_api.torch_helpers")
    if backend == "inductor" and shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("inductor on CPU needs a C compiler")
    patcher = _load(host["native"]).clone()
    tc.set_torch_compile_wrapper(patcher, backend=backend)
    ref = _run(host, _load(host["native"]), steps=2)
    try:
        out = _run(host, patcher, steps=2)
    finally:
        torch._dynamo.reset()
    for x, y in zip(_streams(out), _streams(ref), strict=True):
        assert _rel(x, y) < (1e-5 if backend == "eager" else 1e-4)
