"""AudioCodec: latent [B, L, 20] <-> 16 kHz waveform, on tiny official-format files."""

import os

import pytest
import torch
import torchaudio

from ovi_core.audio.bigvgan import write_tiny_bigvgan
from ovi_core.audio.codec import AudioCodec, load_audio_codec
from ovi_core.audio.mel import mel_spectrogram_16k
from ovi_core.audio.mmaudio_vae import write_tiny_mmaudio_vae
from ovi_core.io.checkpoints import CheckpointError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("audio")
    write_tiny_mmaudio_vae(d / "v1-16.pth", seed=0)
    write_tiny_bigvgan(d / "best_netG.pt", seed=0)
    return str(d / "v1-16.pth"), str(d / "best_netG.pt")


@pytest.fixture(scope="module")
def codec(files):
    return load_audio_codec(*files)


def test_shape_contract_5s(codec):
    assert codec.sample_rate == 16000 and isinstance(codec, AudioCodec)
    latent = torch.randn(1, 157, 20, generator=torch.Generator().manual_seed(0))
    wav = codec.decode(latent)
    assert wav.shape == (1, 1, 80384) and wav.dtype == torch.float32
    assert codec.num_samples(157) == 80384 and codec.num_samples(314) == 160768
    assert torch.isfinite(wav).all() and wav.abs().max() <= 1.0


def test_chunked_decode_equals_unchunked(codec):
    latent = torch.randn(2, 48, 20, generator=torch.Generator().manual_seed(1))
    full = codec.decode(latent, chunk_latents=None)
    for chunk in (10, 32):
        part = codec.decode(latent, chunk_latents=chunk)
        assert part.shape == full.shape == (2, 1, 48 * 512)
        assert (part - full).abs().max().item() < 1e-5
    assert (codec.decode(latent[:1]) - full[:1]).abs().max().item() < 1e-5  # batch rows are independent


def test_decode_matches_stages(codec):
    latent = torch.randn(1, 12, 20, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        mel = codec.vae.decode(latent.transpose(1, 2))
        assert mel.shape == (1, 80, 24)
        ref = codec.vocoder(mel)
    assert torch.equal(codec.decode(latent), ref)
    assert torch.equal(codec.decode(latent[0]), ref)  # [L, 20] accepted
    with pytest.raises(ValueError, match="channel-last"):
        codec.decode(latent.transpose(1, 2))


def test_encode_44k_stereo(codec):
    g = torch.Generator().manual_seed(3)
    t = torch.arange(44100 * 2) / 44100
    left = 0.3 * torch.sin(2 * torch.pi * 440 * t) + 0.02 * torch.randn(t.shape, generator=g)
    stereo = torch.stack([left, 0.5 * left])[None]  # [1, 2, 88200] at 44.1 kHz
    z = codec.encode(stereo, 44100)
    n16 = torchaudio.functional.resample(stereo.mean(1), 44100, 16000).shape[-1]
    assert n16 == 32000
    assert z.shape == (1, n16 // 512, 20) and z.dtype == torch.float32
    # same result as doing each step by hand
    mono16 = torchaudio.functional.resample(stereo.mean(1), 44100, 16000)
    with torch.inference_mode():
        ref = codec.vae.encode(mel_spectrogram_16k(mono16)).transpose(1, 2)
    assert torch.allclose(z, ref, atol=1e-6)
    # [B, T] mono at 16 kHz, and the decode of the encoding has the right length
    z16 = codec.encode(mono16, 16000)
    assert torch.allclose(z16, ref, atol=1e-6)
    assert codec.decode(z16).shape == (1, 1, 62 * 512)
    with pytest.raises(ValueError, match="too short"):
        codec.encode(torch.zeros(1, 300), 16000)


def test_bfloat16_codec(files):
    codec = load_audio_codec(*files, dtype=torch.bfloat16)
    assert codec.vae.dtype == torch.bfloat16 and codec.vocoder.dtype == torch.bfloat16
    wav = codec.decode(torch.randn(1, 8, 20))
    assert wav.shape == (1, 1, 4096) and wav.dtype == torch.float32 and torch.isfinite(wav).all()
    assert codec.encode(torch.randn(1, 4096) * 0.1, 16000).dtype == torch.bfloat16


def test_wrong_files(files):
    vae_path, voc_path = files
    with pytest.raises(CheckpointError) as e:
        load_audio_codec(voc_path, vae_path)  # swapped
    msg = str(e.value)
    assert os.path.basename(voc_path) in msg and "BigVGAN" in msg and "Missing" in msg


def test_ten_seconds_default_chunking(codec):
    latent = torch.randn(1, 314, 20, generator=torch.Generator().manual_seed(4))
    wav = codec.decode(latent)  # 314 > DEFAULT_CHUNK_LATENTS: runs in two chunks
    assert wav.shape == (1, 1, 160768) and torch.isfinite(wav).all()


def test_mel_stays_float32_after_cast(codec):
    wav = torch.randn(1, 2048) * 0.1
    ref = mel_spectrogram_16k(wav)
    mel = codec.mel.to(torch.bfloat16)  # a whole-codec .to(bfloat16) reaches this child too
    assert mel.mel_basis.dtype == torch.float32
    assert torch.allclose(mel(wav), ref, atol=1e-6)
