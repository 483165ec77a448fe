"""Reading and writing media with PyAV (no ffmpeg binary, no moviepy): MP4 (H.264 + AAC), WAV, audio, frames.

Writers are atomic: they write to a hidden temporary file in the destination folder and ``os.replace`` it onto the
destination only when complete, so an error or an interrupt never leaves a partial or temporary file behind.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import os
import wave
from collections.abc import Iterable, Mapping
from fractions import Fraction
from typing import Union

import numpy as np
import torch

from ovi_core.io.files import atomic_path, regular_file

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
        waveform: ``[C, T]``, ``[1, C, T]`` (ComfyUI AUDIO) or ``[T]`` float in [-1, 1] (clamped), C = 1 or 2, or
            None. It is trimmed or zero-padded to the video's duration, ``F / fps`` seconds.
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
    audio = _waveform_2d(waveform).clamp(-1.0, 1.0) if waveform is not None else None  # AAC takes [-1, 1]
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


# Demuxers a media file may be read with: containers that hold their own streams and never open another file
# or URL. Refused, among others: concat (ffconcat lists), hls/dash (playlists), image2 (file-name patterns),
# tee/sdp/rtp and every network demuxer. Matched against each comma-separated part of FFmpeg's format name.
ALLOWED_DEMUXERS = (
    "mov", "mp4", "matroska", "webm", "wav", "flac", "mp3", "ogg", "aac", "avi",  # audio/video containers
    "png_pipe", "jpeg_pipe", "webp_pipe", "bmp_pipe",  # single images (first frames)
)
MAX_AUDIO_CHANNELS = 32
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1000, 768_000
MAX_AUDIO_SECONDS = 1800.0  # 30 min: the longest input any command reads (long clips); a guide is refused far sooner
MAX_FRAME_PIXELS = 8192 * 8192
MAX_VIDEO_BYTES = 8 << 30  # decoded RGB frames held at once
_KNOWN_REFUSED = ((b"ffconcat", "an FFmpeg concat list (ffconcat)"), (b"#EXTM3U", "an M3U/HLS playlist"),
                  (b"<?xml", "an XML file (e.g. a DASH manifest)"), (b"v=0", "an SDP session description"))


_attempts = itertools.count()


def _refused_format(av, url: str, options: dict, path: str) -> str | None:
    """When FFmpeg refused ``url`` because its detected format is not allowed: that format's name (from FFmpeg's
    error log, captured during a second, equally safe, attempt), with a plain description for the usual suspects
    (recognised by their first bytes even where FFmpeg did not); None when the failure was something else."""
    logs = []
    # PyAV holds back a log line equal to the previous one: a unique (inexistent) demuxer name keeps ours apart
    nonce = f"refused{next(_attempts)}"
    options = {**options, "format_whitelist": options["format_whitelist"] + "," + nonce}
    old = av.logging.get_level()
    try:
        av.logging.set_level(av.logging.ERROR)
        with av.logging.Capture() as logs:
            try:
                av.open(url, mode="r", options=options).close()
            except av.error.FFmpegError:
                pass
    finally:
        av.logging.set_level(old)
    found = [name for _level, name, text in logs if "Format not on whitelist" in (text or "") and nonce in text]
    name = (f"FFmpeg format {found[0]!r}" if found[0] else "an FFmpeg format") if found else None
    try:
        with open(path, "rb") as f:
            head = f.read(64).lstrip(b"\xef\xbb\xbf \t\r\n")
    except OSError:
        head = b""
    for magic, what in _KNOWN_REFUSED:  # also when FFmpeg did not recognise it (an .m3u8 list named .wav)
        if head.startswith(magic):
            return f"{what} ({name})" if name else what
    return name


def open_media(path: str | os.PathLike, what: str = "media file"):
    """Open a local media file for reading: the one way this project opens audio, video and images.

    Only a regular local file (no URL, no ``concat:``/``subfile:`` protocol, no FIFO or folder) and only the
    demuxers of :data:`ALLOWED_DEMUXERS`: a file whose content is a playlist or a concat list (whatever its name,
    e.g. ``voice.wav``) would make FFmpeg read other files or URLs, so it is refused before any packet is read,
    with a ``ValueError`` naming the detected format. Returns an open PyAV input container.
    """
    av = _av()
    path = regular_file(path, what)
    url = "file:" + os.path.abspath(path)  # the file protocol, whatever prefix the name carries
    options = {"protocol_whitelist": "file", "format_whitelist": ",".join(ALLOWED_DEMUXERS)}
    try:
        return av.open(url, mode="r", options=options)
    except av.error.FFmpegError as e:
        refused = _refused_format(av, url, options, path)
        if refused:
            raise ValueError(
                f"{what} {path!r} is {refused}, which is not read for safety (it can make FFmpeg "
                "read other files or URLs); give a plain audio/video file (mp4, mov, mkv, webm, wav, flac, mp3, "
                "ogg, aac, m4a, avi) or image (png, jpeg, webp, bmp)"
            ) from None
        raise ValueError(f"cannot read {what} {path!r} as audio/video: {e}") from e


def _is_known_layout(layout) -> bool:
    return layout.name in ("mono", "stereo")


def _frame_float(frame) -> np.ndarray:
    """A decoded audio frame of any sample format -> float32 ``[C, n]`` in [-1, 1]."""
    a = frame.to_ndarray()
    c = len(frame.layout.channels)
    a = a.reshape(c, -1) if frame.format.is_planar else a.reshape(-1, c).T
    if a.dtype == np.uint8:
        return (a.astype(np.float32) - 128.0) / 128.0
    if np.issubdtype(a.dtype, np.integer):
        return (a.astype(np.float64) / float(-np.iinfo(a.dtype).min)).astype(np.float32)
    return a.astype(np.float32)


def read_audio(path: str | os.PathLike, *, max_seconds: float = MAX_AUDIO_SECONDS) -> tuple[torch.Tensor, int]:
    """Decode the first audio stream of a file: ``(waveform float32 [C, T] in [-1, 1], sample_rate)``.

    One or two channels come back as they are; more (5.1, 7.1, 8 unnamed channels, ...) are averaged to mono
    frame by frame as they are decoded, so memory stays that of the mono result. Refused with a ``ValueError``:
    more than :data:`MAX_AUDIO_CHANNELS` channels, a sample rate outside 1 kHz-768 kHz, more than ``max_seconds``.
    """
    av = _av()
    p = os.fspath(path)
    with open_media(p, "audio file") as container:
        if not container.streams.audio:
            raise ValueError(f"{p!r} has no audio stream")
        stream = container.streams.audio[0]
        cc = stream.codec_context
        rate, channels = int(cc.sample_rate or 0), int(cc.channels or 0)
        if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
            raise ValueError(f"{p!r}: audio sample rate {rate} Hz is outside {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz; "
                             "convert it (e.g. to 48 kHz) first")
        if not 1 <= channels <= MAX_AUDIO_CHANNELS:
            raise ValueError(f"{p!r}: {channels} audio channels (at most {MAX_AUDIO_CHANNELS}); mix it down first")
        limit = int(max_seconds * rate)
        resampler = av.AudioResampler(format="fltp", layout=cc.layout.name, rate=rate) \
            if _is_known_layout(cc.layout) else None
        chunks, total = [], 0

        def take(arr: np.ndarray) -> None:
            nonlocal total
            total += arr.shape[1]
            if total > limit:
                raise ValueError(f"{p!r}: the audio is longer than {max_seconds:g} s, the most read; trim it first")
            chunks.append(arr)

        for frame in container.decode(stream):
            if resampler is None:  # many or unnamed channels: own conversion, more than two averaged to mono
                a = _frame_float(frame)
                take(a if channels <= 2 else a.mean(axis=0, keepdims=True))
                continue
            for out in resampler.resample(frame):
                take(out.to_ndarray())
        if resampler is not None:
            for out in resampler.resample(None):
                take(out.to_ndarray())
    if not chunks:
        raise ValueError(f"{p!r}: the audio stream is empty")
    if channels > 2:
        logger.info("audio %s: %d channels averaged to mono", p, channels)
    return torch.from_numpy(np.concatenate(chunks, axis=1).astype(np.float32)), rate


def read_video(path: str | os.PathLike, max_frames: int | None = None, *,
               max_seconds: float | None = None) -> tuple[torch.Tensor, float]:
    """Decode the first video stream as RGB: ``(uint8 [F, H, W, 3], frames per second)``.

    Every frame comes out at the size of the first one (a stream whose resolution changes part-way is scaled to
    it, with a log line). A variable-frame-rate stream is placed on a constant grid at its average rate by the
    frames' timestamps (each tick shows the frame on screen then), so frames land at their times. At most ``max_frames`` frames; a stream longer than ``max_seconds``, a frame of more than
    :data:`MAX_FRAME_PIXELS` pixels or more than :data:`MAX_VIDEO_BYTES` of frames is refused with a ``ValueError``.
    """
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1 or None, got {max_frames}")
    p = os.fspath(path)
    frames: list[torch.Tensor] = []
    with open_media(p, "video file") as container:
        if not container.streams.video:
            raise ValueError(f"{p!r} has no video stream")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.base_rate or stream.guessed_rate
        cc = stream.codec_context
        if int(cc.width or 0) * int(cc.height or 0) > MAX_FRAME_PIXELS:
            raise ValueError(f"{p!r}: video frames of {cc.width}x{cc.height} pixels are too large (at most "
                             f"{MAX_FRAME_PIXELS} pixels); scale it down first")
        size, resized = None, 0
        times: list[float | None] = []
        for frame in container.decode(stream):
            hw = (int(frame.height), int(frame.width))
            if size is None:
                size = hw
                if hw[0] * hw[1] > MAX_FRAME_PIXELS:
                    raise ValueError(f"{p!r}: video frames of {hw[1]}x{hw[0]} pixels are too large (at most "
                                     f"{MAX_FRAME_PIXELS} pixels); scale it down first")
            elif hw != size:
                if not resized:
                    logger.warning("video %s: frame %d is %dx%d, scaled to the first frame's %dx%d (the size "
                                   "changes part-way)", p, len(frames), hw[1], hw[0], size[1], size[0])
                resized += 1
                frame = frame.reformat(width=size[1], height=size[0])
            if max_seconds is not None and frame.time is not None and float(frame.time) > max_seconds:
                raise ValueError(f"{p!r}: the video is longer than {max_seconds:g} s, the most read; trim it first")
            if (len(frames) + 1) * size[0] * size[1] * 3 > MAX_VIDEO_BYTES:
                raise ValueError(f"{p!r}: more than {MAX_VIDEO_BYTES >> 30} GiB of decoded frames "
                                 f"({len(frames)} frames of {size[1]}x{size[0]}); trim or scale it down first")
            frames.append(torch.from_numpy(frame.to_ndarray(format="rgb24")))
            times.append(None if frame.time is None else float(frame.time))
            if max_frames is not None and len(frames) >= max_frames:
                break
    if not frames:
        raise ValueError(f"{p!r}: the video stream has no frames")
    out = torch.stack(frames)
    idx = _constant_rate_index(times, float(rate)) if rate else None
    if idx is not None:
        logger.warning("video %s has a variable frame rate: its %d frames are placed by their timestamps on a "
                       "constant %g fps grid (%d frames)", p, len(frames), float(rate), len(idx))
        out = out[idx]
    return out, float(rate) if rate else 0.0


def _constant_rate_index(times: list[float | None], rate: float) -> list[int] | None:
    """For frames shown at ``times`` (seconds), the frame on screen at each tick ``k / rate`` of a constant-rate
    grid (a quarter frame of slack for timestamp rounding); None when the frames already lie on that grid (within
    half a frame) or a timestamp is missing."""
    if len(times) < 2 or rate <= 0 or any(t is None for t in times):
        return None
    t0, dt = times[0], 1.0 / rate
    rel = [t - t0 for t in times]
    if all(abs(r - i * dt) <= 0.5 * dt for i, r in enumerate(rel)) or any(b < a for a, b in zip(rel, rel[1:], strict=False)):
        return None
    ticks = int(round(rel[-1] * rate)) + 1
    return [max(0, bisect.bisect_right(rel, k * dt + 0.25 * dt) - 1) for k in range(ticks)]


def read_video_frames(path: str | os.PathLike, max_frames: int | None = None) -> torch.Tensor:
    """Decode the first video stream as RGB: uint8 ``[F, H, W, 3]`` (at most ``max_frames`` frames); see
    :func:`read_video`."""
    return read_video(path, max_frames)[0]


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(height, width)`` of the first frame of an image (PNG, JPEG, WebP, ...); ValueError if it does not decode."""
    with open_media(path, "image") as container:
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
    with open_media(path, "image") as container:
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
    with open_media(path, "video file") as container:
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
    with open_media(path, "video file") as container:
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
