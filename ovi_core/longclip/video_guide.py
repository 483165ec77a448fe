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
"""

from __future__ import annotations

import logging
import math
import os
from fractions import Fraction

import torch
import torch.nn.functional as F

from ovi_core.conditioning import ranges
from ovi_core.conditioning.video_in import VideoInput, output_size
from ovi_core.longclip.plan import WindowPlan

logger = logging.getLogger(__name__)


def _source_index(k: int, fps: Fraction) -> int:
    return math.floor(Fraction(k) * fps / ranges.FPS)


class FileVideo:
    """A video file at 24 fps, decoded one frame range at a time (see the module docstring)."""

    def __init__(self, path: str | os.PathLike) -> None:
        from ovi_core.io.media import video_info

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




class TensorVideo:
    """Frames ``[N, H, W, 3]`` (float in [0, 1] or uint8) at ``fps``, presented at 24 fps without copying.

    As a guide source of the nodes (``stream == "video"``), :meth:`splice` puts the frames back into a decoded
    long clip.
    """

    stream = "video"

    def __init__(self, frames: torch.Tensor, fps: float) -> None:
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

    def splice(self, decoded: torch.Tensor) -> torch.Tensor:
        """Decoded frames ``[F, H', W', 3]`` of a clip guided from frame 0 with these frames (resized, clamped) on
        the whole latent frames they fill (every window's latent grid is aligned, see :mod:`.plan`)."""
        n = min(decoded.shape[0], 1 + ranges.FRAMES_PER_LATENT * ((self.frames24 - 1) // ranges.FRAMES_PER_LATENT))
        return _resized_into(decoded, self.frames(0, n), 0)


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
        self.frames = min(source.frames24, plan.frames)  # the given frames the clip uses

    def covered(self, index: int) -> int:
        """Whole latent frames of window ``index`` that the given video fills (0: none)."""
        avail = self.frames - self.plan.windows[index].frame_start
        return min(self.plan.window_latents, ranges.video_latents_covered(avail))

    @property
    def guided_frames(self) -> int:
        """Pixel frames ``[0, n)`` of the clip held by the guides (every window's grid is aligned: stride % 4 == 0)."""
        ends = [w.frame_start + 1 + ranges.FRAMES_PER_LATENT * (c - 1)
                for w in self.plan.windows if (c := self.covered(w.index)) > 0]
        return max(ends, default=0)

    def window_input(self, index: int) -> VideoInput | None:
        """Window ``index``'s given frames as a single-clip :class:`VideoInput` (None when it has none)."""
        c = self.covered(index)
        if c <= 0:
            return None
        start = self.plan.windows[index].frame_start
        frames = self.source.frames(start, start + 1 + ranges.FRAMES_PER_LATENT * (c - 1))
        return VideoInput(frames=frames, height=self.height, width=self.width, latent_frames=self.plan.window_latents)

    def latent(self, index: int, vae, *, device: torch.device | str = "cpu") -> torch.Tensor | None:
        """VAE latent ``[1, 48, c, h, w]`` (float32, CPU) of window ``index``'s given frames, or None."""
        inp = self.window_input(index)
        if inp is None:
            return None
        dtype = next(vae.parameters()).dtype
        with torch.no_grad():
            lat = vae.encode(inp.pixels().to(device=device, dtype=dtype)).float().cpu()
        logger.info("window %d: video guide on latent frames 0-%d (clip frames %d-%d)", index + 1,
                    lat.shape[2] - 1, self.plan.windows[index].frame_start,
                    self.plan.windows[index].frame_start + 4 * (lat.shape[2] - 1))
        return lat

    def splice(self, start: int, frames: torch.Tensor) -> torch.Tensor:
        """Output frames ``[n, H, W, 3]`` starting at clip frame ``start`` with the given frames (resized, clamped)
        where the guides held them."""
        stop = min(start + frames.shape[0], self.guided_frames)
        if stop <= start:
            return frames
        return _resized_into(frames, self.source.frames(start, stop), 0)


def _resized_into(out: torch.Tensor, given: torch.Tensor, at: int) -> torch.Tensor:
    """``out`` ``[F, H, W, 3]`` with ``given`` ``[n, h, w, 3]`` (uint8 or float in [0, 1]) resized to ``H x W``
    (bicubic, clamped, as :meth:`VideoInput.splice`) at frames ``[at, at + n)``."""
    x = (given.float() / 255.0 if given.dtype == torch.uint8 else given.float()).permute(0, 3, 1, 2)
    if tuple(x.shape[-2:]) != tuple(out.shape[1:3]):
        x = F.interpolate(x, size=tuple(out.shape[1:3]), mode="bicubic", align_corners=False)
    out = out.clone()
    out[at : at + x.shape[0]] = x.clamp(0, 1).permute(0, 2, 3, 1).to(out.dtype)
    return out
