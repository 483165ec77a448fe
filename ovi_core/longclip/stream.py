"""A streaming MP4 (+ optional WAV) writer: frames and samples are encoded as they come, so a long clip is never
held in memory whole.

Atomic like every writer of the project (:func:`ovi_core.io.files.atomic_path`): the files appear complete
under their names when the ``with`` block ends normally, and an error or an interrupt (``KeyboardInterrupt``,
ComfyUI's cancel) inside the block leaves neither a partial file nor a temporary one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import wave
from fractions import Fraction

import numpy as np
import torch

from ovi_core.io import media
from ovi_core.io.files import atomic_path

logger = logging.getLogger(__name__)


class ClipStreamWriter:
    """``with ClipStreamWriter(path) as w: w.write(frames, samples); ...``

    ``frames``: ``[n, H, W, 3]`` float in [0, 1] (or uint8), any ``n >= 0`` per call; ``samples``: ``[C, m]`` float
    in [-1, 1] at ``sample_rate`` (C = 1 or 2, the same in every call). Audio is muxed interleaved with the video
    and, as :func:`ovi_core.io.media.write_mp4` does, trimmed or padded with silence to the video's duration when the
    file is closed. ``wav_path``: also write the samples as 16-bit PCM WAV (all of them, as given).
    """

    def __init__(self, path: str | os.PathLike, *, fps: int = 24, sample_rate: int = 16000, crf: int = 18,
                 wav_path: str | os.PathLike | None = None) -> None:
        if fps <= 0 or sample_rate <= 0:
            raise ValueError(f"fps and sample_rate must be positive, got {fps} and {sample_rate}")
        self.path = os.fspath(path)
        self.wav_path = os.fspath(wav_path) if wav_path is not None else None
        self.fps, self.sample_rate, self.crf = fps, int(sample_rate), crf
        self.frames = 0
        self._stack: contextlib.ExitStack | None = None
        self._container = self._vstream = self._astream = self._wav = None
        self._hw: tuple[int, int] | None = None
        self._channels: int | None = None
        self._pending = torch.zeros(1, 0)  # samples not yet muxed, [C, m]
        self._pending_start = 0  # global index of its first sample
        self._muxed = 0

    def __enter__(self) -> ClipStreamWriter:
        av = media._av()
        stack = contextlib.ExitStack()
        try:
            tmp = stack.enter_context(atomic_path(self.path, suffix=".mp4"))
            if self.wav_path is not None:
                self._wav_tmp = stack.enter_context(atomic_path(self.wav_path, suffix=".wav"))
            self._container = av.open(tmp, mode="w", format="mp4", options={"movflags": "+faststart"})
        except BaseException:
            stack.close()
            raise
        self._stack = stack
        return self

    def write(self, frames: torch.Tensor, samples: torch.Tensor | None = None) -> None:
        """Append ``frames [n, H, W, 3]`` and ``samples [C, m]`` (see the class)."""
        if self._container is None:
            raise RuntimeError("ClipStreamWriter.write outside its with-block")
        if samples is not None and samples.shape[-1]:
            self._add_samples(samples)
        if frames.ndim == 3:
            frames = frames[None]
        av = media._av()
        for frame in frames.unbind(0):
            arr = media._frame_uint8(frame, self.frames, self._hw)
            if self._vstream is None:
                self._hw = tuple(frame.shape[:2])
                self._vstream = media._open_h264(self._container, self.fps, arr.shape[1], arr.shape[0], self.crf)
                if self._channels is not None:
                    self._open_audio()
            self._container.mux(self._vstream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")))
            self.frames += 1
            self._mux_audio_until(round(self.frames * self.sample_rate / self.fps))

    # -- audio ----------------------------------------------------------------------------------

    def _add_samples(self, samples: torch.Tensor) -> None:
        s = media._waveform_2d(samples).clamp(-1.0, 1.0)  # AAC and WAV both take [-1, 1], as write_mp4
        if self._channels is None:
            self._channels = s.shape[0]
            self._pending = torch.zeros(self._channels, 0)
            if self._vstream is not None:
                raise ValueError("the first samples must come with or before the first frames")
            if self.wav_path is not None:
                self._wav = wave.open(self._wav_tmp, "wb")
                self._wav.setnchannels(self._channels)
                self._wav.setsampwidth(2)
                self._wav.setframerate(self.sample_rate)
        elif s.shape[0] != self._channels:
            raise ValueError(f"samples have {s.shape[0]} channels, earlier ones had {self._channels}")
        self._pending = torch.cat([self._pending, s], dim=1)
        if self._wav is not None:
            pcm = (s * 32767).to(torch.int16).t().contiguous().numpy()
            self._wav.writeframes(pcm.astype("<i2").tobytes())

    def _open_audio(self) -> None:
        self._astream = self._container.add_stream("aac", rate=self.sample_rate)
        self._astream.layout = "mono" if self._channels == 1 else "stereo"
        self._astream.bit_rate = 96_000 * self._channels

    def _mux_audio_until(self, end: int, *, pad: bool = False) -> None:
        if self._astream is None:
            return
        have = self._pending_start + self._pending.shape[1]
        stop = end if pad else min(end, have)
        if stop <= self._muxed:
            return
        chunk = self._pending[:, self._muxed - self._pending_start : stop - self._pending_start]
        if chunk.shape[1] < stop - self._muxed:
            chunk = torch.nn.functional.pad(chunk, (0, stop - self._muxed - chunk.shape[1]))
        av = media._av()
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk.numpy()), format="fltp",
                                           layout="mono" if self._channels == 1 else "stereo")
        frame.sample_rate = self.sample_rate
        frame.pts = self._muxed
        frame.time_base = Fraction(1, self.sample_rate)
        self._container.mux(self._astream.encode(frame))
        self._muxed = stop
        keep = self._muxed - self._pending_start
        self._pending = self._pending[:, keep:]
        self._pending_start = self._muxed

    # -- closing --------------------------------------------------------------------------------

    def __exit__(self, exc_type, exc, tb) -> bool:
        stack, self._stack = self._stack, None
        container = self._container
        try:
            if exc_type is None:
                if self._vstream is None:
                    raise ValueError("no video frames were written")
                self._mux_audio_until(round(self.frames * self.sample_rate / self.fps), pad=True)
                container.mux(self._vstream.encode(None))
                if self._astream is not None:
                    container.mux(self._astream.encode(None))
                container.close()
                if self._wav is not None:
                    self._wav.close()
        except BaseException as e:
            with contextlib.suppress(Exception):
                container.close()
            if self._wav is not None:
                with contextlib.suppress(Exception):
                    self._wav.close()
            stack.__exit__(type(e), e, e.__traceback__)
            raise
        finally:
            self._container = None
        if exc_type is not None:
            with contextlib.suppress(Exception):
                container.close()
            if self._wav is not None:
                with contextlib.suppress(Exception):
                    self._wav.close()
            return bool(stack.__exit__(exc_type, exc, tb))
        stack.close()
        logger.info("wrote %s (%d frames at %g fps%s)", self.path, self.frames, float(self.fps),
                    ", with audio" if self._astream is not None else "")
        return False
