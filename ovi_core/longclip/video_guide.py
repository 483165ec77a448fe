"""A given video as a guide of every long-clip window, read and encoded one window at a time.

:class:`FileVideo` (a file, decoded lazily) and :class:`TensorVideo` (frames already in memory, e.g. a ComfyUI
IMAGE batch) both present the video at 24 fps (nearest earlier source frame, as
:func:`ovi_core.conditioning.video_in.to_24fps`): ``frames24`` frames of ``height x width`` pixels, and
:meth:`frames` returns one range of them as uint8/float ``[n, H, W, 3]``.

:class:`WindowVideo` turns a source into the video latent of one window, in the window's own coordinates:
window ``k`` starts at pixel frame ``S_k`` (``plan.windows[k].frame_start``), so its latent frame 0 is pixel frame
``S_k`` and its latent frame ``j >= 1`` pixel frames ``S_k + 4j - 3 .. S_k + 4j`` -- the layout of a single clip
that starts there. It reads only the frames of the whole latent frames the video fills in that window, resizes
them exactly as a single-clip video guide (:meth:`VideoInput.pixels`), VAE-encodes them and keeps only the
latent ``[1, 48, c, h, w]``; :func:`ovi_core.longclip.runner.window_guides` places it in the window's video guide
(mask + clean latent), where it wins over the frames carried from the previous window. Memory therefore holds
one window's frames at a time, whatever the video's length.

A source may start later in the clip (``offset``: its frame 0 is clip frame ``offset``, in 24-fps frames). A
window's latent frame ``j >= 1`` is then guided when its four frames and the frame before them are given: the
chunk ``S_k + 4 (j0 - 1) .. S_k + 4 j1 - 4`` is encoded as a clip of its own, whose latent 0 (that one frame,
encoded alone as a first frame) is dropped and whose latents ``1..`` lie on the window's grid (``S_k`` is a
multiple of 4). So a video placed at ``t`` seconds holds clip frames ``4 ceil(24 t / 4) + 1`` on (at most four
frames after its start are left to the model; none when ``24 t`` is a multiple of 4).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from fractions import Fraction

import torch
import torch.nn.functional as F

from ovi_core.conditioning import ranges
from ovi_core.conditioning.video_in import VideoInput, output_size
from ovi_core.longclip.plan import WindowPlan

logger = logging.getLogger(__name__)

FRAMES_PER_LATENT = ranges.FRAMES_PER_LATENT
CHUNK = 16  # frames decoded (at the file's size) and converted at once


def _source_index(k: int, fps: Fraction) -> int:
    return math.floor(Fraction(k) * fps / ranges.FPS)


def offset_frames(seconds: float | str | Fraction) -> int:
    """A video's start in the clip, seconds -> 24-fps clip frame (rounded to the nearest frame)."""
    return round(ranges.exact_seconds(seconds, what="video offset") * ranges.FPS)


def held_frames(first: int, stop: int) -> tuple[int, int]:
    """Clip frames ``[a, b)`` a video given on clip frames ``[first, stop)`` holds (whole latent frames whose
    previous frame is given too, or latent frame 0 when ``first == 0``; see the module docstring); ``(0, 0)``
    when none."""
    a = 0 if first <= 0 else FRAMES_PER_LATENT * -(-first // FRAMES_PER_LATENT) + 1
    b = 1 + FRAMES_PER_LATENT * ((stop - 1) // FRAMES_PER_LATENT) if stop > 0 else 0
    return (a, b) if b > a else (0, 0)


class FileVideo:
    """A video file at 24 fps, decoded one frame range at a time (see the module docstring)."""

    def __init__(self, path: str | os.PathLike, *, offset: int = 0) -> None:
        from ovi_core.io.media import video_info

        self.offset = _check_offset(offset)  # clip frame of the video's first frame
        self.path = os.fspath(path)
        n, fps, self.height, self.width = video_info(self.path)
        self.fps = ranges.exact_seconds(fps, what="fps")
        if self.fps <= 0 or n < 1:
            raise ValueError(f"{self.path!r}: no frames or no frame rate")
        self.source_frames = n
        self.frames24 = math.ceil(Fraction(n) * ranges.FPS / self.fps)

    def frames(self, start: int, stop: int) -> torch.Tensor:
        """24-fps frames ``[start, stop)`` as uint8 ``[n, H, W, 3]``; a file that ends early repeats its last frame."""
        from ovi_core.io.media import iter_video_frames

        stop = min(stop, self.frames24)
        idx = [min(self.source_frames - 1, _source_index(k, self.fps)) for k in range(start, stop)]
        out = list(iter_video_frames(self.path, idx))
        if not out:
            raise ValueError(f"{self.path!r}: no frame at 24 fps frame {start} (the file is shorter than its header "
                             "says); re-encode it")
        if len(out) < len(idx):
            logger.warning("%s: %d frames short of its header; repeating the last frame", self.path,
                           len(idx) - len(out))
            out += [out[-1]] * (len(idx) - len(out))
        return torch.stack(out)

    def chunks(self, start: int, stop: int, size: int = CHUNK) -> Iterator[torch.Tensor]:
        """:meth:`frames` ``[start, stop)`` as uint8 chunks of at most ``size`` frames, from one sequential decode
        (only one chunk at the file's size in memory)."""
        from ovi_core.io.media import iter_video_frames

        stop = min(stop, self.frames24)
        idx = [min(self.source_frames - 1, _source_index(k, self.fps)) for k in range(start, stop)]
        buf, last, sent = [], None, 0
        for frame in iter_video_frames(self.path, idx):
            buf.append(frame)
            last = frame
            if len(buf) == size:
                yield torch.stack(buf)
                sent, buf = sent + len(buf), []
        if last is None and idx:
            raise ValueError(f"{self.path!r}: no frame at 24 fps frame {start} (the file is shorter than its header "
                             "says); re-encode it")
        missing = len(idx) - sent - len(buf)
        if missing:
            logger.warning("%s: %d frames short of its header; repeating the last frame", self.path, missing)
        buf += [last] * missing
        for a in range(0, len(buf), size):
            yield torch.stack(buf[a : a + size])




def _check_offset(offset: int) -> int:
    if isinstance(offset, bool) or int(offset) != offset or offset < 0:
        raise ValueError(f"a video's offset is a clip frame index >= 0 (24 fps), got {offset!r}")
    return int(offset)


class TensorVideo:
    """Frames ``[N, H, W, 3]`` (float in [0, 1] or uint8) at ``fps``, presented at 24 fps without copying.

    As a guide source of the nodes (``stream == "video"``), :meth:`splice` puts the frames back into a decoded
    long clip.
    """

    stream = "video"
    mode = "replace"  # the guide mode a node asked for (a long clip's guides take it)

    def __init__(self, frames: torch.Tensor, fps: float, *, offset: int = 0) -> None:
        self.offset = _check_offset(offset)  # clip frame of the video's first frame
        if frames.ndim != 4 or frames.shape[-1] not in (3, 4) or frames.shape[0] == 0:
            raise ValueError(f"video frames must be [N, H, W, 3] RGB (channel last), got {tuple(frames.shape)}")
        self._frames = frames[..., :3]
        self.fps = ranges.frame_rate(fps)
        self.height, self.width = int(frames.shape[1]), int(frames.shape[2])
        self.source_frames = int(frames.shape[0])
        self.frames24 = math.ceil(Fraction(self.source_frames) * ranges.FPS / self.fps)

    def frames(self, start: int, stop: int) -> torch.Tensor:
        stop = min(stop, self.frames24)
        idx = [min(self.source_frames - 1, _source_index(k, self.fps)) for k in range(start, stop)]
        return self._frames[idx]

    def chunks(self, start: int, stop: int, size: int = 16) -> Iterator[torch.Tensor]:
        """:meth:`frames` ``[start, stop)`` in chunks of at most ``size`` frames."""
        stop = min(stop, self.frames24)
        for a in range(start, stop, size):
            yield self.frames(a, min(stop, a + size))

    def splice(self, decoded: torch.Tensor) -> torch.Tensor:
        """Decoded frames ``[F, H', W', 3]`` of a clip guided with these frames (from clip frame ``offset``), with
        them put back (resized, clamped) on the frames the guides held (:func:`held_frames`; every window's latent
        grid is aligned, see :mod:`.plan`)."""
        a, b = held_frames(self.offset, min(decoded.shape[0], self.offset + self.frames24))
        if b <= a:
            return decoded
        return _resized_into(decoded, self.chunks(a - self.offset, b - self.offset), a)


class WindowVideo:
    """A video source as the per-window video latents of a long clip (see the module docstring).

    ``source``: :class:`FileVideo` / :class:`TensorVideo`; ``plan``: the clip's windows; ``area``: the model's
    pixel area (the output size is the source's aspect at that area, as image->AV). Checked on construction
    (before any weights load).
    """

    def __init__(self, source, plan: WindowPlan, *, area: int) -> None:
        th, tw = output_size(source.height, source.width, area=area)
        self.source, self.plan = source, plan
        self.height, self.width = th, tw
        self.first = int(getattr(source, "offset", 0))  # clip frame of the source's frame 0
        if self.first >= plan.frames:
            raise ValueError(f"the video starts at {self.first / ranges.FPS:.3f} s, at or past the clip's end "
                             f"({(plan.frames - 1) / ranges.FPS:.3f} s); give a smaller offset or a longer clip")
        self.stop = min(self.first + source.frames24, plan.frames)  # clip frames [first, stop) are given
        self.frames = self.stop - self.first  # the given frames the clip uses
        if held_frames(self.first, self.stop)[1] == 0:
            raise ValueError(f"the video ({source.frames24} frames at 24 fps from clip frame {self.first}) holds no "
                             "whole latent frame (4 frames and the one before them); give a longer video")

    def span(self, index: int) -> tuple[int, int]:
        """Latent frames ``[j0, j1)`` of window ``index`` that the given video holds (``(0, 0)``: none)."""
        s = self.plan.windows[index].frame_start
        if self.stop <= s:
            return 0, 0
        j1 = min(self.plan.window_latents, (self.stop - 1 - s) // FRAMES_PER_LATENT + 1)
        j0 = 0 if self.first <= s else -(-(self.first - s) // FRAMES_PER_LATENT) + 1
        return (j0, j1) if j1 > j0 else (0, 0)

    def covered(self, index: int) -> int:
        """Latent frames of window ``index`` that the given video holds (0: none)."""
        j0, j1 = self.span(index)
        return j1 - j0

    @property
    def held(self) -> tuple[int, int]:
        """Clip frames ``[a, b)`` held by the guides (the same in every window: each grid is aligned, stride % 4 ==
        0)."""
        return held_frames(self.first, self.stop)

    @property
    def guided_frames(self) -> int:
        """End of the clip frames held by the guides (see :attr:`held`)."""
        return self.held[1]

    def window_input(self, index: int) -> VideoInput | None:
        """Window ``index``'s given frames as a single-clip :class:`VideoInput` (None when it has none); from the
        frame before latent frame ``j0`` when ``j0 >= 1`` (see the module docstring)."""
        j0, j1 = self.span(index)
        if j1 <= j0:
            return None
        s = self.plan.windows[index].frame_start
        p0 = s if j0 == 0 else s + FRAMES_PER_LATENT * (j0 - 1)
        p1 = s + FRAMES_PER_LATENT * (j1 - 1) + 1
        frames = self.source.frames(p0 - self.first, p1 - self.first)
        return VideoInput(frames=frames, height=self.height, width=self.width, latent_frames=self.plan.window_latents)

    def latent(self, index: int, vae, *, device: torch.device | str = "cpu") -> torch.Tensor | None:
        """VAE latent ``[1, 48, j1 - j0, h, w]`` (float32, CPU) of window ``index``'s latent frames ``[j0, j1)``
        (:meth:`span`), or None. The frames of :meth:`window_input`, read and resized chunk by chunk."""
        from ovi_core.conditioning.video_in import to_pixels

        j0, j1 = self.span(index)
        if j1 <= j0:
            return None
        s = self.plan.windows[index].frame_start
        p0 = s if j0 == 0 else s + FRAMES_PER_LATENT * (j0 - 1)
        n = s + FRAMES_PER_LATENT * (j1 - 1) + 1 - p0
        pixels = to_pixels(self.source.chunks(p0 - self.first, p0 - self.first + n), count=n, height=self.height,
                           width=self.width)
        dtype = next(vae.parameters()).dtype
        with torch.no_grad():
            lat = vae.encode(pixels.to(device=device, dtype=dtype)).float().cpu()
        del pixels
        if j0 > 0:
            lat = lat[:, :, 1:]  # the lone context frame; latents 1.. are window latents j0..
        logger.info("window %d: video guide on latent frames %d-%d (clip frames %d-%d)", index + 1, j0, j1 - 1,
                    s + (0 if j0 == 0 else 4 * j0 - 3), s + 4 * (j1 - 1))
        return lat

    def window_latent(self, index: int, vae, *, device: torch.device | str = "cpu"):
        """``(latent, j0)`` for :func:`ovi_core.longclip.runner.sample_windows`' ``given_video``, or None."""
        lat = self.latent(index, vae, device=device)
        return None if lat is None else (lat, self.span(index)[0])

    def splice(self, start: int, frames: torch.Tensor) -> torch.Tensor:
        """Output frames ``[n, H, W, 3]`` starting at clip frame ``start`` with the given frames (resized, clamped)
        where the guides held them."""
        a, b = self.held
        lo, hi = max(start, a), min(start + frames.shape[0], b)
        if hi <= lo:
            return frames
        return _resized_into(frames, self.source.chunks(lo - self.first, hi - self.first), lo - start)


def _resized_into(out: torch.Tensor, given, at: int) -> torch.Tensor:
    """``out`` ``[F, H, W, 3]`` with ``given`` (``[n, h, w, 3]`` uint8 or float in [0, 1], or an iterable of such
    chunks) resized to ``H x W`` (bicubic, clamped, as :meth:`VideoInput.splice`) at frames ``[at, at + n)``; one
    chunk at a time is float at the source's size."""
    out = out.clone()
    for chunk in ([given] if isinstance(given, torch.Tensor) else given):
        x = (chunk.float() / 255.0 if chunk.dtype == torch.uint8 else chunk.float()).permute(0, 3, 1, 2)
        if tuple(x.shape[-2:]) != tuple(out.shape[1:3]):
            x = F.interpolate(x, size=tuple(out.shape[1:3]), mode="bicubic", align_corners=False)
        out[at : at + x.shape[0]] = x.clamp(0, 1).permute(0, 2, 3, 1).to(out.dtype)
        at += x.shape[0]
    return out
