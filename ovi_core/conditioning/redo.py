"""Redo a time range of one stream of an existing clip and keep the rest.

The clip is an MP4 (both streams are encoded again and become guides; the kept parts of the output are the
file's own frames and sound) or saved latents (``*.ovi_latents.safetensors`` as written by OviSaveLatents:
tensors ``video`` ``[1, 48, F, h, w]`` and ``audio`` ``[1, L, 20]``, metadata ``ovi.version``, ``ovi.fps``; the
guides are those latents). In both cases the redone stream's guide leaves the latents of the range to the model,
and the other stream is kept whole.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

import torch

from ovi_core import sizes
from ovi_core.conditioning import ranges
from ovi_core.conditioning.audio_in import AudioInput, prepare_audio
from ovi_core.conditioning.video_in import VideoInput, prepare_video
from ovi_core.io.files import regular_file
from ovi_core.sampling.guides import Guide

logger = logging.getLogger(__name__)

LATENT_SUFFIX = ".ovi_latents.safetensors"


@dataclass
class LatentInput:
    """A guide that is already a latent (from saved latents); nothing to encode and no original media."""

    guide: Guide

    @property
    def stream(self) -> str:
        return self.guide.stream

    def encode(self, component=None, *, device: torch.device | str = "cpu") -> Guide:
        return self.guide


def read_latents_file(path: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """``(video [1, 48, F, h, w], audio [1, L, 20], metadata)`` from an OviSaveLatents file (safetensors)."""
    from safetensors import safe_open

    path = regular_file(path, "latents file")
    try:
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
            keys = set(f.keys())
            if not {"video", "audio"} <= keys:
                raise ValueError(f"{path!r} is not an Ovi latents file (tensors {sorted(keys)}; expected video and "
                                 f"audio). Metadata: {json.dumps(meta)[:200]}")
            video, audio = f.get_tensor("video").float(), f.get_tensor("audio").float()
    except ValueError:
        raise
    except Exception as e:  # noqa: BLE001  (SafetensorError, OSError, RuntimeError: damaged, random or pickled)
        raise ValueError(f"cannot read {path!r} as saved Ovi latents ({type(e).__name__}: {e}): it is damaged or not "
                         "a safetensors latents file (pickles are never read); give the *.ovi_latents.safetensors "
                         "that generate or OviSaveLatents wrote, or the MP4") from None
    for name, t in (("video", video), ("audio", audio)):
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{path!r}: the {name} latents hold NaN or infinite values; the file is damaged, "
                             "give another one")
    if video.ndim == 4:
        video = video[None]
    if audio.ndim == 2:
        audio = audio[None]
    return video[:1], audio[:1], meta


def redo_inputs(
    source: str | os.PathLike,
    redo: str,
    *,
    version: str,
    area: int,
    mode: str = "replace",
) -> list:
    """Guide inputs that regenerate the ``redo`` range (``"audio:2.0-3.5"``) of ``source`` and keep the rest.

    Returns a video and an audio input (:class:`VideoInput`/:class:`AudioInput` for an MP4, :class:`LatentInput`
    for saved latents). Everything is checked here, before any weights load.
    """
    stream, start, end = ranges.parse_redo(redo)
    spec = sizes.get_spec(version)
    path = os.fspath(source)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--source clip not found: {path!r}")
    if path.endswith((".safetensors", ".sft")):
        video, audio, meta = read_latents_file(path)
        want_v, want_a = spec.video_latent_frames, spec.audio_latent_length
        if video.shape[1] != 48 or video.shape[2] != want_v or audio.shape[1:] != (want_a, 20):
            raise ValueError(
                f"{path!r} holds latents video {tuple(video.shape)}, audio {tuple(audio.shape)}, but Ovi {version} "
                f"makes [1, 48, {want_v}, h, w] and [1, {want_a}, 20]; load the model version that made them "
                f"(the file says {meta.get('ovi.version', 'nothing')})"
            )
        sizes.validate_size(video.shape[-2] * 16, video.shape[-1] * 16)
        guides = redo_latents_guides(video, audio, stream=stream, start=start, end=end, mode=mode)
        return [LatentInput(g) for g in guides]

    from ovi_core.conditioning.audio_in import read_audio_file
    from ovi_core.conditioning.video_in import read_video_file

    frames, fps = read_video_file(path)
    vin: VideoInput = prepare_video(frames, fps, version=version, area=area, mode=mode, trim=True)
    waveform, rate = read_audio_file(path)
    ain: AudioInput = prepare_audio(waveform, rate, version=version, offset=0.0, mode=mode, trim=True)
    if stream == "video":
        first, stop = ranges.redo_latents("video", start, end, length=vin.latent_frames,
                                          clip_seconds=vin.frames.shape[0] / sizes.FPS)
        vin.exclude = (first, stop)
    else:
        first, stop = ranges.redo_latents("audio", start, end, length=ain.length,
                                          clip_seconds=ain.samples.shape[-1] / ranges.SAMPLE_RATE)
        ain.exclude = (first, stop)
    _log_redo(stream, first, stop)
    return [vin, ain]


def _log_redo(stream: str, first: int, stop: int) -> None:
    if stream == "audio":
        logger.info("redo audio latents %d-%d (%.3f-%.3f s)", first, stop - 1, ranges.audio_seconds(first),
                    ranges.audio_seconds(stop))
    else:
        a, b = ranges.video_frames_of_latent(first)[0], ranges.video_frames_of_latent(stop - 1)[1]
        logger.info("redo video latent frames %d-%d (pixel frames %d-%d, %.3f-%.3f s)", first, stop - 1, a, b - 1,
                    a / 24, b / 24)


def redo_latents_guides(video: torch.Tensor, audio: torch.Tensor, *, stream: str, start: float, end: float,
                        mode: str = "replace") -> list[Guide]:
    """Guides that keep paired latents (video ``[1, 48, F, h, w]``, audio ``[1, L, 20]``) except ``[start, end)``
    seconds of ``stream``, which is regenerated."""
    if stream not in ranges.STREAMS:
        raise ValueError(f"stream must be 'audio' or 'video', got {stream!r}")
    f, length = video.shape[2], audio.shape[1]
    clip = (1 + 4 * (f - 1)) / sizes.FPS if stream == "video" else ranges.audio_seconds(length)
    first, stop = ranges.redo_latents(stream, start, end, length=f if stream == "video" else length,
                                      clip_seconds=clip)
    vmask, amask = torch.ones(f, dtype=torch.bool), torch.ones(length, dtype=torch.bool)
    (vmask if stream == "video" else amask)[first:stop] = False
    _log_redo(stream, first, stop)
    return [Guide("video", video[:1].float(), vmask, mode), Guide("audio", audio[:1].float(), amask, mode)]
