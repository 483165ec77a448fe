"""The fusion model laid out the way ComfyUI's generic LoRA key mapping expects ("rooted" layout).

The official files hold ``video_model.*`` and ``audio_model.*``. Inside a native ComfyUI model the video tower is the
root of ``diffusion_model`` (``diffusion_model.blocks.N...``, as core's Wan2.2-5B) and the audio tower a child
(``diffusion_model.audio_model.blocks.N...``, kijai's layout), so core ``LoraLoaderModelOnly`` applies Wan2.2-5B LoRAs
to the video tower and Ovi LoRAs to both with no key table. The same modules are shared, so the fused forward is
:class:`~ovi_core.model.fusion.OviFusionModel`'s, unchanged.

Key rule: ``video_model.X`` <-> ``X``; ``audio_model.X`` stays ``audio_model.X``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch

from ovi_core.model.config import FusionConfig, infer_config
from ovi_core.model.fusion import OviFusionModel
from ovi_core.model.tower import OviTower

VIDEO = "video_model."
AUDIO = "audio_model."
# keys only an Ovi video tower has (the fusion cross-attention): they tell Ovi from plain Wan2.2-5B
FUSION_MARKERS = ("blocks.0.cross_attn.k_fusion.weight", "blocks.0.cross_attn.v_fusion.weight")


class OviRootedFusionModel(OviFusionModel):
    """:class:`OviFusionModel` whose video tower's children sit at the root; ``audio_model`` is a child.

    ``video_model`` is still available (a property returning the tower object, which is not registered as a child),
    so every fusion method works as before. Do not replace a root child (``self.blocks = ...``) after construction:
    the tower object keeps the original one.
    """

    def __init__(self, config: FusionConfig, *, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None, operations: object | None = None) -> None:
        super().__init__(config, device=device, dtype=dtype, operations=operations)
        tower = self._modules.pop("video_model")
        for name, child in tower.named_children():
            self.add_module(name, child)
        object.__setattr__(self, "_video_tower", tower)

    @property
    def video_model(self) -> OviTower:  # type: ignore[override]
        return self.__dict__["_video_tower"]

    def share(self, source: OviFusionModel) -> None:
        """Take ``source``'s towers (no copy): this model then computes with ``source``'s weights. Build this one on
        the meta device first, so nothing is allocated twice."""
        if source.config != self.config:
            raise ValueError("share: the two fusion models have different configs")
        tower = source.video_model
        for name, child in tower.named_children():
            self.add_module(name, child)
        self.add_module("audio_model", source.audio_model)
        object.__setattr__(self, "_video_tower", tower)
        self.attention_backend = source.attention_backend
        self._compute_dtype = source._compute_dtype


def to_rooted(name: str) -> str:
    """Official tensor name -> rooted name (``video_model.blocks.0...`` -> ``blocks.0...``)."""
    return name[len(VIDEO):] if name.startswith(VIDEO) else name


def to_official(name: str) -> str:
    """Rooted tensor name -> official name (``blocks.0...`` -> ``video_model.blocks.0...``)."""
    return name if name.startswith(AUDIO) else VIDEO + name


def rooted_state_dict(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An official fusion state dict renamed to the rooted layout (tensors shared, not copied)."""
    bad = [k for k in sd if not k.startswith((VIDEO, AUDIO))]
    if bad:
        raise ValueError(f"not an official Ovi fusion state dict (keys must start with {VIDEO!r} or {AUDIO!r}; "
                         f"found e.g. {bad[:3]})")
    return {to_rooted(k): v for k, v in sd.items()}


def looks_rooted(keys: Iterable[str]) -> bool:
    """True for a state dict in the rooted layout: an Ovi video tower at the root (fusion keys present)."""
    keys = set(keys)
    return all(m in keys for m in FUSION_MARKERS)


def has_audio_tower(keys: Iterable[str]) -> bool:
    return any(k.startswith(AUDIO) for k in keys)


def rooted_config(shapes: Mapping[str, tuple[int, ...]], **kw) -> FusionConfig:
    """Fusion config from a rooted state dict's ``{name: shape}`` (see :func:`ovi_core.model.config.infer_config`)."""
    return infer_config({to_official(k): tuple(v) for k, v in shapes.items()}, **kw)


def clean_tokens_video(mask: torch.Tensor | None, patch: tuple[int, ...]) -> torch.Tensor | None:
    """A denoise mask of the video stream (``[B|1, C, F, h, w]``, 0 = keep, 1 = generate) -> bool clean-token mask
    ``[B|1, F, h/ph, w/pw]`` (a token is clean when every latent cell under it is kept), or None when nothing is kept."""
    if mask is None:
        return None
    m = mask.float().amax(dim=1)  # [B, F, h, w]
    pt, ph, pw = patch
    m = torch.nn.functional.max_pool3d(m[:, None], kernel_size=(pt, ph, pw))[:, 0]  # [B, F/pt, h/ph, w/pw]
    clean = m <= 0
    return clean if bool(clean.any()) else None


def clean_tokens_audio(mask: torch.Tensor | None) -> torch.Tensor | None:
    """A denoise mask of the audio stream (``[B|1, C, T]``, 0 = keep) -> bool ``[B|1, T]``, or None when nothing is kept."""
    if mask is None:
        return None
    clean = mask.float().amax(dim=1) <= 0  # [B, T]
    return clean if bool(clean.any()) else None


def forward_streams(
    model: OviFusionModel,
    video: torch.Tensor,
    audio: torch.Tensor,
    t: torch.Tensor,
    video_context: torch.Tensor,
    audio_context: torch.Tensor,
    *,
    slg_layer: int = -1,
    slg_mask: torch.Tensor | None = None,
    video_mask: torch.Tensor | None = None,
    audio_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The fused forward (:meth:`OviFusionModel.forward`, also for subclasses that override ``forward``) on channel-first streams (the native latent layout).

    video ``[B, 48, F, h, w]``, audio ``[B, 20, T]`` (time at dim 2, like the video), t ``[B]`` (``sigma * 1000``),
    contexts ``[B, Lt, D]``; ``video_mask``/``audio_mask`` are denoise masks of the streams' shapes (0 = keep the
    clean latent: those tokens get timestep 0). Returns velocities ``([B, 48, F, h, w], [B, 20, T])``.
    """
    vclean = clean_tokens_video(video_mask, model.config.video.patch_size)
    aclean = clean_tokens_audio(audio_mask)
    v, a = OviFusionModel.forward(model, video, audio.transpose(1, 2), t, video_context, audio_context, slg_layer=slg_layer,
                 slg_mask=slg_mask, video_clean=vclean, audio_clean=aclean)  # [B, 48, F, h, w], [B, T, 20]
    return v, a.transpose(1, 2)
