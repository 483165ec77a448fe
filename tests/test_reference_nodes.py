"""OviReference and the sampler's references input under torch.inference_mode (as ComfyUI runs them), tiny weights."""

import math

import node_utils as nu
import pytest
import torch

from nodes.reference import OviReference
from nodes.sampling import OviJointSampler

SAMPLER = dict(aspect="1:1 square (960x960)", width=960, height=960, seconds="auto", steps=1, solver="unipc",
               shift=5.0, video_cfg=3.0, audio_cfg=4.0, slg_layer=11, seed=1)


@pytest.fixture(scope="module")
def comps(tmp_path_factory):
    models = nu.tiny_models_dir(tmp_path_factory)
    mp = pytest.MonkeyPatch()
    mp.setenv("OVI_MODELS_DIR", str(models))
    with torch.inference_mode():
        model, te, vae = nu.load_fusion_model(), nu.load_text_encoder(), nu.load_video_vae()
        avae = nu.load_audio_vae()
        cond = nu.encode(te, model, "<img1>: a man, identified as <sub1>. He says <S>Hi.<E>")
    yield model, vae, avae, cond
    mp.undo()


def _voice(seconds=2.5, rate=44100):
    t = torch.arange(int(seconds * rate)) / rate
    w = torch.stack([0.3 * torch.sin(2 * math.pi * 200 * t), 0.3 * torch.sin(2 * math.pi * 300 * t)])
    return {"waveform": w[None], "sample_rate": rate}


def _face(h=40, w=30, seed=0):
    return torch.rand(1, h, w, 3, generator=torch.Generator().manual_seed(seed))


def test_reference_nodes_to_sampler(comps, monkeypatch):
    import ovi_core.sampling.av as av_mod

    model, vae, avae, cond = comps
    seen = {}
    real = av_mod.make_reference_denoiser

    def spy(*a, **kw):
        seen.update(layout=kw["layout"], rv=kw["video_ref_scale"], ra=kw["audio_ref_scale"])
        return real(*a, **kw)

    monkeypatch.setattr(av_mod, "make_reference_denoiser", spy)
    import nodes._comfy as comfy

    shown = []
    real_show = comfy.show_text
    monkeypatch.setattr(comfy, "show_text", lambda uid, text, **kw: (shown.append(text), real_show(uid, text, **kw)))
    with torch.inference_mode():
        (one,) = OviReference().encode(vae, avae, _face(), _voice())
        (two,) = OviReference().encode(vae, avae, _face(seed=1), _voice(3.0, 16000), references=one)
        assert len(one) == 1 and len(two) == 2 and two[0] is one[0]
        assert two[0].voice.shape == (1, 31, 20)
        (lat,) = OviJointSampler().sample(model, cond, **SAMPLER, references=two, video_ref_cfg=1.0, audio_ref_cfg=0.5)
        (plain,) = OviJointSampler().sample(model, cond, **SAMPLER)
    assert lat.video.shape == plain.video.shape and lat.audio.shape == plain.audio.shape  # tails removed
    assert not torch.equal(lat.video, plain.video)
    assert seen["layout"].video_frames == 2 and seen["layout"].audio_lengths == (31, 31)
    assert (seen["rv"], seen["ra"]) == (1.0, 0.5)
    assert "experimental" in shown[1] and "experimental" not in shown[-1]  # Ovi weights: said on the node


def test_reference_node_errors(comps):
    model, vae, avae, cond = comps
    with torch.inference_mode():
        (one,) = OviReference().encode(vae, avae, _face(), _voice())
        (two,) = OviReference().encode(vae, avae, _face(), _voice(), references=one)
        with pytest.raises(ValueError, match="at most 2 people"):
            OviReference().encode(vae, avae, _face(), _voice(), references=two)
        with pytest.raises(ValueError, match="at least 2 s"):
            OviReference().encode(vae, avae, _face(), _voice(1.5))
        with pytest.raises(ValueError, match="no image -> AV"):
            OviJointSampler().sample(model, cond, **SAMPLER, references=one, image=_face(), video_vae=vae)


def test_sampler_inputs_are_added_at_the_end():
    opt = list(OviJointSampler.INPUT_TYPES()["optional"])
    assert opt[-3:] == ["references", "video_ref_cfg", "audio_ref_cfg"]
