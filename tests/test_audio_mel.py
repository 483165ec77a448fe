"""16 kHz mel front end: golden output of the official converter and an independent torchaudio computation."""

import os

import pytest
import torch
import torchaudio
from safetensors.torch import load_file

from ovi_core.audio.mel import MelSpectrogram16k, mel_spectrogram_16k, num_mel_frames, slaney_mel_filterbank


def _oracle_mel(wave: torch.Tensor) -> torch.Tensor:
    """Same settings through torchaudio's Spectrogram and its Slaney filter bank (float64)."""
    x = wave.to(torch.float64).clamp(-1, 1)
    x = torch.nn.functional.pad(x[:, None], (384, 384), mode="reflect")[:, 0]
    spec = torchaudio.transforms.Spectrogram(
        n_fft=1024, win_length=1024, hop_length=256, center=False, power=None, window_fn=torch.hann_window,
        wkwargs={"dtype": torch.float64},
    )(x)  # [B, 513, frames] complex
    mag = torch.sqrt(spec.real**2 + spec.imag**2 + 1e-9)
    fb = torchaudio.functional.melscale_fbanks(513, 0.0, 8000.0, 80, 16000, norm="slaney", mel_scale="slaney")
    mel = torch.einsum("fm,bft->bmt", fb.to(torch.float64), mag)
    return torch.log10(mel.clamp(min=1e-5))


def test_golden_mel(data_dir):
    io = load_file(os.path.join(data_dir, "mel_16k.io.safetensors"))
    out = mel_spectrogram_16k(io["inputs.waveform"])
    ref = io["outputs.mel"]
    assert out.shape == ref.shape == (1, 80, 62)
    assert torch.allclose(out, ref, atol=1e-5, rtol=0)


def test_matches_torchaudio_oracle():
    g = torch.Generator().manual_seed(0)
    wave = torch.cat([0.4 * torch.randn(1, 4000, generator=g), 1.7 * torch.randn(1, 4000, generator=g)], dim=1)
    wave = torch.cat([wave, 0.01 * wave.flip(-1)], dim=0)  # [2, 8000], one loud (clipped) and one quiet row
    out = MelSpectrogram16k()(wave)
    ref = _oracle_mel(wave)
    assert out.shape == ref.shape == (2, 80, 31)
    assert (out.double() - ref).abs().max().item() < 1e-5


def test_filterbank_matches_torchaudio():
    ours = slaney_mel_filterbank()
    ref = torchaudio.functional.melscale_fbanks(513, 0.0, 8000.0, 80, 16000, norm="slaney", mel_scale="slaney").T
    assert ours.shape == (80, 513)
    assert torch.allclose(ours, ref, atol=1e-6, rtol=0)


def test_frame_count_and_errors():
    assert num_mel_frames(80384) == 314
    assert MelSpectrogram16k()(torch.zeros(1, 1000)).shape == (1, 80, num_mel_frames(1000))
    assert MelSpectrogram16k()(torch.zeros(700)).shape == (80, 2)
    with pytest.raises(ValueError, match="too short"):
        MelSpectrogram16k()(torch.zeros(1, 100))
