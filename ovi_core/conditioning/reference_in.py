"""Face and voice references (DreamID-Omni reference-to-AV): pictures and recordings -> encoded reference latents.

As DreamID-Omni's ``load_image_latent_ref_ip_video`` does:

* face: the image is aspect-fit into the output size (the longer relative side fills it), centred on a white
  canvas of the output size, scaled to [-1, 1] and Wan2.2-VAE-encoded as one latent frame ``[1, 48, 1, h, w]``;
* voice: the recording is mixed to mono at 16 kHz and only seconds 1-2 (samples 16000..32000) are MMAudio-encoded:
  31 latents ``[1, 31, 20]``.

Differences from the official code, on purpose: the resize is torch's antialiased bicubic, not PIL's LANCZOS (no
Pillow dependency; sub-pixel differences); a recording shorter than 2 s is refused with a message instead of
giving a shorter (or empty) voice latent.

:func:`prepare_references` does the cheap checks and pixel/sample work before any weights load;
:meth:`ReferenceInputs.encode` runs the VAEs and returns :class:`~ovi_core.sampling.reference.References`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ovi_core.conditioning.audio_in import SAMPLE_RATE, to_mono_16k
from ovi_core.sampling.reference import DEFAULTS, MAX_PEOPLE, References

VOICE_START_S, VOICE_END_S = 1, 2  # DreamID-Omni: audio_array[sr * 1 : sr * 2]
MAX_FACE_PIXELS = 4096 * 4096


def fit_face(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Face ``[H, W, 3]`` (uint8, or float in [0, 1]) -> ``[1, 3, 1, height, width]`` in [-1, 1]: aspect-fit, centred,
    white padding (DreamID-Omni's layout: ``new_w = width, new_h = int(width / ratio)`` when the image is relatively
    wider than the output, else ``new_h = height, new_w = int(height * ratio)``; left/top pad ``delta // 2``)."""
    if image.ndim == 4:
        image = image[0]
    if image.ndim != 3 or image.shape[-1] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"a face reference must be an RGB image [H, W, 3], got {tuple(image.shape)}")
    x = image.float() / 255.0 if not image.is_floating_point() else image.float()
    ih, iw = int(x.shape[0]), int(x.shape[1])
    ratio = iw / ih
    if ratio > width / height:
        nw, nh = width, int(width / ratio)
    else:
        nh, nw = height, int(height * ratio)
    nh, nw = max(1, nh), max(1, nw)
    x = x.permute(2, 0, 1)[None]  # [1, 3, H, W]
    if (nh, nw) != (ih, iw):
        x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
    canvas = torch.ones(1, 3, height, width)
    top, left = (height - nh) // 2, (width - nw) // 2
    canvas[:, :, top:top + nh, left:left + nw] = x
    return (canvas * 2 - 1).unsqueeze(2)  # [1, 3, 1, H, W]


def voice_samples(waveform: torch.Tensor, sample_rate: int, *, name: str = "voice reference") -> torch.Tensor:
    """Seconds 1-2 of a recording as float32 mono 16 kHz ``[16000]``; raises when it is shorter than 2 s."""
    mono = to_mono_16k(waveform, sample_rate)
    need = VOICE_END_S * SAMPLE_RATE
    if mono.shape[0] < need:
        raise ValueError(f"{name} is {mono.shape[0] / SAMPLE_RATE:.2f} s long; give at least {VOICE_END_S} s of "
                         f"speech (DreamID-Omni uses seconds {VOICE_START_S}-{VOICE_END_S} of each recording)")
    return mono[VOICE_START_S * SAMPLE_RATE:need].contiguous()


@dataclass
class ReferenceInputs:
    """Faces and voices ready to encode (pixels and samples; no weights touched yet).

    Attributes:
        faces: one ``[1, 3, 1, H, W]`` in [-1, 1] per person, at the output size.
        voices: one ``[16000]`` float32 mono 16 kHz per person.
        video_ref_scale, audio_ref_scale: the two reference guidance scales.
    """

    faces: list[torch.Tensor]
    voices: list[torch.Tensor]
    video_ref_scale: float = DEFAULTS["video_ref_guidance_scale"]
    audio_ref_scale: float = DEFAULTS["audio_ref_guidance_scale"]

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)`` in pixels of the output the faces were fitted to."""
        return int(self.faces[0].shape[-2]), int(self.faces[0].shape[-1])

    def encode(self, video_vae, audio_codec, *, device: torch.device | str = "cpu") -> References:
        """Run the Wan2.2 VAE on each face and the MMAudio VAE on each voice."""
        vdt = next(video_vae.parameters()).dtype
        with torch.no_grad():
            faces = [video_vae.encode(f.to(device=device, dtype=vdt)).float().cpu() for f in self.faces]
            voices = [audio_codec.encode(v[None].to(device), SAMPLE_RATE).float().cpu() for v in self.voices]
        return References(faces, voices, video_ref_scale=self.video_ref_scale, audio_ref_scale=self.audio_ref_scale)


def prepare_references(
    images: Sequence[torch.Tensor],
    audios: Sequence[tuple[torch.Tensor, int]],
    *,
    height: int,
    width: int,
    video_ref_scale: float = DEFAULTS["video_ref_guidance_scale"],
    audio_ref_scale: float = DEFAULTS["audio_ref_guidance_scale"],
) -> ReferenceInputs:
    """Check and prepare 1-2 people (``images[j]`` and ``audios[j] = (waveform, sample_rate)`` are person ``j``)
    for an output of ``height x width`` pixels (multiples of 32)."""
    if not 1 <= len(images) <= MAX_PEOPLE:
        raise ValueError(f"give 1 to {MAX_PEOPLE} face references, got {len(images)}")
    if len(audios) != len(images):
        raise ValueError(f"each person needs a face and a voice: got {len(images)} face(s) and {len(audios)} "
                         "voice(s); give them in pairs (--ref-image A --ref-audio A [--ref-image B --ref-audio B])")
    for name, val in (("video_ref_scale", video_ref_scale), ("audio_ref_scale", audio_ref_scale)):
        if not 0.0 <= float(val) <= 20.0:
            raise ValueError(f"{name} must be in [0, 20], got {val}")
    faces = [fit_face(img, height, width) for img in images]
    voices = [voice_samples(w, sr, name=f"voice reference {j + 1}") for j, (w, sr) in enumerate(audios)]
    return ReferenceInputs(faces, voices, float(video_ref_scale), float(audio_ref_scale))


def read_reference_files(
    image_paths: Sequence[str | os.PathLike], audio_paths: Sequence[str | os.PathLike]
) -> tuple[list[torch.Tensor], list[tuple[torch.Tensor, int]]]:
    """Decode the named files: images as uint8 ``[H, W, 3]`` (huge ones shrunk while 8-bit), recordings as
    ``(waveform [C, T], sample_rate)``."""
    from ovi_core.io.media import read_audio, read_image

    images = [read_image(p, max_pixels=MAX_FACE_PIXELS) for p in image_paths]
    audios = [read_audio(p) for p in audio_paths]
    return images, audios
