"""Audio and video inputs for guides: resampling, placement, size and length checks, encoding with tiny codecs."""

import math

import pytest
import torch
import torchaudio

from ovi_core import sizes
from ovi_core.audio.codec import load_audio_codec
from ovi_core.conditioning.apply import guide_size
from ovi_core.conditioning.audio_in import prepare_audio, to_mono_16k
from ovi_core.conditioning.video_in import prepare_video, to_24fps
from ovi_core.io.weights import resolve_weights
from ovi_core.tiny import TINY_AREA, write_tiny_weights
from ovi_core.vae.wan_vae import load_wan_vae


@pytest.fixture(scope="module")
def codecs(tmp_path_factory, one_thread):
    root = str(tmp_path_factory.mktemp("w"))
    write_tiny_weights(root)
    p = resolve_weights(root, download=False)
    return load_wan_vae(p.wan_vae), load_audio_codec(p.mmaudio_vae, p.bigvgan)


def _tone(seconds, rate, channels=1, freq=220.0):
    t = torch.arange(int(seconds * rate)) / rate
    w = torch.stack([0.5 * torch.sin(2 * math.pi * freq * (c + 1) * t) for c in range(channels)])
    return w  # [C, T]


def test_44k1_stereo_is_resampled_as_torchaudio_does():
    g = torch.Generator().manual_seed(0)
    stereo = torch.rand(2, 44100, generator=g) * 2 - 1
    got = to_mono_16k(stereo, 44100)
    # independent path: torchaudio's Resample transform per channel, then the mono mix
    want = torchaudio.transforms.Resample(44100, 16000)(stereo).mean(dim=0)
    assert got.shape == (16000,)
    torch.testing.assert_close(got, want, rtol=0, atol=2e-5)  # mix and resample commute up to float rounding
    assert torch.equal(got, torchaudio.functional.resample(stereo.mean(dim=0), 44100, 16000))
    # ComfyUI AUDIO layout [1, C, T] gives the same
    assert torch.equal(to_mono_16k(stereo[None], 44100), got)


def test_audio_offset_places_latents_and_mask():
    # 1.0 s at offset 0.5 s: samples 8000..24000 -> whole latents 16..46 (latent 15 is 7680..8192, partial)
    a = prepare_audio(_tone(1.0, 16000), 16000, version="1.0", offset=0.5)
    assert a.start == 8000 and a.latent_span() == (16, 46)
    m = a.mask()
    assert m.shape == (157,) and m.sum() == 30 and m[16] and not m[15] and m[45] and not m[46]
    c = a.canvas()
    assert c.shape == (1, 157 * 512) and torch.equal(c[0, 8000:24000], a.samples) and not c[0, :8000].any()


def test_too_long_audio_is_refused_with_the_maximum():
    with pytest.raises(ValueError, match=r"at most 4\.024 s from this offset"):
        prepare_audio(_tone(4.5, 8000), 8000, version="1.0", offset=1.0)
    with pytest.raises(ValueError, match="past the clip"):
        prepare_audio(_tone(0.1, 8000), 8000, version="1.0", offset=6.0)
    prepare_audio(_tone(9.0, 8000), 8000, version="1.1-10s")  # the 10 s model holds it
    a = prepare_audio(_tone(6.0, 16000), 16000, version="1.0", trim=True)  # a redo cuts the tail
    assert a.mask().all()


def test_audio_encode_with_the_codec(codecs):
    _, codec = codecs
    a = prepare_audio(_tone(2.0, 48000, channels=2), 48000, version="1.0", offset=1.0, mode="clean")
    g = a.encode(codec)
    assert g.stream == "audio" and g.mode == "clean" and g.latent.shape == (1, 157, 20)
    assert torch.equal(g.mask, a.mask()) and g.mask.sum() == 61  # latents 32..92 (samples 16000..48000)
    # the latent is the codec's encoding of the canvas (silence around the tone)
    torch.testing.assert_close(g.latent, codec.encode(a.canvas(), 16000).float())
    # splice puts the 16 kHz original back exactly on the enforced latents' samples
    dec = torch.zeros(1, 157 * 512)
    out = a.splice(dec)
    assert torch.equal(out[0, 32 * 512 : 93 * 512], a.canvas()[0, 32 * 512 : 93 * 512])
    assert not out[0, : 32 * 512].any() and not out[0, 93 * 512 :].any()


def test_to_24fps_picks_the_frame_on_screen():
    frames = torch.arange(30).view(30, 1, 1, 1).expand(30, 2, 2, 3).to(torch.uint8)
    out = to_24fps(frames, 30)  # 1 s at 30 fps -> 24 frames
    assert out.shape[0] == 24
    assert out[:, 0, 0, 0].tolist() == [math.floor(k * 30 / 24) for k in range(24)]
    assert to_24fps(frames, 12).shape[0] == 60  # 2.5 s at 12 fps -> 60 frames, each shown twice
    assert to_24fps(frames, 24) is frames
    ntsc = to_24fps(frames, 30000 / 1001)
    assert ntsc.shape[0] == math.ceil(30 * 24 * 1001 / 30000)


def test_video_size_coverage_and_errors():
    frames = torch.rand(13, 48, 80, 3)
    v = prepare_video(frames, 24, version="1.0", area=TINY_AREA)
    assert (v.height, v.width) == sizes.i2v_size_for_image(48, 80, area=TINY_AREA)
    assert v.covered == 4 and v.mask().tolist() == [True] * 4 + [False] * 27  # 13 frames = latents 0..3
    assert prepare_video(frames[:12], 24, version="1.0", area=TINY_AREA).covered == 3  # latent 3 partial
    with pytest.raises(ValueError, match=r"at most 121 \(5\.042 s\)"):
        prepare_video(torch.rand(122, 32, 32, 3), 24, version="1.0", area=TINY_AREA)
    with pytest.raises(ValueError, match="does not fit the model"):
        prepare_video(torch.rand(2, 16, 4000, 3), 24, version="1.0", area=720 * 720)
    with pytest.raises(ValueError, match="too small"):
        prepare_video(torch.rand(2, 8, 8, 3), 24, version="1.0", area=TINY_AREA)
    with pytest.raises(ValueError, match=r"\[N, H, W, 3\]"):
        prepare_video(torch.rand(2, 3, 32, 32), 24, version="1.0", area=TINY_AREA)
    # a first image of another aspect and the video disagree on the clip's size
    with pytest.raises(ValueError, match="one size"):
        guide_size([v], image_hw=(64, 64))
    assert guide_size([v], image_hw=(v.height, v.width)) == (v.height, v.width)


def test_video_encode_matches_image_path_on_frame_0(codecs):
    from ovi_core.sampling.av import encode_image

    vae, _ = codecs
    g = torch.Generator().manual_seed(1)
    frames = torch.rand(9, 48, 80, 3, generator=g)
    v = prepare_video(frames, 24, version="1.0", area=TINY_AREA)
    guide = v.encode(vae)
    h, w = v.height // 16, v.width // 16
    assert guide.latent.shape == (1, 48, 31, h, w) and guide.mask.sum() == 3
    # causal VAE: latent frame 0 is exactly what image->AV encodes from the first frame
    assert torch.equal(guide.latent[:, :, :1], encode_image(vae, frames[0], area=TINY_AREA, device="cpu"))
    assert not guide.latent[:, :, 3:].any()
    out = v.splice(torch.zeros(121, v.height, v.width, 3))
    assert out[:9].abs().sum() > 0 and not out[9:].any()
