"""Model variants, output sizes, latent shapes, first-frame preprocessing and the official sampling defaults."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

VIDEO_LATENT_CHANNELS = 48
AUDIO_LATENT_CHANNELS = 20
SPATIAL_DOWNSAMPLE = 16  # Wan2.2 VAE; the DiT patchifies 2x2 more, hence sides in multiples of 32
SIDE_MULTIPLE = 32
MAX_SIDE = 4096
FPS = 24
SAMPLE_RATE = 16000


@dataclass(frozen=True)
class ModelSpec:
    """One official checkpoint variant (``NAME_TO_MODEL_SPECS_MAP`` of the reference engine)."""

    version: str  # "1.0", "1.1", "1.1-10s"
    official_name: str  # the reference engine's model_name
    filename: str  # checkpoint file in chetwinlow1/Ovi
    area: int  # target pixel area of the output
    frames: int  # pixel frames at 24 fps
    video_latent_frames: int
    audio_latent_length: int
    caption_format: str  # "1.0": <AUDCAP>...<ENDAUDCAP>;  "1.1": "Audio: ..." at the end of the prompt

    @property
    def seconds(self) -> float:
        return self.frames / FPS


MODEL_SPECS: dict[str, ModelSpec] = {
    "1.0": ModelSpec("1.0", "720x720_5s", "model.safetensors", 720 * 720, 121, 31, 157, "1.0"),
    "1.1": ModelSpec("1.1", "960x960_5s", "model_960x960.safetensors", 960 * 960, 121, 31, 157, "1.1"),
    "1.1-10s": ModelSpec("1.1-10s", "960x960_10s", "model_960x960_10s.safetensors", 960 * 960, 241, 61, 314, "1.1"),
}

DEFAULTS: dict[str, object] = {
    "steps": 50,
    "solver": "unipc",
    "shift": 5.0,
    "video_guidance_scale": 4.0,
    "audio_guidance_scale": 3.0,
    "slg_layer": 11,
    "seed": 103,
    "video_negative_prompt": "jitter, bad hands, blur, distortion",
    "audio_negative_prompt": "robotic, muffled, echo, distorted",
    "fps": FPS,
    "sample_rate": SAMPLE_RATE,
    "height": 704,
    "width": 1280,
}


def get_spec(version: str) -> ModelSpec:
    """The spec of ``version`` ("1.0", "1.1", "1.1-10s"; the official names such as "960x960_10s" work too)."""
    if version in MODEL_SPECS:
        return MODEL_SPECS[version]
    for spec in MODEL_SPECS.values():
        if version == spec.official_name:
            return spec
    raise ValueError(f"unknown Ovi version {version!r}; choose one of {', '.join(MODEL_SPECS)}")


def snap_hw_to_area(h: int, w: int, *, area: int) -> tuple[int, int]:
    """Rescale ``(h, w)`` to ``area`` keeping the aspect ratio, then round each side to the nearest multiple of 32.

    As the reference ``snap_hw_to_multiple_of_32``: Python ``round`` (half to even) twice, minimum side 32.
    ``area <= 0`` skips the rescale. Example: (720, 720) at 720*720 -> (704, 704).
    """
    if h <= 0 or w <= 0:
        raise ValueError(f"height and width must be positive, got {h}x{w}")
    if area > 0:
        scale = math.sqrt(area / float(h * w))
        h, w = int(round(h * scale)), int(round(w * scale))
    return max(SIDE_MULTIPLE, round(h / SIDE_MULTIPLE) * SIDE_MULTIPLE), max(
        SIDE_MULTIPLE, round(w / SIDE_MULTIPLE) * SIDE_MULTIPLE
    )


def draft_hw(h: int, w: int, *, area: int) -> tuple[int, int]:
    """A draft size: ``(h, w)`` with sides rounded to multiples of 32 but *not* rescaled up to ``area``; a request
    above ``area`` is rescaled down to it as :func:`snap_hw_to_area` does. (480, 640) at 960*960 -> (480, 640).

    Below the trained area the model makes a clip faster (fewer tokens), but that is not what it was trained for.
    """
    if h <= 0 or w <= 0:
        raise ValueError(f"height and width must be positive, got {h}x{w}")
    return snap_hw_to_area(h, w, area=area if h * w > area else 0)


def first_frame_area(image_hw: tuple[int, int], *, area: int, draft: bool = False, width: int | None = None,
                     height: int | None = None) -> int:
    """The pixel area a first frame of ``image_hw`` is encoded at: the trained ``area``, or for a draft the asked
    ``width x height`` (else the image's own area), never above the trained one."""
    if not draft:
        return area
    return min(area, int(width) * int(height) if width and height else int(image_hw[0]) * int(image_hw[1]))


def is_draft_size(h: int, w: int, *, area: int) -> bool:
    """True when ``h x w`` is clearly below the trained ``area``: under 90 % of it (snapping a rescaled size to
    multiples of 32 loses a few percent at most, so such sizes never count)."""
    return h * w < 0.9 * area


def validate_size(h: int, w: int) -> None:
    """Raise ``ValueError`` unless ``h x w`` is a usable output size (positive, multiples of 32, at most 4096)."""
    if not isinstance(h, int) or not isinstance(w, int) or h <= 0 or w <= 0:
        raise ValueError(f"video size must be positive integers, got {h!r}x{w!r}; e.g. 704x1280 or 960x960")
    if h % SIDE_MULTIPLE or w % SIDE_MULTIPLE:
        sh, sw = (max(SIDE_MULTIPLE, round(x / SIDE_MULTIPLE) * SIDE_MULTIPLE) for x in (h, w))
        raise ValueError(
            f"video size {h}x{w}: both sides must be multiples of {SIDE_MULTIPLE} (VAE x16, DiT patch x2); "
            f"use {sh}x{sw}, or snap the size with snap_hw_to_area"
        )
    if h > MAX_SIDE or w > MAX_SIDE:
        raise ValueError(
            f"video size {h}x{w} is too large (max side {MAX_SIDE}); Ovi is trained at about 720x720 or 960x960 "
            "pixels of area: use e.g. 704x1280"
        )


def i2v_size_for_image(h: int, w: int, *, area: int) -> tuple[int, int]:
    """Output size for a first frame of ``h x w``: sides multiples of 32, area closest to ``area``, same aspect.

    The reference's candidate search (``preprocess_image_tensor._best_hw_for_area``): 7 heights around the ideal
    one with widths from the aspect ratio, plus the direct rescale; the best minimises
    ``(|area' - area|, |aspect' - aspect|)``, first candidate wins ties.
    """
    if h <= 0 or w <= 0:
        raise ValueError(f"image height and width must be positive, got {h}x{w}")
    if area <= 0:
        return h, w
    m = SIDE_MULTIPLE
    ratio_wh = w / float(h)
    units = max(1, area // (m * m))
    p0 = max(1, int(round(math.sqrt(units / max(ratio_wh, 1e-8)))))
    candidates = []
    for dp in range(-3, 4):
        p = max(1, p0 + dp)
        q = max(1, int(round(p * ratio_wh)))
        candidates.append((p * m, q * m))
    scale = math.sqrt(area / (h * float(w)))
    candidates.append((max(m, int(round(h * scale / m)) * m), max(m, int(round(w * scale / m)) * m)))

    def score(hw: tuple[int, int]) -> tuple[float, float]:
        return (abs(hw[0] * hw[1] - area), abs(hw[1] / max(hw[0], 1e-8) - ratio_wh))

    return min(candidates, key=score)


def preprocess_image(image: torch.Tensor, *, area: int) -> torch.Tensor:
    """First frame for image-to-video: ``[H, W, 3]`` or ``[B, H, W, 3]`` in [0, 1] -> ``[1, 3, 1, H', W']`` in [-1, 1].

    Only the first image of a batch is used. ``H' x W'`` comes from :func:`i2v_size_for_image`; the resize is
    bicubic with ``align_corners=False`` and, as the reference, no clamp afterwards (bicubic may overshoot [-1, 1]).
    Computed in float32 (or float64 if given); cast to the VAE's dtype afterwards.
    """
    if image.ndim == 4:
        image = image[0]
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be [H, W, 3] or [B, H, W, 3] RGB in [0, 1], got shape {tuple(image.shape)}")
    if not image.is_floating_point():
        raise ValueError(f"image must be a float tensor in [0, 1], got {image.dtype}; divide uint8 images by 255")
    if image.dtype not in (torch.float32, torch.float64):
        image = image.float()
    h, w = image.shape[0], image.shape[1]
    x = image.permute(2, 0, 1).unsqueeze(0) * 2.0 - 1.0  # [1, 3, H, W]
    th, tw = i2v_size_for_image(h, w, area=area)
    if (th, tw) != (h, w):
        x = F.interpolate(x, size=(th, tw), mode="bicubic", align_corners=False)
    return x.unsqueeze(2)  # [1, 3, 1, H', W']


def latent_frames(frames: int) -> int:
    """Video latent frames for ``frames`` pixel frames (Wan2.2 VAE, x4 temporal, causal first frame)."""
    if frames < 1 or (frames - 1) % 4:
        raise ValueError(f"frame count must be 4k+1 (e.g. 121 or 241), got {frames}")
    return 1 + (frames - 1) // 4


def latent_shapes(h: int, w: int, *, version: str) -> tuple[tuple[int, int, int, int], tuple[int, int]]:
    """``((48, F_lat, h/16, w/16), (L_audio, 20))`` for an output of ``h x w`` with the model ``version``."""
    validate_size(h, w)
    spec = get_spec(version)
    return (
        (VIDEO_LATENT_CHANNELS, spec.video_latent_frames, h // SPATIAL_DOWNSAMPLE, w // SPATIAL_DOWNSAMPLE),
        (spec.audio_latent_length, AUDIO_LATENT_CHANNELS),
    )


def audio_rope_scale(fps: float = 24, frames: int = 121, sample_rate: int = 16000, hop: int = 512) -> float:
    """Temporal RoPE scale of the audio tower: video latent rate / audio latent rate.

    Video latents per second: ``latent_frames(frames) / (frames / fps)`` = 31 / (121 / 24) = 6.149;
    audio latents per second: ``sample_rate / hop`` = 16000 / 512 = 31.25 (mel hop 256, VAE x2). The ratio is
    0.19676, the official ``temporal_rope_scaling_factor`` (kept for the 10 s model too: 61/(241/24) gives
    0.19438, but the checkpoint config says 0.19676).
    """
    video_rate = latent_frames(frames) / (frames / fps)
    audio_rate = sample_rate / hop
    return video_rate / audio_rate
