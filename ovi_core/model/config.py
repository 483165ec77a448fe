"""Configurations of the Ovi twin-tower DiT.

Field names are those of the official ``ovi/configs/model/dit/{video,audio}.json`` (plus the constructor
default ``text_dim``), so an official JSON dict maps onto :class:`TowerConfig` field by field.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ovi_core.io.checkpoints import count_indexed

VIDEO_MODEL_TYPES = ("ti2v", "t2v")
AUDIO_MODEL_TYPES = ("t2a",)
# The official audio/video latent-rate ratio used to scale the audio RoPE (OVI_REFERENCE.md §2.6).
AUDIO_ROPE_SCALE = 0.19676


@dataclass(frozen=True)
class TowerConfig:
    """One tower (video or audio) of the fusion model; field names as in the official JSON."""

    model_type: str = "ti2v"
    patch_size: tuple[int, ...] = (1, 2, 2)
    dim: int = 3072
    ffn_dim: int = 14336
    freq_dim: int = 256
    text_dim: int = 4096
    text_len: int = 512
    num_heads: int = 24
    num_layers: int = 30
    in_dim: int = 48
    out_dim: int = 48
    window_size: tuple[int, int] = (-1, -1)
    qk_norm: bool = True
    cross_attn_norm: bool = True
    eps: float = 1e-6
    temporal_rope_scaling_factor: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "patch_size", tuple(int(p) for p in self.patch_size))
        object.__setattr__(self, "window_size", tuple(int(w) for w in self.window_size))
        if self.model_type not in VIDEO_MODEL_TYPES + AUDIO_MODEL_TYPES:
            raise ValueError(
                f"model_type {self.model_type!r} is not an Ovi tower; use 'ti2v' (video) or 't2a' (audio)."
            )
        if self.is_audio and self.patch_size != (1,):
            raise ValueError(f"The audio tower takes no patches: patch_size must be [1], got {list(self.patch_size)}.")
        if not self.is_audio and len(self.patch_size) != 3:
            raise ValueError(f"The video tower needs a 3-D patch_size such as [1, 2, 2], got {list(self.patch_size)}.")
        if self.dim % self.num_heads or (self.dim // self.num_heads) % 2:
            raise ValueError(f"dim {self.dim} must split into {self.num_heads} heads of even size.")
        if self.window_size != (-1, -1):
            raise ValueError("Only global attention (window_size [-1, -1]) is supported, as in every Ovi model.")

    @property
    def is_audio(self) -> bool:
        return self.model_type in AUDIO_MODEL_TYPES

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def audio_hidden_dim(self) -> int:
        """Hidden width of the audio patch-embedding ConvMLP (SwiGLU of nominal width 4*dim)."""
        return 256 * math.ceil(int(2 * 4 * self.dim / 3) / 256)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TowerConfig:
        """Build from an official JSON dict; unknown keys (``_class_name``, ...) are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        """Official JSON form (lists instead of tuples)."""
        d = dataclasses.asdict(self)
        d["patch_size"] = list(self.patch_size)
        d["window_size"] = list(self.window_size)
        return d


@dataclass(frozen=True)
class FusionConfig:
    """The two towers. They must agree on width, heads and depth (the fusion layers rely on it)."""

    video: TowerConfig
    audio: TowerConfig

    def __post_init__(self) -> None:
        if self.video.is_audio or not self.audio.is_audio:
            raise ValueError("FusionConfig needs a video tower config first and an audio tower config second.")
        for f in ("dim", "num_heads", "num_layers"):
            if getattr(self.video, f) != getattr(self.audio, f):
                raise ValueError(
                    f"video and audio towers differ in {f} ({getattr(self.video, f)} vs {getattr(self.audio, f)}); "
                    "the fusion layers need equal dim, num_heads and num_layers."
                )

    @classmethod
    def from_official(cls, video_json: Mapping[str, Any], audio_json: Mapping[str, Any]) -> FusionConfig:
        """From the two official config dicts (contents of ``video.json`` and ``audio.json``)."""
        return cls(video=TowerConfig.from_dict(video_json), audio=TowerConfig.from_dict(audio_json))

    def to_official(self) -> tuple[dict[str, Any], dict[str, Any]]:
        return self.video.to_dict(), self.audio.to_dict()


def _audio_of(video: TowerConfig) -> TowerConfig:
    return dataclasses.replace(
        video, model_type="t2a", patch_size=(1,), in_dim=20, out_dim=20, temporal_rope_scaling_factor=AUDIO_ROPE_SCALE
    )


_OVI_VIDEO = TowerConfig()
#: The official 11B model (Ovi 1.0 and 1.1 share these shapes).
OVI_11B = FusionConfig(video=_OVI_VIDEO, audio=_audio_of(_OVI_VIDEO))

_TINY_VIDEO = TowerConfig(
    dim=64, ffn_dim=128, freq_dim=32, text_dim=32, text_len=8, num_heads=4, num_layers=2
)
#: Tiny config for tests: dim 64, 4 heads (head_dim 16), 2 blocks, text_dim 32, text_len 8.
TINY = FusionConfig(video=_TINY_VIDEO, audio=_audio_of(_TINY_VIDEO))

PRESETS: dict[str, FusionConfig] = {"ovi-11b": OVI_11B, "tiny": TINY}


# ----------------------------------------------------------------------------------------------
# Inference from shapes
# ----------------------------------------------------------------------------------------------


def default_num_heads(dim: int) -> int:
    """Head count for a width, which shapes cannot tell: head_dim 128 (every Wan/Ovi model) when
    ``dim >= 1024``, else head_dim 16 (the tiny test convention, e.g. dim 64 -> 4 heads)."""
    head_dim = 128 if dim >= 1024 else 16
    if dim % head_dim:
        raise ValueError(f"Cannot guess num_heads for dim {dim}; pass num_heads explicitly.")
    return dim // head_dim


def default_text_len(dim: int) -> int:
    """Text length, which shapes cannot tell: always the official 512 (UMT5 prompts are up to 512 tokens;
    ``dim`` is accepted for symmetry with :func:`default_num_heads`). Pass ``text_len`` to override."""
    del dim
    return 512


def _get(shapes: Mapping[str, tuple[int, ...]], key: str) -> tuple[int, ...]:
    if key not in shapes:
        raise ValueError(f"state dict has no {key!r}: not an Ovi tower (or a truncated file).")
    return tuple(shapes[key])


def infer_tower_config(
    shapes: Mapping[str, tuple[int, ...]],
    *,
    audio: bool | None = None,
    num_heads: int | None = None,
    text_len: int | None = None,
) -> TowerConfig:
    """Tower config from unprefixed shapes (``patch_embedding...``, ``blocks.0...``).

    ``audio`` (None: detect from the patch embedding), ``num_heads`` and ``text_len`` override the
    conventions of :func:`default_num_heads` / :func:`default_text_len`.
    """
    if audio is None:
        audio = "patch_embedding.0.weight" in shapes
    if audio:
        pe = _get(shapes, "patch_embedding.0.weight")  # [dim, in_dim, 7]
        dim, in_dim = pe[0], pe[1]
        patch: tuple[int, ...] = (1,)
    else:
        pe = _get(shapes, "patch_embedding.weight")  # [dim, in_dim, pt, ph, pw]
        if len(pe) != 5:
            raise ValueError(f"patch_embedding.weight has shape {list(pe)}; an Ovi video tower has a Conv3d.")
        dim, in_dim, patch = pe[0], pe[1], tuple(pe[2:])
    head = _get(shapes, "head.head.weight")
    out_dim = head[0] // math.prod(patch)
    num_layers = count_indexed(shapes, "blocks.")
    if num_layers == 0:
        raise ValueError("state dict has no blocks.N.* tensors: not an Ovi tower.")
    return TowerConfig(
        model_type="t2a" if audio else "ti2v",
        patch_size=patch,
        dim=dim,
        ffn_dim=_get(shapes, "blocks.0.ffn.0.weight")[0],
        freq_dim=_get(shapes, "time_embedding.0.weight")[1],
        text_dim=_get(shapes, "text_embedding.0.weight")[1],
        text_len=text_len if text_len is not None else default_text_len(dim),
        num_heads=num_heads if num_heads is not None else default_num_heads(dim),
        num_layers=num_layers,
        in_dim=in_dim,
        out_dim=out_dim,
        qk_norm="blocks.0.self_attn.norm_q.weight" in shapes,
        cross_attn_norm="blocks.0.norm3.weight" in shapes,
        temporal_rope_scaling_factor=AUDIO_ROPE_SCALE if audio else 1.0,
    )


def infer_config(
    shapes: Mapping[str, tuple[int, ...]],
    *,
    num_heads: int | None = None,
    text_len: int | None = None,
) -> FusionConfig:
    """Fusion config from a fusion state dict's ``{name: shape}`` (keys ``video_model.*``, ``audio_model.*``).

    Read from shapes: dim, ffn_dim, freq_dim, text_dim, in/out dims, patch size, depth, qk_norm,
    cross_attn_norm. Not readable, so fixed by convention unless overridden: ``num_heads`` (head_dim 128
    for dim >= 1024, else 16), ``text_len`` (512, the official value), eps 1e-6, window [-1, -1], audio
    RoPE scale 0.19676. Raises ``ValueError`` when the shapes are not those of an Ovi fusion model.
    """
    towers = {}
    for name, is_audio in (("video_model.", False), ("audio_model.", True)):
        sub = {k[len(name):]: tuple(v) for k, v in shapes.items() if k.startswith(name)}
        if not sub:
            raise ValueError(f"no {name}* tensors: an Ovi fusion file holds both video_model.* and audio_model.*.")
        towers[name] = infer_tower_config(sub, audio=is_audio, num_heads=num_heads, text_len=text_len)
    return FusionConfig(video=towers["video_model."], audio=towers["audio_model."])
