"""Values passed between Ovi nodes (custom ComfyUI types). Plain containers around ``ovi_core`` objects."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

OVI_MODEL = "OVI_MODEL"
OVI_TEXT_ENCODER = "OVI_TEXT_ENCODER"
OVI_VIDEO_VAE = "OVI_VIDEO_VAE"
OVI_AUDIO_VAE = "OVI_AUDIO_VAE"
OVI_CONDITIONING = "OVI_CONDITIONING"
OVI_LATENTS = "OVI_LATENTS"
OVI_GUIDES = "OVI_GUIDES"
OVI_REFERENCES = "OVI_REFERENCES"


@dataclass
class Placed:
    """A loaded module and where it runs: ``device`` for compute, ``memory_mode`` for what happens between uses."""

    module: Any
    device: torch.device
    dtype: torch.dtype
    # "auto" (ComfyUI places it; the DiT streams its blocks when it does not fit), "offload" (loaded by ComfyUI for
    # each use, unloaded when ComfyUI needs the room), "gpu" (loaded at once), "block_swap" (DiT: blocks streamed)
    memory_mode: str = "auto"
    path: str = ""
    patcher: Any = field(default=None, repr=False, compare=False)  # comfy ModelPatcher (None without ComfyUI)

    @property
    def offload(self) -> bool:
        return self.memory_mode != "gpu"


@dataclass
class OviModel(Placed):
    """OVI_MODEL: the fusion DiT plus what the other nodes need to know about it."""

    version: str = "1.0"  # '1.0', '1.1' or '1.1-10s' (the checkpoint's family)
    target_area: int = 720 * 720
    blocks_on_gpu: int = 10
    audio_path: str = ""


@dataclass
class OviConditioning:
    """OVI_CONDITIONING: the three prompt embeddings and the prompt format they were encoded for."""

    cond: Any  # ovi_core.text.conditioning.Conditioning
    version: str | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass
class GuideItem:
    """One entry of OVI_GUIDES (a list of these): the sampler's guide and, where the user gave media, its source
    (``ovi_core.conditioning`` input with ``splice``) so the decoders can put the original back."""

    guide: Any  # ovi_core.sampling.guides.Guide
    source: Any = None
    encoder: Any = None  # media kept unencoded for a long clip (guide None): the VAE patcher the guide node was given


@dataclass
class ReferenceItem:
    """One entry of OVI_REFERENCES (a list of these, person 1 first): the face picture (encoded by the sampler at the
    clip's size, with ``video_vae``) and the encoded voice."""

    face: torch.Tensor  # [H, W, 3] float in [0, 1]
    voice: torch.Tensor  # [1, 31, 20] MMAudio latent of seconds 1-2
    video_vae: Any = field(default=None, repr=False, compare=False)  # OVI_VIDEO_VAE (Placed)
