"""Guides end to end on the tiny fusion model: replace / clean, image->AV unchanged, generate with a given sound or
frames, redo from an MP4 and from saved latents, and the CLI flags (errors before the weights load)."""

import math

import pytest
import torch
from safetensors.torch import save_file

from ovi_core.cli import main as cli
from ovi_core.cli.guides import inputs_from_args
from ovi_core.conditioning.apply import splice_originals
from ovi_core.conditioning.audio_in import prepare_audio
from ovi_core.conditioning.redo import redo_inputs
from ovi_core.conditioning.video_in import VideoInput, prepare_video
from ovi_core.io.media import read_audio, write_mp4, write_wav
from ovi_core.pipeline import OviPipeline
from ovi_core.sampling.av import encode_image, sample_av
from ovi_core.sampling.guides import Guide
from ovi_core.sampling.settings import SamplingSettings
from ovi_core.text.conditioning import encode_prompts
from ovi_core.tiny import TINY_AREA

PROMPT = "A woman says <S>Good morning.<E> Audio: clear female voice."


@pytest.fixture(scope="module")
def cond(pipe):
    return encode_prompts(pipe.text_encoder, PROMPT, version="1.0")


KW = dict(height=64, width=64, settings=SamplingSettings(steps=2, seed=7), device="cpu", dtype=torch.float32)


def _latents(seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 48, 31, 4, 4, generator=g) * 0.5, torch.randn(1, 157, 20, generator=g) * 0.5


def test_tiny_model_holds_x0_exactly_at_masked_positions(pipe, cond):
    xv, xa = _latents(0)
    am = torch.zeros(157, dtype=torch.bool)
    am[40:100] = True
    vm = torch.zeros(31, dtype=torch.bool)
    vm[5:9] = True
    out = {}
    for mode in ("replace", "clean"):
        lat = sample_av(pipe.model, cond, guides=[Guide("audio", xa, am, mode), Guide("video", xv, vm, mode)], **KW)
        assert torch.equal(lat.audio[:, am], xa[:, am]) and torch.equal(lat.video[:, :, vm], xv[:, :, vm])
        assert not torch.allclose(lat.audio[:, ~am], xa[:, ~am], atol=1e-2)
        assert not torch.allclose(lat.video[:, :, ~vm], xv[:, :, ~vm], atol=1e-2)
        out[mode] = lat
    free = sample_av(pipe.model, cond, **KW)
    assert not torch.equal(free.audio[:, ~am], out["replace"].audio[:, ~am])  # the guide conditions the rest
    # clean reaches the model (timestep 0 on those tokens): its generated part differs from replace's
    assert not torch.equal(out["clean"].audio[:, ~am], out["replace"].audio[:, ~am])


def test_image_to_av_is_bit_identical_through_a_clean_guide(pipe, cond):
    g = torch.Generator().manual_seed(0)
    image = torch.rand(64, 64, 3, generator=g)
    lat_img = encode_image(pipe.video_vae, image, area=TINY_AREA, device="cpu")
    ref = sample_av(pipe.model, cond, image_latent=lat_img, **KW)
    full = torch.zeros(1, 48, 31, *lat_img.shape[-2:])
    full[:, :, :1] = lat_img
    f0 = torch.zeros(31, dtype=torch.bool)
    f0[0] = True
    # the general path: frame 0 as a clean guide, its token mask passed as video_clean to the model
    got = sample_av(pipe.model, cond, guides=[Guide("video", full, f0, "clean")], **KW)
    assert torch.equal(ref.video, got.video) and torch.equal(ref.audio, got.audio)


def _tone(seconds, rate=44100, channels=2):
    t = torch.arange(int(seconds * rate)) / rate
    return torch.stack([0.4 * torch.sin(2 * math.pi * 330 * (c + 1) * t) for c in range(channels)])


def test_generate_with_a_sound_carries_the_original(pipe):
    a = prepare_audio(_tone(2.0), 44100, version="1.0", offset=0.5)
    res = pipe.generate(PROMPT, steps=1, seed=3, guides=[a])
    first, stop = a.latent_span()
    span = slice(first * 512, stop * 512)
    assert torch.equal(res.waveform[0, span], a.canvas()[0, span])  # the original, not its VAE round trip
    enc = a.encode(pipe.audio_codec)
    assert torch.equal(res.latents.audio[:, enc.mask], enc.latent[:, enc.mask])
    decoded = torch.zeros_like(res.waveform)
    assert torch.equal(splice_originals([a], res.frames, decoded, original=False)[1], decoded)


def test_generate_with_frames_takes_their_size(pipe):
    frames = torch.rand(30, 36, 60, 3)  # 1 s at 30 fps, landscape
    v = prepare_video(frames, 30, version="1.0", area=TINY_AREA)
    with pytest.raises(ValueError, match="one size"):
        pipe.generate(PROMPT, steps=1, image=torch.rand(64, 64, 3), guides=[v])
    res = pipe.generate(PROMPT, steps=1, seed=3, guides=[v])
    assert res.frames.shape[1:3] == (v.height, v.width)
    enc = v.encode(pipe.video_vae)
    assert torch.equal(res.latents.video[:, :, enc.mask], enc.latent[:, :, enc.mask])
    n = 1 + 4 * (v.covered - 1)
    assert torch.equal(res.frames[:n], v.splice(torch.zeros_like(res.frames))[:n])


def test_redo_from_saved_latents_keeps_the_rest_exactly(pipe, cond, tmp_path):
    xv, xa = _latents(2)
    path = str(tmp_path / "clip.ovi_latents.safetensors")
    save_file({"video": xv, "audio": xa}, path, metadata={"ovi.version": "1.0", "ovi.fps": "24"})
    ins = redo_inputs(path, "audio:2.0-3.5", version="1.0", area=TINY_AREA)
    lat = sample_av(pipe.model, cond, guides=[i.encode() for i in ins], **dict(KW, settings=SamplingSettings(steps=1, seed=7)))
    keep = torch.ones(157, dtype=torch.bool)
    keep[62:110] = False
    assert torch.equal(lat.video, xv)
    assert torch.equal(lat.audio[:, keep], xa[:, keep])
    assert not torch.allclose(lat.audio[:, ~keep], xa[:, ~keep], atol=1e-2)
    ins = redo_inputs(path, "video:1.0-2.0", version="1.0", area=TINY_AREA)
    lat = sample_av(pipe.model, cond, guides=[i.encode() for i in ins], **dict(KW, settings=SamplingSettings(steps=1, seed=7)))
    assert torch.equal(lat.audio, xa) and torch.equal(lat.video[:, :, :6], xv[:, :, :6])
    assert torch.equal(lat.video[:, :, 13:], xv[:, :, 13:])
    assert not torch.allclose(lat.video[:, :, 6:13], xv[:, :, 6:13], atol=1e-2)
    with pytest.raises(ValueError, match="Ovi 1.1-10s makes"):
        redo_inputs(path, "audio:2.0-3.5", version="1.1-10s", area=TINY_AREA)


def test_redo_from_an_mp4(pipe, tmp_path):
    src = str(tmp_path / "src.mp4")
    write_mp4(src, torch.rand(121, 64, 64, 3), _tone(121 / 24, 16000, 1), fps=24, sample_rate=16000)
    vin, ain = redo_inputs(src, "audio:2.0-3.5", version="1.0", area=TINY_AREA)
    assert vin.mask().all() and ain.mask().tolist() == [j < 62 or j >= 110 for j in range(157)]
    out = pipe.generate(PROMPT, steps=1, seed=5, guides=[vin, ain])
    # the kept frames and sound are the MP4's own (decoded H.264 / AAC), not their VAE round trip
    assert torch.equal(out.frames, vin.splice(torch.zeros_like(out.frames)))
    kept = ain.canvas()[0]
    assert torch.equal(out.waveform[0, : 62 * 512], kept[: 62 * 512])
    assert torch.equal(out.waveform[0, 110 * 512 :], kept[110 * 512 :])
    assert not torch.equal(out.waveform[0, 62 * 512 : 110 * 512], kept[62 * 512 : 110 * 512])


def _cli(weights, tmp_path, *extra):
    out = tmp_path / "o.mp4"
    rc = cli.main(["generate", "--weights", weights, "--prompt", PROMPT, "--steps", "1", "--offline",
                   "--out", str(out), *extra])
    return rc, out


def test_cli_guide_flags(weights, tmp_path):
    wav = tmp_path / "voice.wav"
    write_wav(str(wav), _tone(1.5, 22050, 1), sample_rate=22050)
    rc, out = _cli(weights, tmp_path, "--audio", str(wav), "--audio-offset", "0.5")
    assert rc == 0 and out.exists()
    assert read_audio(str(out))[1] == 16000
    # the other flags, read into guide inputs (the generation itself is the same code path as above)
    clip = tmp_path / "clip.mp4"
    write_mp4(str(clip), torch.rand(25, 40, 72, 3), _tone(1.0, 16000, 1), fps=25, sample_rate=16000)
    parser = cli.build_parser()
    base = ["generate", "--weights", weights, "--prompt", PROMPT, "--offline", "--out", str(out)]
    (v,) = inputs_from_args(parser.parse_args(base + ["--video", str(clip), "--guide-mode", "clean"]))
    assert isinstance(v, VideoInput) and v.mode == "clean" and v.frames.shape[0] == 24 and v.covered == 6
    vin, ain = inputs_from_args(parser.parse_args(base + ["--source", str(clip), "--redo", "video:0.5-1.0"]))
    assert vin.exclude == (3, 7) and ain.exclude is None and vin.mask().tolist()[:6] == [True] * 3 + [False] * 3


def test_cli_guide_errors_come_before_the_weights_load(weights, tmp_path, monkeypatch, capsys):
    def boom(*a, **k):
        raise AssertionError("weights were loaded before the guide inputs were checked")

    monkeypatch.setattr(OviPipeline, "from_weights", boom)
    long_wav = tmp_path / "long.wav"
    write_wav(str(long_wav), _tone(6.0, 16000, 1), sample_rate=16000)
    bad = [
        (["--audio", str(long_wav), "--audio-offset", "9", "--seconds", "8"], "must lie inside the clip"),
        (["--audio", str(tmp_path / "missing.wav")], "not found"),
        (["--audio-offset", "1.0"], "needs --audio"),
        (["--redo", "audio:1-2"], "go together"),
        (["--source", str(long_wav), "--redo", "audio:2-1"], "empty"),
        (["--video", str(long_wav), "--image", str(long_wav)], "drop --image"),
    ]
    for extra, msg in bad:
        rc, out = _cli(weights, tmp_path, *extra)
        err = capsys.readouterr().err
        assert rc == 2 and msg in err, (extra, err)
        assert not out.exists()
