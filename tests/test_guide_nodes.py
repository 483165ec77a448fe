"""Guide nodes under torch.inference_mode (as ComfyUI runs them) on tiny weights: encode, chain, sample, splice."""

import math

import node_utils as nu
import pytest
import torch

from nodes.decode import OviDecodeAudio, OviDecodeVideo
from nodes.guides import OviAudioGuide, OviRedoGuide, OviVideoGuide
from nodes.sampling import OviJointSampler

SAMPLER = dict(aspect="1:1 square (960x960)", width=960, height=960, seconds="auto", steps=1, solver="unipc",
               shift=5.0, video_cfg=4.0, audio_cfg=3.0, slg_layer=11, seed=1)


@pytest.fixture(scope="module")
def comps(tmp_path_factory):
    models = nu.tiny_models_dir(tmp_path_factory)
    mp = pytest.MonkeyPatch()
    mp.setenv("OVI_MODELS_DIR", str(models))
    with torch.inference_mode():
        model, te, vae = nu.load_fusion_model(), nu.load_text_encoder(), nu.load_video_vae()
        avae = nu.load_audio_vae()
        cond = nu.encode(te, model, "A man says <S>Hi.<E> Audio: male voice.")
    yield model, vae, avae, cond
    mp.undo()


def _audio(seconds=1.0, rate=44100):
    t = torch.arange(int(seconds * rate)) / rate
    w = torch.stack([0.3 * torch.sin(2 * math.pi * 200 * t), 0.3 * torch.sin(2 * math.pi * 300 * t)])
    return {"waveform": w[None], "sample_rate": rate}  # [1, 2, T] stereo, like core LoadAudio


def test_audio_guide_node_to_sampler_and_decoder(comps):
    model, _, avae, cond = comps
    with torch.inference_mode():
        (guides,) = OviAudioGuide().encode(avae, model, _audio(), offset=0.5, mode="replace", until=1.0,
                                           seconds="auto")
        assert len(guides) == 1 and guides[0].guide.stream == "audio"
        (lat,) = OviJointSampler().sample(model, cond, **SAMPLER, guides=guides)
        g = guides[0].guide
        assert torch.equal(lat.audio[:, g.mask], g.latent[:, g.mask])
        (orig,) = OviDecodeAudio().decode(avae, lat, guides=guides)
        (dec,) = OviDecodeAudio().decode(avae, lat)
    first, stop = guides[0].source.latent_span()
    span = slice(first * 512, stop * 512)
    canvas = guides[0].source.canvas()
    assert torch.equal(orig["waveform"][0, :, span], canvas[:, span])  # the original sound, not the round trip
    assert not torch.equal(dec["waveform"][0, :, span], canvas[:, span])
    with torch.inference_mode():  # longer than one clip: kept unencoded for a long clip (chained windows)
        (long_g,) = OviAudioGuide().encode(avae, model, _audio(6.0, 8000), offset=0.0, mode="replace", until=1.0,
                                           seconds="auto")
    assert long_g[0].guide is None and long_g[0].source.samples.shape[-1] == 6 * 16000


def test_video_guide_node_chains_and_sets_the_size(comps, monkeypatch):
    import nodes.sampling as sampling_node

    shown = []  # the texts the sampler shows on its node, while sampling and after
    monkeypatch.setattr(sampling_node._comfy, "show_text", lambda node_id, text, **kw: shown.append(text))
    model, vae, avae, cond = comps
    frames = torch.rand(10, 36, 60, 3)
    with torch.inference_mode():
        (g1,) = OviVideoGuide().encode(vae, model, fps=12.0, mode="clean", until=1.0, seconds="auto", images=frames)
        (both,) = OviAudioGuide().encode(avae, model, _audio(), offset=0.0, mode="replace", until=1.0,
                                         seconds="auto", guides=g1)
        assert [i.guide.stream for i in both] == ["video", "audio"] and len(g1) == 1
        (lat,) = OviJointSampler().sample(model, cond, **SAMPLER, guides=both)
        vg = both[0].guide
        assert lat.video.shape[-2:] == vg.latent.shape[-2:]  # the guide's size wins over the aspect preset
        size = f"{vg.latent.shape[-1] * 16}x{vg.latent.shape[-2] * 16}"
        # both texts give the guide's size; none claims the asked 960x960 was snapped to it
        assert len(shown) == 2 and all(size in t for t in shown) and not any("snapped" in t for t in shown), shown
        assert torch.equal(lat.video[:, :, vg.mask], vg.latent[:, :, vg.mask]) and vg.mask.sum() == 5
        (out,) = OviDecodeVideo().decode(vae, lat, tile_size=0, guides=both)
    assert torch.equal(out[:17], both[0].source.splice(torch.zeros_like(out))[:17])
    with torch.inference_mode(), pytest.raises(ValueError, match="either images"):
        OviVideoGuide().encode(vae, model, fps=24.0, mode="replace", until=1.0, seconds="auto")
    with torch.inference_mode(), pytest.raises(ValueError, match="clean"):
        OviVideoGuide().encode(vae, model, fps=24.0, mode="clean", until=0.5, seconds="auto", images=frames)


def test_redo_guide_node(comps):
    model, _, _, cond = comps
    with torch.inference_mode():
        (src,) = OviJointSampler().sample(model, cond, **SAMPLER)
        (guides,) = OviRedoGuide().encode(src, stream="audio", start=2.0, end=3.5, mode="replace")
        (lat,) = OviJointSampler().sample(model, cond, **dict(SAMPLER, seed=2), guides=guides)
    keep = torch.ones(157, dtype=torch.bool)
    keep[62:110] = False
    assert torch.equal(lat.video, src.video) and torch.equal(lat.audio[:, keep], src.audio[:, keep])
    assert not torch.equal(lat.audio[:, ~keep], src.audio[:, ~keep])


def test_guides_trim_in_the_graph(comps):
    """A 6 s sound or video is longer than a 5 s Ovi 1.1 clip (kept for a long clip), and start/max_seconds on the
    node trim it to fit one clip."""
    model, vae, avae, _ = comps
    long_sound = _audio(6.0, 8000)
    with torch.inference_mode():
        (whole_sound,) = OviAudioGuide().encode(avae, model, long_sound, offset=0.0, mode="replace", until=1.0,
                                                seconds="auto")
        assert whole_sound[0].guide is None
        (g,) = OviAudioGuide().encode(avae, model, long_sound, offset=0.0, mode="replace", until=1.0,
                                      seconds="auto", start=1.0, max_seconds=4.0)
    # the guide's sound is seconds 1..5 of the input, resampled to 16 kHz: 4 s of it
    assert g[0].source.samples.shape[-1] == 4 * 16000
    frames = torch.rand(150, 36, 60, 3)  # 6.25 s at 24 fps
    with torch.inference_mode():
        (whole,) = OviVideoGuide().encode(vae, model, fps=24.0, mode="replace", until=1.0, seconds="auto",
                                          images=frames)  # longer than one clip: kept for OviLongClipSampler
        (v,) = OviVideoGuide().encode(vae, model, fps=24.0, mode="replace", until=1.0, seconds="auto",
                                      images=frames, start=1.0, max_seconds=2.0)
    assert v[0].source.frames.shape[0] == 48
    assert whole[0].guide is None and whole[0].source.frames24 == 150  # unencoded, all 6.25 s of it


def test_sampler_node_says_which_attention_kernel_ran(comps, monkeypatch):
    """``Ovi attention: <kernel>`` on the node after the run; a chosen kernel that fails mid-run reads as SDPA with
    the error (the kernel is one registered in the dispatcher for CPU float32, so the fallback runs here)."""
    import nodes.sampling as sampling_node
    from ovi_core.runtime import attention as at

    shown = []
    monkeypatch.setattr(sampling_node._comfy, "show_text", lambda node_id, text, **kw: shown.append(text))
    model, _, _, cond = comps

    def broken(q, k, v):
        raise RuntimeError("no kernel image is available for execution on the device")

    at.register_backend("fake_dead", broken, device_types=("cpu",), dtypes=(torch.float32,))
    before = model.module.attention_backend
    try:
        with torch.inference_mode():
            OviJointSampler().sample(model, cond, **SAMPLER)
            assert shown[-1].splitlines()[-1] == "Ovi attention: sdpa"
            model.module.attention_backend = "fake_dead"
            OviJointSampler().sample(model, cond, **SAMPLER)
    finally:
        model.module.attention_backend = before
        at.unregister_backend("fake_dead")
    assert shown[-1].splitlines()[-1] == ("Ovi attention: sdpa (fake_dead failed: RuntimeError: no kernel image is "
                                          "available for execution on the device)")
