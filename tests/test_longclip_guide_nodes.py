"""OviVideoGuide -> OviLongClipSampler for a video longer than one window (video -> audio of any length)."""


import node_utils as nu
import pytest
import torch

from nodes import NODE_CLASS_MAPPINGS, _patcher
from nodes.decode import OviDecodeVideo
from nodes.guides import OviAudioGuide, OviRedoGuide, OviVideoGuide
from nodes.longclip import OviLongClipSampler
from nodes.sampling import OviJointSampler
from ovi_core.longclip.plan import plan_windows
from ovi_core.longclip.video_guide import TensorVideo, WindowVideo

pytestmark = pytest.mark.usefixtures("one_thread")
LONG = dict(prompts="A man says <S>Hi.<E> Audio: male voice.", aspect="1:1 square (960x960)", width=960, height=960,
            steps=1, solver="unipc", shift=5.0, video_cfg=4.0, audio_cfg=3.0, slg_layer=11, seed=1)


@pytest.fixture(scope="module")
def comps(tmp_path_factory):
    models = nu.tiny_models_dir(tmp_path_factory)
    mp = pytest.MonkeyPatch()
    mp.setenv("OVI_MODELS_DIR", str(models))
    with torch.inference_mode():
        model, te, vae = nu.load_fusion_model(), nu.load_text_encoder(), nu.load_video_vae()
    yield model, te, vae
    mp.undo()


def test_a_video_longer_than_one_window_guides_every_window_of_the_long_clip(comps):
    model, te, vae = comps
    frames = torch.rand(150, 64, 64, 3)  # 6.25 s at 24 fps: longer than the 121 frames of one window
    with torch.inference_mode():
        (g,) = OviVideoGuide().encode(vae, model, fps=24.0, mode="replace", until=1.0, seconds="auto", images=frames)
        assert g[0].guide is None and isinstance(g[0].source, TensorVideo)  # kept for the long clip, unencoded
        assert g[0].encoder is vae  # the sampler encodes the windows with it when its own video_vae is unconnected
        lat, text = OviLongClipSampler().sample(model, te, seconds=6.0, **LONG, video_vae=vae, guides=g)
        assert "2 window(s)" in text and lat.video.shape[-2:] == (4, 4)  # the video's 64x64, not the preset
        plan = plan_windows(6.0, version=model.version)
        wv = WindowVideo(g[0].source, plan, area=model.target_area)
        with _patcher.use(vae) as v:
            w0, w1 = wv.latent(0, v), wv.latent(1, v)
        seam = plan.seams[0]
        s1 = plan.windows[1].frame_start // 4  # window 1's latent frame 0 in clip latents
        assert torch.equal(lat.video[:, :, : seam.latent0], w0[:, :, : seam.latent0])
        assert torch.equal(lat.video[:, :, seam.latent1 : s1 + w1.shape[2]], w1[:, :, seam.latent1 - s1 :])
        (out,) = OviDecodeVideo().decode(vae, lat, tile_size=0, guides=g)
    assert out.shape[0] == 145
    assert torch.equal(out, g[0].source.splice(out.clone()))  # the given frames, not their VAE round trip


def test_long_clip_guides_refuse_what_they_cannot_take(comps):
    model, te, vae = comps
    lat = type("L", (), {"video": torch.zeros(1, 48, 31, 4, 4), "audio": torch.zeros(1, 157, 20), "version": "1.1"})
    with torch.inference_mode():
        (redo,) = OviRedoGuide().encode(lat, stream="audio", start=1.0, end=2.0, mode="replace")
        with pytest.raises(ValueError, match="redo guide works on OviJointSampler"):
            OviLongClipSampler().sample(model, te, seconds=6.0, **LONG, video_vae=vae, guides=redo)
        (g,) = OviVideoGuide().encode(vae, model, fps=24.0, mode="replace", until=1.0, seconds="auto",
                                      images=torch.rand(150, 64, 64, 3))
        with pytest.raises(ValueError, match="disconnect the image"):
            OviLongClipSampler().sample(model, te, seconds=6.0, **LONG, video_vae=vae, guides=g,
                                        image=torch.rand(1, 64, 64, 3))


@pytest.fixture(scope="module")
def avae(comps):
    with torch.inference_mode():
        return nu.load_audio_vae()


def test_a_video_placed_later_guides_the_long_clip_from_its_offset(comps):
    from ovi_core.longclip.video_guide import held_frames

    model, te, vae = comps
    frames = torch.rand(40, 64, 64, 3)
    with torch.inference_mode():
        (g,) = OviVideoGuide().encode(vae, model, fps=24.0, mode="replace", until=1.0, seconds="auto", images=frames,
                                      offset=2.0)
        assert g[0].guide is None and g[0].source.offset == 48  # kept for the long clip, at clip frame 48
        lat, _ = OviLongClipSampler().sample(model, te, seconds=6.0, **LONG, video_vae=vae, guides=g)
        (out,) = OviDecodeVideo().decode(vae, lat, tile_size=0, guides=g)
    a, b = held_frames(48, 88)
    assert (a, b) == (49, 85) and out.shape[0] == 145
    assert torch.equal(out[a:b], frames[a - 48 : b - 48])  # the given frames where the windows held them
    assert not torch.allclose(out[:48], frames[:1].expand(48, -1, -1, -1), atol=0.05)  # before 2 s: generated
    plan = plan_windows(6.0, version=model.version)
    wv = WindowVideo(g[0].source, plan, area=model.target_area)
    with _patcher.use(vae) as v:
        w0, j0 = wv.window_latent(0, v)
    assert j0 == 13 and torch.equal(lat.video[:, :, 13 : 13 + w0.shape[2]], w0)  # window 0 holds latents 13-21


def test_a_sound_placed_later_guides_the_long_clip_as_the_audio_input_at_that_offset(comps, avae):
    from ovi_core.longclip.job import prepare_audio, track_latents

    model, te, _ = comps
    t = torch.arange(16000) / 16000
    track = {"waveform": (0.3 * torch.sin(2 * torch.pi * 250 * t)).view(1, 1, -1), "sample_rate": 16000}
    with torch.inference_mode():
        (g,) = OviAudioGuide().encode(avae, model, track, offset=3.0, mode="replace", until=1.0, seconds="auto")
        via_guide, _ = OviLongClipSampler().sample(model, te, seconds=6.0, **LONG, audio_vae=avae, guides=g)
        via_input, _ = OviLongClipSampler().sample(model, te, seconds=6.0, **LONG, audio_vae=avae, audio=track,
                                                   audio_offset=3.0)
        plan = plan_windows(6.0, version=model.version)
        with _patcher.use(avae) as codec:
            ref, mask = track_latents(codec, prepare_audio(track["waveform"], 16000, plan=plan, offset=48000),
                                      offset=48000)
    assert torch.equal(via_guide.audio, via_input.audio) and torch.equal(via_guide.video, via_input.video)
    assert mask.nonzero().flatten().tolist() == list(range(94, 125))  # wholly after 3 s, to the end of the sound
    assert torch.equal(via_guide.audio[:, 94:125], ref[:, 94:125])
    assert not torch.allclose(via_guide.audio[:, :90], ref[:, :90], atol=1e-3)  # before 3 s: generated


JOINT = dict(aspect="16:9 landscape (1280x704)", width=1280, height=704, seconds="auto", steps=1, solver="unipc",
             shift=5.0, video_cfg=4.0, audio_cfg=3.0, slg_layer=11, seed=1)


def test_the_joint_sampler_makes_a_clip_as_long_as_a_long_video_without_a_vae_of_its_own(comps, avae):
    """The video-to-audio workflow's graph (OviJointSampler has no video_vae) with a video of 150 frames."""
    model, te, vae = comps
    cond = NODE_CLASS_MAPPINGS["OviTextEncode"]().encode(te, "A man says <S>Hi.<E> Audio: male voice.", "blur",
                                                         "echo", model=model)["result"][0]
    frames = torch.rand(150, 64, 64, 3)
    with torch.inference_mode():
        (g,) = OviVideoGuide().encode(vae, model, fps=24.0, mode="replace", until=1.0, seconds="auto", images=frames)
        (lat,) = OviJointSampler().sample(model, cond, **JOINT, guides=g)
        (out,) = OviDecodeVideo().decode(vae, lat, tile_size=0, guides=g)
    assert lat.video.shape[2] == 1 + 149 // 4 + 1 and lat.video.shape[-2:] == (4, 4)  # 150 frames, the video's size
    assert out.shape[0] >= 150 and torch.equal(out[:149], frames[:149])  # its frames (whole latents: 0-148)
    plan = plan_windows(149 / 24, version=model.version)
    with _patcher.use(vae) as v:
        w0 = WindowVideo(g[0].source, plan, area=model.target_area).latent(0, v)
    seam = plan.seams[0]
    assert torch.equal(lat.video[:, :, : seam.latent0], w0[:, :, : seam.latent0])


def test_the_joint_sampler_makes_a_clip_as_long_as_a_long_sound(comps, avae):
    """The audio-to-video workflow's graph with a 7 s voice: longer than the 5 s window."""
    model, te, _ = comps
    cond = NODE_CLASS_MAPPINGS["OviTextEncode"]().encode(te, "A man says <S>Hi.<E> Audio: male voice.", "blur",
                                                         "echo", model=model)["result"][0]
    t = torch.arange(7 * 22050) / 22050
    sound = {"waveform": (0.3 * torch.sin(2 * torch.pi * 220 * t)).view(1, 1, -1), "sample_rate": 22050}
    with torch.inference_mode():
        (g,) = OviAudioGuide().encode(avae, model, sound, offset=0.0, mode="replace", until=1.0, seconds="auto")
        assert g[0].guide is None and g[0].encoder is avae  # kept unencoded for a long clip
        (lat,) = OviJointSampler().sample(model, cond, **JOINT, guides=g)
        (wav,) = NODE_CLASS_MAPPINGS["OviDecodeAudio"]().decode(avae, lat, guides=g)
    assert lat.video.shape[2] == 1 + 168 // 4  # floor(7 * 24) + 1 = 169 frames
    w = wav["waveform"][0, 0]
    given = g[0].source.canvas()[0]
    n = 7 * 16000 // 512 * 512  # the whole latents of the sound, put back sample for sample
    assert torch.equal(w[:n], given[:n])
