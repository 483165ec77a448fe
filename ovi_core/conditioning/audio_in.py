"""A given sound track as an audio guide: any file or waveform -> 16 kHz mono -> MMAudio VAE latent at an offset.

:func:`prepare_audio` does the cheap part (checks, mono mix, resampling with torchaudio, placement on the clip's
16 kHz canvas) before any weights load; :meth:`AudioInput.encode` runs the MMAudio VAE on the whole canvas
(silence around the given sound) and returns a :class:`~ovi_core.sampling.guides.Guide` whose mask holds the latents
lying entirely inside the given sound; :meth:`AudioInput.splice` puts the original samples back into a decoded
waveform, so the output carries the given sound and not its VAE round trip.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch

from ovi_core import sizes
from ovi_core.audio.resample import resample
from ovi_core.conditioning import ranges
from ovi_core.sampling.guides import Guide, check_mode

logger = logging.getLogger(__name__)

SAMPLE_RATE = ranges.SAMPLE_RATE


def to_mono_16k(waveform: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Waveform ``[T]``, ``[C, T]`` or ``[1, C, T]`` (ComfyUI AUDIO) at ``sample_rate`` -> float32 mono ``[T16]``.

    Channels are averaged (before resampling), then resampled with :func:`ovi_core.audio.resample.resample`
    (torchaudio's windowed sinc, its defaults; odd rates through a bounded ratio), as
    :meth:`ovi_core.audio.codec.AudioCodec.encode` does. NaN or infinite samples are refused (``ValueError``):
    every given sound (guides, long-clip tracks, CLI and nodes) passes here before any weights load.
    """
    w = waveform.detach()
    if w.ndim == 3:
        if w.shape[0] != 1:
            raise ValueError(f"audio batch must hold one clip, got {tuple(w.shape)}; split the batch first")
        w = w[0]
    if w.ndim == 1:
        w = w[None]
    if w.ndim != 2 or w.shape[-1] == 0:
        raise ValueError(f"audio must be [T], [C, T] or [1, C, T] with samples, got {tuple(waveform.shape)}")
    rate = int(sample_rate)
    if rate <= 0:
        raise ValueError(f"audio sample rate must be positive, got {sample_rate}")
    mono = w.to(device="cpu", dtype=torch.float32).mean(dim=0)  # [T]
    if not bool(torch.isfinite(mono).all()):  # every given sound passes here: guides, long-clip tracks, nodes
        raise ValueError("the audio holds NaN or infinite samples; the file is damaged, give another one")
    return resample(mono, rate, SAMPLE_RATE) if rate != SAMPLE_RATE else mono


@dataclass
class AudioInput:
    """A sound placed on a clip's 16 kHz canvas, ready to encode.

    Attributes:
        samples: float32 mono ``[T16]`` at 16 kHz (the given sound, resampled).
        start: first canvas sample of the sound.
        length: audio latents of the clip (157 for 5 s, 314 for 10 s).
        mode, until: of the resulting guide.
        exclude: optional latent range ``(first, stop)`` left to the model even where the sound covers it (redo).
    """

    samples: torch.Tensor
    start: int
    length: int
    mode: str = "replace"
    until: float = 1.0
    exclude: tuple[int, int] | None = None

    stream = "audio"

    @property
    def canvas_samples(self) -> int:
        return self.length * ranges.SAMPLES_PER_LATENT

    def latent_span(self) -> tuple[int, int]:
        """Latents ``[first, stop)`` lying entirely inside the given sound."""
        return ranges.audio_latents_covered(self.start, self.samples.shape[-1], length=self.length)

    def mask(self) -> torch.Tensor:
        """Bool ``[L]``: the latents this guide enforces."""
        first, stop = self.latent_span()
        m = ranges.span_mask(self.length, first, stop)
        if self.exclude is not None:
            m[self.exclude[0] : self.exclude[1]] = False
        return m

    def canvas(self) -> torch.Tensor:
        """``[1, T_clip]`` 16 kHz: silence with the sound at ``start`` (cut at the clip's end)."""
        out = torch.zeros(1, self.canvas_samples)
        n = min(self.samples.shape[-1], self.canvas_samples - self.start)
        out[0, self.start : self.start + n] = self.samples[:n]
        return out

    def encode(self, codec, *, device: torch.device | str = "cpu") -> Guide:
        """MMAudio VAE encode of the canvas -> guide with latent ``[1, L, 20]`` and mask ``[L]``."""
        mask = self.mask()
        if not bool(mask.any()):
            raise ValueError("the given audio covers no whole audio latent (1/31.25 s) of the clip; give a longer "
                             "sound or a smaller offset")
        dtype = next(codec.parameters()).dtype
        with torch.no_grad():
            lat = codec.encode(self.canvas().to(device=device, dtype=dtype), SAMPLE_RATE)  # [1, L, 20]
        if lat.shape[1] != self.length:
            raise ValueError(f"audio encoder returned {lat.shape[1]} latents for a clip of {self.length}; "
                             "load the 16 kHz MMAudio VAE (v1-16.pth)")
        first, stop = self.latent_span()
        logger.info("audio guide: latents %d-%d of %d (%.3f-%.3f s), mode %s", first, stop - 1, self.length,
                    ranges.audio_seconds(first), ranges.audio_seconds(stop), self.mode)
        return Guide("audio", lat.float().cpu(), mask, self.mode, self.until)

    def splice(self, waveform: torch.Tensor) -> torch.Tensor:
        """Decoded ``[1, T]`` 16 kHz with the given sound's samples put back where its guide held the latents.

        Only the samples of enforced latents are replaced (a redone range keeps the generated sound).
        """
        out = waveform.clone()
        mask = self.mask()
        canvas = self.canvas()[0]
        spl = ranges.SAMPLES_PER_LATENT
        for j in torch.nonzero(mask).flatten().tolist():
            a, b = j * spl, min((j + 1) * spl, out.shape[-1])
            if a < b:
                out[..., a:b] = canvas[a:b]
        return out


def prepare_audio(
    waveform: torch.Tensor,
    sample_rate: int,
    *,
    version: str,
    offset: float = 0.0,
    mode: str = "replace",
    until: float = 1.0,
    trim: bool = False,
) -> AudioInput:
    """Check and place a sound on the clip of model ``version`` (before any weights load).

    Args:
        waveform: ``[T]``, ``[C, T]`` or ``[1, C, T]`` float in [-1, 1], mono or stereo, at ``sample_rate``.
        version: model version ("1.0", "1.1", "1.1-10s"), which fixes the clip's length.
        offset: where the sound starts in the clip, seconds.
        mode, until: of the guide (see :class:`~ovi_core.sampling.guides.Guide`).
        trim: cut a sound longer than the clip instead of refusing it (used for redoing an existing clip).
    Raises:
        ValueError: the sound (from ``offset``) is longer than the clip's audio, stating the maximum.
    """
    spec = sizes.get_spec(version)
    check_mode(mode, until)
    start = ranges.offset_samples(offset)
    rate = int(sample_rate)
    n_in = int(waveform.shape[-1])
    seconds = n_in / rate if rate > 0 else 0.0
    clip = ranges.audio_seconds(spec.audio_latent_length)
    video_seconds = spec.frames / sizes.FPS  # an MP4 of this clip is this long; its tail past `clip` is cut
    if start >= spec.audio_latent_length * ranges.SAMPLES_PER_LATENT:
        raise ValueError(f"audio offset {float(offset):g} s is past the clip's audio ({clip:.3f} s)")
    if not trim and float(offset) + seconds > video_seconds + 1e-9:
        room = clip - float(offset)
        raise ValueError(
            f"the audio is {seconds:.3f} s long from offset {float(offset):g} s, but a clip of Ovi {spec.version} "
            f"holds {clip:.3f} s of audio: give at most {room:.3f} s from this offset (trim it, in ComfyUI with the "
            f"guide node's max_seconds, or load the 10 s model "
            f"for up to {ranges.audio_seconds(sizes.MODEL_SPECS['1.1-10s'].audio_latent_length):.3f} s)"
        )
    samples = to_mono_16k(waveform, rate)  # NaN/Inf refused there
    peak = float(samples.abs().max())
    if peak > 1.0:  # clamped here, so the encoder and the samples spliced into the output both see [-1, 1]
        logger.warning("audio input exceeds full scale (peak %.2f); clamped to [-1, 1]", peak)
        samples = samples.clamp(-1.0, 1.0)
    inp = AudioInput(samples=samples, start=start, length=spec.audio_latent_length, mode=mode, until=float(until))
    if not bool(inp.mask().any()):  # the same refusal as encode(), before any weights load
        raise ValueError(f"the given audio ({seconds:.4f} s from offset {float(offset):g} s) covers no whole audio "
                         "latent (1/31.25 s) of the clip; give a longer sound or a smaller offset")
    return inp


def read_audio_file(path: str | os.PathLike) -> tuple[torch.Tensor, int]:
    """Decode any file PyAV reads: ``(waveform float32 [C, T], sample_rate)``."""
    from ovi_core.io.media import read_audio

    return read_audio(path)


def encode_audio_guide(
    codec,
    waveform: torch.Tensor,
    sample_rate: int,
    *,
    version: str,
    offset: float = 0.0,
    mode: str = "replace",
    until: float = 1.0,
    device: torch.device | str = "cpu",
) -> tuple[AudioInput, Guide]:
    """:func:`prepare_audio` then :meth:`AudioInput.encode` with ``codec`` on ``device``: ``(input, guide)``."""
    inp = prepare_audio(waveform, sample_rate, version=version, offset=offset, mode=mode, until=until)
    return inp, inp.encode(codec, device=device)
