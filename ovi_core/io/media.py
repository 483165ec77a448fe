"""Reading and writing media with PyAV (no ffmpeg binary, no moviepy): MP4 (H.264 + AAC), WAV, audio, frames.

Writers are atomic: they write to a hidden temporary file in the destination folder and ``os.replace`` it onto the
destination only when complete, so an error or an interrupt never leaves a partial or temporary file behind.
"""

from __future__ import annotations

import logging
import os
import wave
from collections.abc import Iterable, Mapping
from fractions import Fraction
from typing import Union

import numpy as np
import torch

from ovi_core.io.files import atomic_path

logger = logging.getLogger(__name__)

H264_ENCODERS = ("libx264", "libopenh264", "h264_videotoolbox", "h264_nvenc", "h264_qsv", "h264_amf", "h264_mf")
Frames = Union[torch.Tensor, Iterable[torch.Tensor]]


def _av():
    try:
        import av
    except ImportError as e:  # pragma: no cover - av is a declared dependency
        raise ImportError("PyAV is required for video/audio files: pip install av") from e
    return av


def _waveform_2d(waveform: torch.Tensor) -> torch.Tensor:
    """``[T]``, ``[C, T]`` or ``[1, C, T]`` -> float32 ``[C, T]`` on the CPU (C = 1 or 2)."""
    w = waveform.detach()
    if w.ndim == 3:
        if w.shape[0] != 1:
            raise ValueError(f"waveform [B, C, T] must have B = 1, got {tuple(w.shape)}; write one clip per file")
        w = w[0]
    elif w.ndim == 1:
        w = w[None]
    if w.ndim != 2 or w.shape[0] not in (1, 2) or w.shape[1] == 0:
        raise ValueError(f"waveform must be [C, T], [1, C, T] or [T] with 1 or 2 channels, got {tuple(waveform.shape)}")
    return w.to(device="cpu", dtype=torch.float32)


def _frame_uint8(frame: torch.Tensor, index: int, hw: tuple[int, int] | None) -> np.ndarray:
    """One ``[H, W, 3]`` frame, float in [0, 1] or uint8, -> contiguous uint8 numpy (sides padded to even)."""
    if frame.ndim != 3 or frame.shape[-1] != 3 or (hw is not None and tuple(frame.shape[:2]) != hw):
        want = f"[{hw[0]}, {hw[1]}, 3]" if hw is not None else "[H, W, 3]"
        raise ValueError(f"video frame {index} has shape {tuple(frame.shape)}, expected {want} (RGB, channel last)")
    f = frame.detach().cpu()
    if f.dtype != torch.uint8:
        if not f.is_floating_point():
            raise ValueError(f"video frames must be float in [0, 1] or uint8, got {f.dtype}")
        f = (f.float().clamp(0, 1) * 255).round().to(torch.uint8)
    h, w = f.shape[:2]
    if h % 2 or w % 2:  # yuv420p needs even sides: replicate the last row/column
        f = torch.nn.functional.pad(f.permute(2, 0, 1)[None].float(), (0, w % 2, 0, h % 2), mode="replicate")
        f = f[0].permute(1, 2, 0).to(torch.uint8)
    return np.ascontiguousarray(f.numpy())


def _open_h264(container, fps: float, width: int, height: int, crf: int):
    from fractions import Fraction

    av = _av()
    fps = Fraction(fps).limit_denominator(1001) if not isinstance(fps, int) else fps
    available = av.codecs_available
    for name in H264_ENCODERS:
        if name not in available:
            continue
        try:
            stream = container.add_stream(name, rate=fps)
        except Exception as e:  # listed but unusable in this build
            logger.debug("H.264 encoder %s unusable: %s", name, e)
            continue
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if name == "libx264":
            stream.options = {"crf": str(crf), "preset": "medium"}
        else:
            stream.bit_rate = max(2_000_000, int(width * height * float(fps) * 0.15))
        if name != "libx264":
            logger.info("libx264 unavailable, encoding H.264 with %s", name)
        return stream
    raise RuntimeError(
        "no H.264 encoder found in this PyAV build (tried " + ", ".join(H264_ENCODERS) + "); install the PyPI "
        "wheel of av (`pip install av`), which ships libx264"
    )


def write_mp4(
    path: str | os.PathLike,
    frames: Frames,
    waveform: torch.Tensor | None,
    *,
    fps: float = 24,
    sample_rate: int = 16000,
    crf: int = 18,
    metadata: Mapping[str, str] | None = None,
) -> str:
    """Write an MP4: H.264 (yuv420p) video plus, if ``waveform`` is given, an AAC track.

    Args:
        path: destination ``.mp4`` (its folder must exist); replaced atomically when complete.
        frames: ``[F, H, W, 3]`` float in [0, 1] (clamped) or uint8, or an iterable of ``[H, W, 3]`` frames (written
            as they come, e.g. from a tiled decoder). Odd sides are padded by one replicated row/column.
        waveform: ``[C, T]``, ``[1, C, T]`` (ComfyUI AUDIO) or ``[T]`` float in [-1, 1], C = 1 or 2, or None. It is
            trimmed or zero-padded to the video's duration, ``F / fps`` seconds.
        fps: frame rate (Ovi: 24).
        sample_rate: audio sample rate (Ovi: 16000).
        crf: libx264 constant rate factor (lower = better; 18 is visually near-lossless).
        metadata: container tags ``{key: text}`` (e.g. ComfyUI's ``prompt`` / ``workflow`` JSON), written as
            free-form MP4 metadata (``movflags=use_metadata_tags``), as ComfyUI's own video saving does.
    Returns:
        ``path`` as a string.
    """
    av = _av()
    if fps <= 0 or sample_rate <= 0:
        raise ValueError(f"fps and sample_rate must be positive, got {fps} and {sample_rate}")
    if isinstance(frames, torch.Tensor):
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
            raise ValueError(f"frames must be [F, H, W, 3] with F >= 1, got {tuple(frames.shape)}")
        frame_iter: Iterable[torch.Tensor] = frames.unbind(0)
    else:
        frame_iter = frames
    audio = _waveform_2d(waveform) if waveform is not None else None
    path = os.fspath(path)

    with atomic_path(path, suffix=".mp4") as tmp:
        movflags = "+faststart+use_metadata_tags" if metadata else "+faststart"
        container = av.open(tmp, mode="w", format="mp4", options={"movflags": movflags})
        try:
            for key, value in (metadata or {}).items():
                container.metadata[str(key)] = str(value)
            vstream = astream = None
            hw = None
            written = 0  # audio samples written
            count = 0
            for count, frame in enumerate(frame_iter, start=1):
                arr = _frame_uint8(frame, count - 1, hw)
                if vstream is None:
                    hw = tuple(frame.shape[:2])
                    vstream = _open_h264(container, fps, arr.shape[1], arr.shape[0], crf)
                    if audio is not None:
                        astream = container.add_stream("aac", rate=sample_rate)
                        astream.layout = "mono" if audio.shape[0] == 1 else "stereo"
                        astream.bit_rate = 96_000 * audio.shape[0]
                vframe = av.VideoFrame.from_ndarray(arr, format="rgb24")
                container.mux(vstream.encode(vframe))
                if astream is not None:  # interleave: audio up to the end of this frame
                    end = round(count * sample_rate / fps)
                    written = _mux_audio(av, container, astream, audio, written, end, sample_rate)
            if vstream is None:
                raise ValueError("no video frames to write")
            container.mux(vstream.encode(None))
            if astream is not None:
                container.mux(astream.encode(None))
        except BaseException:
            try:
                container.close()
            except Exception:  # the original error matters, not a failing trailer
                pass
            raise
        container.close()
    logger.info("wrote %s (%d frames at %g fps%s)", path, count, float(fps), ", with audio" if audio is not None else "")
    return path


def _mux_audio(av, container, stream, audio: torch.Tensor, start: int, end: int, sample_rate: int) -> int:
    """Encode samples ``start:end`` of ``audio`` ``[C, T]`` (zeros past its end) and mux them; returns ``end``."""
    if end <= start:
        return start
    chunk = audio[:, start:end]
    if chunk.shape[1] < end - start:
        chunk = torch.nn.functional.pad(chunk, (0, end - start - chunk.shape[1]))
    frame = av.AudioFrame.from_ndarray(
        np.ascontiguousarray(chunk.numpy()), format="fltp", layout="mono" if audio.shape[0] == 1 else "stereo"
    )
    frame.sample_rate = sample_rate
    frame.pts = start
    frame.time_base = Fraction(1, sample_rate)
    container.mux(stream.encode(frame))
    return end


def write_wav(path: str | os.PathLike, waveform: torch.Tensor, *, sample_rate: int) -> str:
    """Write 16-bit PCM WAV (``x * 32767`` truncated, after clamping to [-1, 1]; as the reference), atomically.

    ``waveform``: ``[C, T]``, ``[1, C, T]`` or ``[T]`` float, C = 1 or 2.
    """
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    w = _waveform_2d(waveform)
    pcm = (w.clamp(-1, 1) * 32767).to(torch.int16).t().contiguous().numpy()  # [T, C] interleaved
    path = os.fspath(path)
    with atomic_path(path, suffix=".wav") as tmp:
        with wave.open(tmp, "wb") as f:
            f.setnchannels(w.shape[0])
            f.setsampwidth(2)
            f.setframerate(sample_rate)
            f.writeframes(pcm.astype("<i2").tobytes())
    return path


def _open_input(path: str | os.PathLike):
    av = _av()
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"media file not found: {path!r}")
    try:
        return av.open(path, mode="r")
    except av.error.FFmpegError as e:
        raise ValueError(f"cannot read {path!r} as audio/video: {e}") from e


def read_audio(path: str | os.PathLike) -> tuple[torch.Tensor, int]:
    """Decode the first audio stream of a file: ``(waveform float32 [C, T] in [-1, 1], sample_rate)``."""
    av = _av()
    with _open_input(path) as container:
        if not container.streams.audio:
            raise ValueError(f"{os.fspath(path)!r} has no audio stream")
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate
        layout = stream.codec_context.layout.name
        resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
        chunks = []
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray())
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray())
    if not chunks:
        raise ValueError(f"{os.fspath(path)!r}: the audio stream is empty")
    return torch.from_numpy(np.concatenate(chunks, axis=1).astype(np.float32)), int(rate)


def read_video_frames(path: str | os.PathLike, max_frames: int | None = None) -> torch.Tensor:
    """Decode the first video stream as RGB: uint8 ``[F, H, W, 3]`` (at most ``max_frames`` frames)."""
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1 or None, got {max_frames}")
    frames = []
    with _open_input(path) as container:
        if not container.streams.video:
            raise ValueError(f"{os.fspath(path)!r} has no video stream")
        for frame in container.decode(container.streams.video[0]):
            frames.append(torch.from_numpy(frame.to_ndarray(format="rgb24")))
            if max_frames is not None and len(frames) >= max_frames:
                break
    if not frames:
        raise ValueError(f"{os.fspath(path)!r}: the video stream has no frames")
    return torch.stack(frames)


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(height, width)`` of the first frame of an image (PNG, JPEG, WebP, ...); ValueError if it does not decode."""
    with _open_input(path) as container:
        if not container.streams.video:
            raise ValueError(f"{os.fspath(path)!r} is not an image (no picture stream)")
        try:
            frame = next(container.decode(container.streams.video[0]), None)
        except _av().error.FFmpegError as e:
            raise ValueError(f"cannot decode the image {os.fspath(path)!r}: {e}") from e
    if frame is None:
        raise ValueError(f"{os.fspath(path)!r}: the image has no picture")
    return int(frame.height), int(frame.width)


def read_image(path: str | os.PathLike, *, max_pixels: int | None = None) -> torch.Tensor:
    """Decode an image (first frame of the file) as RGB uint8 ``[H, W, 3]``.

    With ``max_pixels``, an image with more pixels is shrunk (aspect kept, area filter) while still 8-bit, inside
    the decoder's scaler, so a huge picture never exists as a float tensor: a 16000 x 16000 PNG costs its
    decoded 8-bit frame plus the small result, instead of 3 GB of floats per copy. Smaller images are returned
    unchanged.
    """
    av = _av()
    with _open_input(path) as container:
        if not container.streams.video:
            raise ValueError(f"{os.fspath(path)!r} is not an image (no picture stream)")
        try:
            frame = next(container.decode(container.streams.video[0]), None)
        except av.error.FFmpegError as e:
            raise ValueError(f"cannot decode the image {os.fspath(path)!r}: {e}") from e
    if frame is None:
        raise ValueError(f"{os.fspath(path)!r}: the image has no picture")
    h, w = int(frame.height), int(frame.width)
    if max_pixels is not None and max_pixels > 0 and h * w > max_pixels:
        scale = (max_pixels / float(h * w)) ** 0.5
        nh, nw = max(2, int(h * scale)), max(2, int(w * scale))
        logger.info("image %s: %dx%d shrunk to %dx%d before conversion", os.fspath(path), w, h, nw, nh)
        frame = frame.reformat(width=nw, height=nh, format="rgb24", interpolation="AREA")
    arr = frame.to_ndarray(format="rgb24")
    return torch.from_numpy(np.ascontiguousarray(arr))  # [H, W, 3] uint8


def video_info(path: str | os.PathLike) -> tuple[int, float, int, int]:
    """``(frames, fps, height, width)`` of the first video stream without decoding it.

    ``frames``: the container's count, or (when it has none) the number of video packets; ``fps``: the average
    rate (or the base/guessed one). ValueError without a video stream or a frame rate.
    """
    with _open_input(path) as container:
        if not container.streams.video:
            raise ValueError(f"{os.fspath(path)!r} has no video stream")
        s = container.streams.video[0]
        rate = s.average_rate or s.base_rate or s.guessed_rate
        if not rate:
            raise ValueError(f"{os.fspath(path)!r}: the video stream has no frame rate")
        n = int(s.frames or 0)
        if n <= 0:
            n = sum(1 for p in container.demux(s) if p.size)
        return n, float(rate), int(s.codec_context.height), int(s.codec_context.width)


def iter_video_frames(path: str | os.PathLike, indices: Iterable[int]):
    """Yield the source frames ``indices`` (ascending, repeats allowed) of the first video stream as RGB uint8
    ``[H, W, 3]``, converting only those frames (never the whole video at once). A range that starts late seeks
    to the keyframe before it (frame numbers from the timestamps at the stream's average rate) and decodes on
    from there; a file without usable timestamps is decoded from its start. Stops early when the file has fewer
    frames."""
    wanted = iter(indices)
    nxt = next(wanted, None)
    if nxt is None:
        return
    with _open_input(path) as container:
        if not container.streams.video:
            raise ValueError(f"{os.fspath(path)!r} has no video stream")
        stream = container.streams.video[0]
        first = _seek_before(container, stream, nxt)
        for i, frame in enumerate(container.decode(stream), start=first):
            if i < nxt:
                continue
            rgb = torch.from_numpy(frame.to_ndarray(format="rgb24"))
            while nxt is not None and nxt <= i:
                yield rgb
                nxt = next(wanted, None)
            if nxt is None:
                return


def _seek_before(container, stream, index: int) -> int:
    """Seek ``container`` to a keyframe at or before source frame ``index``; returns that keyframe's frame number
    (0 and no seek when the timestamps do not allow it, or for the first frames)."""
    rate, tb = stream.average_rate, stream.time_base
    if index < 48 or not rate or not tb:
        return 0
    t0 = stream.start_time or 0
    try:
        container.seek(t0 + int(Fraction(index) / Fraction(rate) / Fraction(tb)), stream=stream, backward=True,
                       any_frame=False)
        for frame in container.decode(stream):  # the keyframe it landed on
            pts = frame.pts
            break
        else:
            pts = None
        if pts is not None:
            k = round((pts - t0) * Fraction(tb) * Fraction(rate))
            if 0 <= k <= index:
                container.seek(pts, stream=stream, backward=True, any_frame=False)
                return k
    except Exception as e:  # noqa: BLE001 - any seek trouble: decode from the start instead
        logger.debug("seek failed (%s); decoding from the start", e)
    container.seek(t0, stream=stream, backward=True, any_frame=False)
    return 0
