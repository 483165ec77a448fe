"""16 kHz log-mel front end of the MMAudio 16 kHz VAE (``get_mel_converter('16k')`` in MMAudio/Ovi).

Settings (facts of the official converter): 16 kHz, n_fft 1024, Hann window 1024, hop 256, 80 mel bands
from 0 to 8 kHz with a Slaney-style (librosa default) filter bank, reflect padding of (n_fft - hop) / 2 = 384
samples on each side, ``center=False``, magnitude ``sqrt(re^2 + im^2 + 1e-9)``, then ``log10(clamp(mel, 1e-5))``.
The waveform is clamped to [-1, 1] first. ``T`` samples give ``floor(T / 256)`` frames (for ``T >= 256``).

The computation always runs in float32, whatever the dtype of the input.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

SAMPLE_RATE = 16_000
N_FFT = 1024
WIN_LENGTH = 1024
HOP_LENGTH = 256
N_MELS = 80
F_MIN = 0.0
F_MAX = 8_000.0
MAGNITUDE_EPS = 1e-9
LOG_CLAMP = 1e-5

__all__ = [
    "SAMPLE_RATE",
    "N_FFT",
    "WIN_LENGTH",
    "HOP_LENGTH",
    "N_MELS",
    "F_MIN",
    "F_MAX",
    "slaney_mel_filterbank",
    "MelSpectrogram16k",
    "mel_spectrogram_16k",
    "num_mel_frames",
]

# Slaney's auditory-toolbox mel scale: linear below 1 kHz, logarithmic above.
_F_SP = 200.0 / 3.0
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = math.log(6.4) / 27.0


def _hz_to_mel(f: torch.Tensor) -> torch.Tensor:
    lin = f / _F_SP
    log = _MIN_LOG_MEL + torch.log(torch.clamp(f, min=_MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
    return torch.where(f >= _MIN_LOG_HZ, log, lin)


def _mel_to_hz(m: torch.Tensor) -> torch.Tensor:
    lin = _F_SP * m
    log = _MIN_LOG_HZ * torch.exp(_LOGSTEP * (m - _MIN_LOG_MEL))
    return torch.where(m >= _MIN_LOG_MEL, log, lin)


def slaney_mel_filterbank(
    *, sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS, f_min: float = F_MIN,
    f_max: float = F_MAX,
) -> torch.Tensor:
    """Triangular mel filters on the Slaney mel scale with Slaney area normalisation.

    Computed in float64 and returned as float32, shape ``[n_mels, n_fft // 2 + 1]`` (librosa's layout).
    """
    n_freqs = n_fft // 2 + 1
    fft_freqs = torch.linspace(0.0, sample_rate / 2.0, n_freqs, dtype=torch.float64)  # [F]
    lo, hi = _hz_to_mel(torch.tensor([f_min, f_max], dtype=torch.float64))
    edges = _mel_to_hz(torch.linspace(float(lo), float(hi), n_mels + 2, dtype=torch.float64))  # [M+2]
    widths = edges[1:] - edges[:-1]  # [M+1]
    dist = edges[:, None] - fft_freqs[None, :]  # [M+2, F]
    rising = -dist[:-2] / widths[:-1, None]  # [M, F]
    falling = dist[2:] / widths[1:, None]  # [M, F]
    fb = torch.clamp(torch.minimum(rising, falling), min=0.0)
    fb = fb * (2.0 / (edges[2:] - edges[:-2]))[:, None]  # equal-area normalisation
    return fb.to(torch.float32)


def num_mel_frames(num_samples: int) -> int:
    """Frames produced for ``num_samples`` samples (reflect pad 384 each side, window 1024, hop 256)."""
    pad = (N_FFT - HOP_LENGTH) // 2
    return (num_samples + 2 * pad - N_FFT) // HOP_LENGTH + 1


class MelSpectrogram16k(nn.Module):
    """Waveform ``[B, T]`` at 16 kHz -> log10 mel ``[B, 80, floor(T / 256)]`` (float32).

    Buffers (filter bank, window) are not part of any checkpoint; they are rebuilt on construction.
    """

    def __init__(self, *, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.register_buffer("mel_basis", slaney_mel_filterbank().to(device), persistent=False)
        self.register_buffer(
            "window", torch.hann_window(WIN_LENGTH, periodic=True, dtype=torch.float32, device=device),
            persistent=False,
        )

    def _apply(self, fn, recurse=True):  # nn.Module hook behind .to() / .float() / .cuda()
        super()._apply(fn, recurse)
        if self.mel_basis.dtype != torch.float32:  # a dtype cast of the parent: rebuild exactly, keep float32
            dev = self.mel_basis.device
            self.mel_basis = slaney_mel_filterbank().to(dev)
            self.window = torch.hann_window(WIN_LENGTH, periodic=True, dtype=torch.float32, device=dev)
        return self

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """``waveform`` ``[B, T]`` (or ``[T]``), values nominally in [-1, 1] -> ``[B, 80, frames]`` float32."""
        squeeze = waveform.ndim == 1
        if squeeze:
            waveform = waveform[None]
        if waveform.ndim != 2:
            raise ValueError(f"mel input must be [B, T] or [T], got shape {tuple(waveform.shape)}")
        pad = (N_FFT - HOP_LENGTH) // 2
        if waveform.shape[-1] <= pad:
            raise ValueError(
                f"waveform too short for the 16 kHz mel front end: {waveform.shape[-1]} samples; give at least "
                f"{pad + 1} (reflect padding of {pad})."
            )
        x = waveform.to(device=self.mel_basis.device, dtype=torch.float32).clamp(-1.0, 1.0)
        x = F.pad(x[:, None], (pad, pad), mode="reflect")[:, 0]  # [B, T + 768]
        spec = torch.stft(
            x, N_FFT, hop_length=HOP_LENGTH, win_length=WIN_LENGTH, window=self.window, center=False,
            normalized=False, onesided=True, return_complex=True,
        )  # [B, 513, frames]
        spec = torch.view_as_real(spec)  # [B, 513, frames, 2]
        mag = torch.sqrt(spec.pow(2).sum(-1) + MAGNITUDE_EPS)  # [B, 513, frames]
        mel = torch.matmul(self.mel_basis, mag)  # [B, 80, frames]
        mel = torch.log10(torch.clamp(mel, min=LOG_CLAMP))
        return mel[0] if squeeze else mel


_DEFAULT: dict[str, MelSpectrogram16k] = {}


def mel_spectrogram_16k(waveform: torch.Tensor) -> torch.Tensor:
    """Functional form of :class:`MelSpectrogram16k` (filter bank cached per device)."""
    key = str(waveform.device)
    mod = _DEFAULT.get(key)
    if mod is None:
        mod = _DEFAULT[key] = MelSpectrogram16k(device=waveform.device)
    return mod(waveform)
