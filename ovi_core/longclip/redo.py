"""Redo a time range of a clip of any length, re-running only the windows that cover it.

``generate --source CLIP --redo audio:A-B`` (or ``video:A-B``) on a clip longer than one window of the model:

- :func:`plan_redo` places as few windows as cover the range (one, centred on it, when it fits with half a second
  of context on each side; else a chain at the long-clip stride starting just before it), on the clip's own
  frame grid (window starts are multiples of 4 frames, so their latent frames are the clip's) and audio grid
  (each window's audio starts at the audio latent nearest its first frame, as in a long clip).
- :func:`redo_stream` samples those windows with the one guide mechanism: every window holds the source's
  frames (encoded window by window) and sound track (encoded once) as guides, except the range, which is left to
  the model; a window after another holds the end of the previous one where the range crosses their overlap
  (the carried guide of a long clip), so the redone part is one piece. Only the redone stream is decoded.
- The output is the source, frame for frame and sample for sample (the decoded frames and 16 kHz samples of the
  source, unchanged), except the range of the redone stream, which comes from the windows: window ``k`` gives
  the part of the range up to the middle of its overlap with window ``k + 1``.

Memory: one window's frames and latents at a time, plus the 16 kHz sound track (4 MB a minute); the source's
frames are read and written in chunks.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction

import torch
import torch.nn.functional as F

from ovi_core.conditioning import ranges
from ovi_core.longclip.plan import (
    FRAMES_PER_LATENT,
    MIN_SECONDS,
    SAMPLES_PER_LATENT,
    Window,
    WindowPlan,
    audio_start_latent,
    plan_windows,
)

logger = logging.getLogger(__name__)

CONTEXT_FRAMES = 12  # half a second of the source on each side of the range, where the windows allow it
CHUNK_FRAMES = 16  # source frames read and written at once


@dataclass(frozen=True)
class RedoPlan:
    """Where a redo happens. ``stream``: ``"audio"`` or ``"video"``; ``frames`` / ``samples``: the source's length
    (24 fps / 16 kHz); ``first, stop``: the redone range of ``stream`` (pixel frames, or samples) -- whole latents
    touching the asked range, as a single-clip redo; ``plan``: the re-run windows in clip coordinates;
    ``cuts``: window ``k`` gives ``[cuts[k], cuts[k + 1])`` of the range."""

    stream: str
    frames: int
    samples: int
    first: int
    stop: int
    plan: WindowPlan
    cuts: tuple[int, ...]

    def describe(self) -> str:
        unit, rate = ("frames", ranges.FPS) if self.stream == "video" else ("samples", ranges.SAMPLE_RATE)
        starts = ", ".join(f"{w.frame_start / ranges.FPS:.2f} s" for w in self.plan.windows)
        return (f"redo {self.stream} {unit} {self.first}-{self.stop - 1} ({self.first / rate:.3f}-{self.stop / rate:.3f}"
                f" s) of a {self.frames / ranges.FPS:.2f} s clip with {self.plan.num_windows} window(s) of "
                f"{self.plan.window_frames} frames starting at {starts}; everything else is the source's own")


def _floor4(x: int) -> int:
    return FRAMES_PER_LATENT * (x // FRAMES_PER_LATENT)


def _ceil4(x: int) -> int:
    return -FRAMES_PER_LATENT * (-x // FRAMES_PER_LATENT)


def plan_redo(stream: str, start: float | Fraction, end: float | Fraction, *, frames: int, samples: int,
              version: str, overlap: float = 2.0) -> RedoPlan:
    """The windows that redo ``[start, end)`` seconds of ``stream`` of a clip of ``frames`` frames (24 fps) and
    ``samples`` samples (16 kHz); see the module docstring. ``ValueError`` for a range past the clip's end."""
    if stream not in ranges.STREAMS:
        raise ValueError(f"stream must be 'audio' or 'video', got {stream!r}")
    base = plan_windows(max(MIN_SECONDS, (frames - 1) / ranges.FPS), version=version, overlap_seconds=overlap,
                        crossfade_seconds=0)
    wf, la = base.window_frames, base.window_audio_latents
    if stream == "video":
        length = 1 + math.ceil((frames - 1) / FRAMES_PER_LATENT)
        j0, j1 = ranges.redo_latents("video", start, end, length=length, clip_seconds=frames / ranges.FPS)
        first, stop = ranges.video_frames_of_latent(j0)[0], min(frames, ranges.video_frames_of_latent(j1 - 1)[1])
        pf0, pf1 = first, stop
    else:
        length = -(-samples // SAMPLES_PER_LATENT)
        j0, j1 = ranges.redo_latents("audio", start, end, length=length, clip_seconds=samples / ranges.SAMPLE_RATE)
        first, stop = j0 * SAMPLES_PER_LATENT, min(samples, j1 * SAMPLES_PER_LATENT)
        pf0 = math.floor(Fraction(first * ranges.FPS, ranges.SAMPLE_RATE))
        pf1 = math.ceil(Fraction(stop * ranges.FPS, ranges.SAMPLE_RATE)) + 1
    if stop <= first:
        raise ValueError(f"the {stream} range {float(start):g}-{float(end):g} s holds nothing of the clip")
    last = _ceil4(max(0, frames - wf))  # the latest window start that still ends at the clip's end
    if pf1 - pf0 + 2 * CONTEXT_FRAMES <= wf:
        n = 1
        t0 = min(max(0, _floor4((pf0 + pf1 - wf) // 2)), last)
    else:
        t0 = max(0, _floor4(pf0 - CONTEXT_FRAMES))
        n = 1 + max(0, math.ceil((pf1 + CONTEXT_FRAMES - t0 - wf) / base.stride))
        excess = t0 + (n - 1) * base.stride - last
        if excess > 0:
            t0 = max(0, t0 - _ceil4(excess))
    starts = [t0 + k * base.stride for k in range(n)]
    assert starts[0] <= pf0 and starts[-1] + wf >= min(pf1, frames), (starts, pf0, pf1)
    wins, cuts = [], [first]
    for k, s in enumerate(starts):
        a = audio_start_latent(s)
        prev = audio_start_latent(starts[k - 1]) if k else 0
        wins.append(Window(index=k, frame_start=s, audio_start=a, video_overlap=base.overlap_latents if k else 0,
                           audio_overlap=(prev + la - a) if k else 0))
        if k:
            mid = s + base.overlap_frames // 2 if stream == "video" else \
                a * SAMPLES_PER_LATENT + (prev + la - a) * SAMPLES_PER_LATENT // 2
            cuts.append(min(max(mid, first), stop))
    cuts.append(stop)
    plan = dataclasses.replace(base, windows=tuple(wins), seams=())
    return RedoPlan(stream=stream, frames=frames, samples=samples, first=first, stop=stop, plan=plan,
                    cuts=tuple(cuts))


def _kept_latents(rp: RedoPlan, index: int, count: int) -> torch.Tensor:
    """Bool ``[count]``: window ``index``'s latent frames that hold the source (a video redo leaves those touching
    its range to the model)."""
    keep = torch.ones(count, dtype=torch.bool)
    if rp.stream != "video":
        return keep
    s = rp.plan.windows[index].frame_start
    for i in range(count):
        a, b = ranges.video_frames_of_latent(i)
        keep[i] = not (s + a < rp.stop and s + b > rp.first)
    return keep


def _to_uint8(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Decoded frames ``[n, h, w, 3]`` in [0, 1] -> uint8 ``[n, height, width, 3]`` (bicubic when the size differs,
    rounded as the MP4 writer does)."""
    x = frames.float()
    if tuple(x.shape[1:3]) != (height, width):
        x = F.interpolate(x.permute(0, 3, 1, 2), size=(height, width), mode="bicubic", align_corners=False)
        x = x.permute(0, 2, 3, 1)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def redo_stream(
    pipe,
    conds,
    rp: RedoPlan,
    *,
    source,
    track: torch.Tensor,
    settings,
    guide_mode: str = "replace",
    progress=None,
    check_interrupt: Callable[[], None] | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """The redone clip as ``(frames uint8 [n, H, W, 3], samples [1, m] or None)`` chunks in order, for
    :class:`~ovi_core.longclip.stream.ClipStreamWriter` (the samples, all of them, come with the first chunk).

    ``pipe``: an :class:`~ovi_core.pipeline.OviPipeline`; ``conds``: one conditioning per window of ``rp.plan``;
    ``source``: a :class:`~.video_guide.FileVideo` / :class:`~.video_guide.TensorVideo` at its own size ``H x W``
    (the output's size); ``track``: its sound, 16 kHz mono ``[1, T]``; ``settings``: the sampling settings (window
    ``k`` uses ``seed + k``).
    """
    from ovi_core.conditioning.video_in import output_size, to_pixels
    from ovi_core.longclip.job import track_latents
    from ovi_core.longclip.runner import sample_windows
    from ovi_core.pipeline import decode_audio, decode_video
    from ovi_core.runtime.estimate import dit_tokens_for_area
    from ovi_core.runtime.memory import dit_on_device, on_device

    dev, off = pipe.device, pipe._offload
    h, w = output_size(source.height, source.width, area=pipe.target_area)
    plan = rp.plan
    vae_dtype = next(pipe.video_vae.parameters()).dtype
    codec_dtype = next(pipe.audio_codec.parameters()).dtype
    with on_device(pipe.audio_codec, dev, offload=off):
        alat, _ = track_latents(pipe.audio_codec, track, device=dev, dtype=codec_dtype)
    amask = torch.ones(alat.shape[1], dtype=torch.bool)
    if rp.stream == "audio":
        amask[rp.first // SAMPLES_PER_LATENT : -(-rp.stop // SAMPLES_PER_LATENT)] = False

    def given_video(k: int):
        s = plan.windows[k].frame_start
        n = min(s + plan.window_frames, rp.frames) - s
        n = 1 + FRAMES_PER_LATENT * ((n - 1) // FRAMES_PER_LATENT)  # whole latent frames (as VideoInput.pixels)
        pixels = to_pixels(source.chunks(s, s + n), count=n, height=h, width=w)  # read and resized chunk by chunk
        with on_device(pipe.video_vae, dev, offload=off), torch.no_grad():
            lat = pipe.video_vae.encode(pixels.to(device=dev, dtype=vae_dtype)).float().cpu()
        del pixels
        return lat, 0, _kept_latents(rp, k, lat.shape[2])

    windows = sample_windows(
        pipe.model, conds, plan, height=h, width=w, settings=settings, given_audio=alat, given_audio_mask=amask,
        given_video=given_video, guide_mode=guide_mode, device=dev, dtype=pipe.dtype, progress=progress,
        check_interrupt=check_interrupt,
        place=lambda: dit_on_device(pipe.model, dev, memory_mode=pipe.memory_mode, blocks_on_gpu=pipe.blocks_on_gpu,
                                    tokens=dit_tokens_for_area(pipe.target_area, version=pipe.version)),
    )

    def source_frames(a: int, b: int, samples: torch.Tensor | None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for chunk in source.chunks(a, b, CHUNK_FRAMES):
            yield chunk, samples
            samples = None
        if a >= b and samples is not None:
            yield torch.zeros(0, source.height, source.width, 3, dtype=torch.uint8), samples

    if rp.stream == "audio":
        out = track.clone()
        for k, lat in enumerate(windows):
            with on_device(pipe.audio_codec, dev, offload=off):
                wave = decode_audio(pipe.audio_codec, lat.audio, device=dev, dtype=codec_dtype)  # [1, la * 512]
            a, b, s0 = rp.cuts[k], rp.cuts[k + 1], plan.windows[k].sample_start
            n = max(0, min(b, s0 + wave.shape[1]) - a)
            out[:, a : a + n] = wave[:, a - s0 : a - s0 + n]
        yield from source_frames(0, rp.frames, out)
        return
    pending: torch.Tensor | None = track
    cursor = 0
    for k, lat in enumerate(windows):
        a, b, s0 = rp.cuts[k], rp.cuts[k + 1], plan.windows[k].frame_start
        for chunk in source_frames(cursor, a, pending):
            yield chunk
            pending = None
        with on_device(pipe.video_vae, dev, offload=off):
            frames = decode_video(pipe.video_vae, lat.video, device=dev, dtype=vae_dtype)
        yield _to_uint8(frames[a - s0 : b - s0], source.height, source.width), pending
        pending, cursor = None, b
        del frames
    yield from source_frames(cursor, rp.frames, pending)
