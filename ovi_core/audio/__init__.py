"""Audio side of Ovi: 16 kHz mel front end, MMAudio 16 kHz VAE, BigVGAN v1 vocoder and the codec joining them."""

from ovi_core.audio.bigvgan import BigVGAN, BigVGANConfig, load_bigvgan, write_tiny_bigvgan
from ovi_core.audio.codec import AudioCodec, load_audio_codec
from ovi_core.audio.mel import MelSpectrogram16k, mel_spectrogram_16k
from ovi_core.audio.mmaudio_vae import MMAudioVAE, MMAudioVAEConfig, load_mmaudio_vae, write_tiny_mmaudio_vae

__all__ = [
    "AudioCodec",
    "BigVGAN",
    "BigVGANConfig",
    "MMAudioVAE",
    "MMAudioVAEConfig",
    "MelSpectrogram16k",
    "load_audio_codec",
    "load_bigvgan",
    "load_mmaudio_vae",
    "mel_spectrogram_16k",
    "write_tiny_bigvgan",
    "write_tiny_mmaudio_vae",
]
