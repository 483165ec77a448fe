"""Given frames as a video guide: file or frames + fps -> 24 fps -> the model's area -> Wan2.2 VAE latent.

:func:`prepare_video` does the cheap part before any weights load: frame-rate conversion (nearest earlier
frame), the size (as image->AV: the model's area, sides multiples of 32, aspect kept; see
:func:`ovi_core.sizes.i2v_size_for_image`) and the checks; :meth:`VideoInput.encode` runs the Wan2.2 VAE on the
whole latent frames the frames fill and returns a :class:`~ovi_core.sampling.guides.Guide` with a per-frame mask;
:meth:`VideoInput.splice` puts the given frames back into the decoded video.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction

import torch
import torch.nn.functional as F

from ovi_core import sizes
from ovi_core.conditioning import ranges
from ovi_core.sampling.guides import Guide, check_mode

logger = logging.getLogger(__name__)

MIN_SIDE = 16
MAX_VIDEO_SECONDS = 60.0  # a guide or a clip to redo is at most 10 s; longer files are refused before they fill memory


def to_24fps(frames: torch.Tensor, fps: float) -> torch.Tensor:
    """Frames ``[N, H, W, 3]`` at ``fps`` -> ``[M, H, W, 3]`` at 24 fps, M = ceil(N * 24 / fps).

    Output frame ``k`` (shown at ``k / 24`` s) is the source frame on screen then: ``floor(k * fps / 24)``.
    """
    rate = ranges.frame_rate(fps)
    if rate == ranges.FPS:
        return frames
    n = frames.shape[0]
    m = math.ceil(Fraction(n) * ranges.FPS / rate)
    idx = [min(n - 1, math.floor(Fraction(k) * rate / ranges.FPS)) for k in range(m)]
    return frames[idx]


def _float_frames(frames: torch.Tensor) -> torch.Tensor:
    if frames.dtype == torch.uint8:
        return frames.float() / 255.0
    if not frames.is_floating_point():
        raise ValueError(f"frames must be float in [0, 1] or uint8, got {frames.dtype}")
    return frames.float()


@dataclass
class VideoInput:
    """Frames at 24 fps ready to encode.

    Attributes:
        frames: ``[N, H, W, 3]`` at 24 fps, float in [0, 1] or uint8, at the source size.
        height, width: the output size (multiples of 32).
        latent_frames: video latent frames of the clip (31 for 5 s).
        mode, until: of the resulting guide.
        exclude: optional latent-frame range ``(first, stop)`` left to the model (redo).
    """

    frames: torch.Tensor
    height: int
    width: int
    latent_frames: int
    mode: str = "replace"
    until: float = 1.0
    exclude: tuple[int, int] | None = None

    stream = "video"

    @property
    def covered(self) -> int:
        """Whole latent frames filled by the given frames."""
        return min(self.latent_frames, ranges.video_latents_covered(self.frames.shape[0]))

    def mask(self) -> torch.Tensor:
        """Bool ``[F]``: the latent frames this guide enforces."""
        m = ranges.span_mask(self.latent_frames, 0, self.covered)
        if self.exclude is not None:
            m[self.exclude[0] : self.exclude[1]] = False
        return m

    def pixels(self) -> torch.Tensor:
        """The frames of the covered latents, resized: ``[1, 3, 1 + 4 (n - 1), H', W']`` in [-1, 1].

        Bicubic, ``align_corners=False``, no clamp: frame 0 is exactly what image->AV feeds the VAE. Converted
        :data:`PIXEL_CHUNK` frames at a time (:func:`to_pixels`), so a large source is never float at its size whole.
        """
        used = 1 + ranges.FRAMES_PER_LATENT * (self.covered - 1)
        return to_pixels((self.frames[a : min(used, a + PIXEL_CHUNK)] for a in range(0, used, PIXEL_CHUNK)),
                         count=used, height=self.height, width=self.width)

    def encode(self, vae, *, device: torch.device | str = "cpu") -> Guide:
        """Wan2.2 VAE encode -> guide with latent ``[1, 48, F, H'/16, W'/16]`` and mask ``[F]``."""
        mask = self.mask()
        if not bool(mask.any()):
            raise ValueError("the video guide holds no latent frame (everything is being redone)")
        dtype = next(vae.parameters()).dtype
        with torch.no_grad():
            lat = vae.encode(self.pixels().to(device=device, dtype=dtype)).float().cpu()  # [1, 48, n, h, w]
        full = torch.zeros(1, lat.shape[1], self.latent_frames, *lat.shape[-2:])
        full[:, :, : lat.shape[2]] = lat
        logger.info("video guide: latent frames 0-%d of %d (pixel frames 0-%d) at %dx%d, mode %s",
                    self.covered - 1, self.latent_frames, 4 * (self.covered - 1), self.width, self.height, self.mode)
        return Guide("video", full, mask, self.mode, self.until)

    def splice(self, decoded: torch.Tensor) -> torch.Tensor:
        """Decoded frames ``[F', H', W', 3]`` with the given frames (resized, clamped) where the guide held them."""
        out = decoded.clone()
        mask = self.mask()
        for j in torch.nonzero(mask).flatten().tolist():
            a, b = ranges.video_frames_of_latent(j)
            b = min(b, out.shape[0], self.frames.shape[0])
            if a >= b:
                continue
            x = _float_frames(self.frames[a:b]).permute(0, 3, 1, 2)  # [n, 3, H, W] in [0, 1]
            if tuple(x.shape[-2:]) != (self.height, self.width):
                x = F.interpolate(x, size=(self.height, self.width), mode="bicubic", align_corners=False)
            out[a:b] = x.clamp(0, 1).permute(0, 2, 3, 1).to(out.dtype)
        return out


PIXEL_CHUNK = 8  # source frames converted to float and resized at once


def to_pixels(chunks: Iterable[torch.Tensor], *, count: int, height: int, width: int) -> torch.Tensor:
    """Frames given chunk by chunk (``[k, H, W, 3]``, uint8 or float in [0, 1], ``count`` in all) -> the VAE's input
    ``[1, 3, count, height, width]`` in [-1, 1]: each chunk scaled to [-1, 1] and resized (bicubic,
    ``align_corners=False``, no clamp) on its own, the same values as converting them all at once; only one
    chunk is ever float at the source's size."""
    out = torch.empty(1, 3, count, height, width)
    i = 0
    for chunk in chunks:
        x = _float_frames(chunk).permute(0, 3, 1, 2) * 2.0 - 1.0  # [k, 3, H, W]
        if tuple(x.shape[-2:]) != (height, width):
            x = F.interpolate(x, size=(height, width), mode="bicubic", align_corners=False)
        out[0, :, i : i + x.shape[0]] = x.permute(1, 0, 2, 3)
        i += x.shape[0]
    if i != count:
        raise ValueError(f"expected {count} frames, got {i}; the video is shorter than its header says, re-encode it")
    return out


def output_size(height: int, width: int, *, area: int) -> tuple[int, int]:
    """``(height, width)`` of a clip guided by a ``width x height`` video at the model's ``area`` (as image->AV);
    ValueError when it is too small or its aspect does not fit the model."""
    if height < MIN_SIDE or width < MIN_SIDE:
        raise ValueError(f"video frames of {width}x{height} are too small; give at least {MIN_SIDE}x{MIN_SIDE} "
                         "pixels")
    th, tw = sizes.i2v_size_for_image(height, width, area=area)
    try:
        sizes.validate_size(th, tw)
    except ValueError as e:
        raise ValueError(f"video of {width}x{height} does not fit the model: at its area it would be {tw}x{th}. {e}. "
                         "Crop it to a usual aspect ratio (between about 1:3 and 3:1).") from None
    return th, tw


def prepare_video(
    frames: torch.Tensor,
    fps: float,
    *,
    version: str,
    area: int,
    mode: str = "replace",
    until: float = 1.0,
    trim: bool = False,
) -> VideoInput:
    """Check frames and fix the output size for model ``version`` at ``area`` pixels (before weights load).

    Args:
        frames: ``[N, H, W, 3]`` (ComfyUI IMAGE, float in [0, 1]) or uint8 (decoded file).
        fps: their frame rate; converted to 24.
        trim: cut frames past the clip's end instead of refusing them (used for redoing an existing clip).
    Raises:
        ValueError: bad layout, too small, a size that does not fit the model, or longer than the clip
        (stating the maximum).
    """
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] not in (3, 4) or frames.shape[0] == 0:
        raise ValueError(f"video frames must be [N, H, W, 3] RGB (channel last), got {tuple(frames.shape)}")
    frames = frames[..., :3]
    check_mode(mode, until)
    spec = sizes.get_spec(version)
    th, tw = output_size(int(frames.shape[1]), int(frames.shape[2]), area=area)
    at24 = to_24fps(frames, fps)
    if at24.shape[0] > spec.frames:
        if not trim:
            raise ValueError(
                f"the video has {at24.shape[0]} frames at 24 fps ({at24.shape[0] / 24:.3f} s) but a clip of Ovi "
                f"{spec.version} holds at most {spec.frames} ({spec.frames / 24:.3f} s); trim it (in ComfyUI: the "
                f"guide node's start and max_seconds), load the 10 s model for up to "
                f"{sizes.MODEL_SPECS['1.1-10s'].frames} frames, or make a long clip (the CLI: leave out --seconds; "
                "nodes: OviLongClipSampler)"
            )
        at24 = at24[: spec.frames]
    return VideoInput(frames=at24, height=th, width=tw, latent_frames=spec.video_latent_frames, mode=mode,
                      until=float(until))


def read_video_file(path: str | os.PathLike, *, seconds: float | None = None) -> tuple[torch.Tensor, float]:
    """Decode a video file: ``(frames uint8 [N, H, W, 3], fps)``; at most :data:`MAX_VIDEO_SECONDS` of it, or with
    ``seconds`` only the source frames shown in the first ``seconds`` (plus one), never the rest of a longer file."""
    from ovi_core.io.media import open_media, read_video

    if seconds is None:
        return read_video(path, max_seconds=MAX_VIDEO_SECONDS)
    with open_media(path, "video file") as c:
        s = c.streams.video[0] if c.streams.video else None
        rate = (s.average_rate or s.base_rate or s.guessed_rate) if s is not None else None
    if not rate:
        raise ValueError(f"{os.fspath(path)!r}: the video stream has no frame rate; give the frames and fps instead")
    frames, _ = read_video(path, max_frames=math.floor(float(seconds) * float(rate)) + 1)
    return frames, float(rate)


def encode_video_guide(
    vae,
    frames: torch.Tensor,
    fps: float,
    *,
    version: str,
    area: int,
    mode: str = "replace",
    until: float = 1.0,
    device: torch.device | str = "cpu",
) -> tuple[VideoInput, Guide]:
    """:func:`prepare_video` then :meth:`VideoInput.encode` with ``vae`` on ``device``: ``(input, guide)``."""
    inp = prepare_video(frames, fps, version=version, area=area, mode=mode, until=until)
    return inp, inp.encode(vae, device=device)
