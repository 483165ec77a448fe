"""Ovi's audio codec: 20-channel latent at 31.25 Hz <-> 16 kHz mono waveform.

decode: latent ``[B, L, 20]`` (channel-last, as the audio tower emits it) -> MMAudio VAE decoder -> log-mel
``[B, 80, 2L]`` -> BigVGAN -> waveform ``[B, 1, 2L * 256]`` (float32, in [-1, 1]). 157 latents give 80,384 samples
(5.024 s), 314 give 160,768.

encode: waveform ``[B, C, T]`` or ``[B, T]`` at any rate -> mono mix -> resample to 16 kHz -> log-mel -> VAE
encoder posterior mean -> ``[B, T16 // 512, 20]``. Official inference never encodes; this serves audio
conditioning and tests.

Long clips decode in bounded memory: the convolutional part of the VAE decoder and the whole vocoder run in time
chunks with receptive-field context on both sides, so chunked and unchunked results agree up to float rounding.
Only the VAE bottleneck (one global attention over the latent sequence, ``[B, 1536, L]``) sees the whole clip.
"""

from __future__ import annotations

import logging
import os

import torch
from torch import nn

from ovi_core.audio.bigvgan import BigVGAN, load_bigvgan
from ovi_core.audio.mel import HOP_LENGTH, MelSpectrogram16k
from ovi_core.audio.mmaudio_vae import MMAudioVAE, load_mmaudio_vae
from ovi_core.audio.resample import resample

logger = logging.getLogger(__name__)

__all__ = ["AudioCodec", "load_audio_codec", "LATENT_CHANNELS", "SAMPLE_RATE", "DEFAULT_CHUNK_LATENTS"]

SAMPLE_RATE = 16_000
LATENT_CHANNELS = 20
DEFAULT_CHUNK_LATENTS = 256  # ~8.2 s of audio per chunk; 5 s clips decode in one piece


class AudioCodec(nn.Module):
    """MMAudio 16 kHz VAE + BigVGAN vocoder. Compute dtype is the dtype of each loaded module."""

    sample_rate: int = SAMPLE_RATE

    def __init__(self, vae: MMAudioVAE, vocoder: BigVGAN) -> None:
        super().__init__()
        if vae.config.data_dim != vocoder.config.num_mels:
            raise ValueError(
                f"VAE mel bins ({vae.config.data_dim}) differ from the vocoder's ({vocoder.config.num_mels}); "
                "load the 16 kHz VAE (v1-16.pth) with the 16 kHz BigVGAN (best_netG.pt)."
            )
        self.vae = vae
        self.vocoder = vocoder
        self.mel = MelSpectrogram16k(device=vae.device)

    @property
    def latent_channels(self) -> int:
        return self.vae.config.embed_dim

    @property
    def samples_per_latent(self) -> int:
        return self.vae.config.temporal_downsample * self.vocoder.config.hop_length

    def num_samples(self, num_latents: int) -> int:
        """Waveform samples that ``num_latents`` latent frames decode to (``2 * 256 * L``)."""
        return num_latents * self.samples_per_latent

    @torch.inference_mode()
    def decode(self, latent: torch.Tensor, *, chunk_latents: int | None = DEFAULT_CHUNK_LATENTS) -> torch.Tensor:
        """Latent ``[B, L, 20]`` (or ``[L, 20]``) -> waveform ``[B, 1, 512 L]`` float32 at 16 kHz.

        ``chunk_latents`` bounds the time span processed at once by the convolutional stages (``None``: whole
        clip at once); the result does not depend on it beyond float rounding.
        """
        if latent.ndim == 2:
            latent = latent[None]
        if latent.ndim != 3 or latent.shape[-1] != self.latent_channels:
            raise ValueError(
                f"audio latent must be [B, L, {self.latent_channels}] (channel-last), got {tuple(latent.shape)}"
            )
        z = latent.transpose(1, 2)  # [B, 20, L]
        mel = self.vae.decode(z, chunk_size=chunk_latents)  # [B, 80, 2L]
        mel_chunk = None if chunk_latents is None else chunk_latents * self.vae.config.temporal_downsample
        wav = self.vocoder(mel, chunk_size=mel_chunk)  # [B, 1, 2L * 256]
        return wav.to(torch.float32)

    @torch.inference_mode()
    def encode(self, waveform: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """Waveform ``[B, C, T]`` or ``[B, T]`` at ``sample_rate`` -> latent ``[B, L, 20]``, channel-last.

        Channels are averaged to mono, the signal is resampled to 16 kHz (:func:`ovi_core.audio.resample.resample`),
        turned into a log-mel (``T16 // 256`` frames) and encoded to the posterior mean
        (``L = T16 // 512``). Returned in the VAE's dtype.
        """
        if waveform.ndim == 3:
            x = waveform.to(torch.float32).mean(dim=1)  # [B, T] mono mix
        elif waveform.ndim == 2:
            x = waveform.to(torch.float32)
        else:
            raise ValueError(f"waveform must be [B, C, T] or [B, T], got shape {tuple(waveform.shape)}")
        if int(sample_rate) <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        if int(sample_rate) != self.sample_rate:
            x = resample(x, int(sample_rate), self.sample_rate)  # [B, T16]
        min_len = HOP_LENGTH * 2 * self.vae.config.temporal_downsample
        if x.shape[-1] < min_len:
            raise ValueError(
                f"audio too short to encode: {x.shape[-1]} samples at 16 kHz; give at least {min_len} "
                f"({min_len / self.sample_rate:.3f} s)."
            )
        mel = self.mel(x.to(self.mel.mel_basis.device))  # [B, 80, T16 // 256] float32
        mean = self.vae.encode(mel)  # [B, 20, L]
        return mean.transpose(1, 2).contiguous()  # [B, L, 20]


def load_audio_codec(
    vae_path: str | os.PathLike,
    vocoder_path: str | os.PathLike,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> AudioCodec:
    """Load ``v1-16.pth`` and ``best_netG.pt`` (strict; weight norms folded) into an :class:`AudioCodec`.

    Official Ovi runs both in bfloat16 (``dtype=torch.bfloat16``); the mel front end always runs in float32.
    """
    vae = load_mmaudio_vae(vae_path, device=device, dtype=dtype)
    vocoder = load_bigvgan(vocoder_path, device=device, dtype=dtype)
    return AudioCodec(vae, vocoder)
