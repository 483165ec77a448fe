"""Hyper-parameters of the Wan2.2 video VAE: :class:`WanVAEConfig` and the patchify factor ``PATCH``.

Shared by the layers (:mod:`ovi_core.vae.wan_layers`), the tiling estimates (:mod:`ovi_core.vae.wan_tiling`)
and the model (:mod:`ovi_core.vae.wan_vae`, which re-exports both names).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

__all__ = ["PATCH", "WanVAEConfig"]

PATCH = 2  # pixel-unshuffle factor in front of the encoder / behind the decoder


# ----------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WanVAEConfig:
    """Hyper-parameters under the official argument names of Wan2.2's ``WanVAE_``."""

    dim: int = 160
    dec_dim: int = 256
    z_dim: int = 48
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attn_scales: tuple[float, ...] = ()  # accepted for fidelity; the official model never reads it
    temperal_downsample: tuple[bool, ...] = (False, True, True)
    dropout: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "dim_mult", tuple(int(m) for m in self.dim_mult))
        object.__setattr__(self, "attn_scales", tuple(self.attn_scales))
        object.__setattr__(self, "temperal_downsample", tuple(bool(t) for t in self.temperal_downsample))
        if self.dim <= 0 or self.dec_dim <= 0 or self.z_dim <= 0 or not self.dim_mult:
            raise ValueError(f"invalid Wan VAE config {self}: dims must be positive and dim_mult non-empty")

    @classmethod
    def full(cls) -> WanVAEConfig:
        """The official Wan2.2 VAE (``Wan2.2_VAE.pth``)."""
        return cls()

    @classmethod
    def tiny(cls) -> WanVAEConfig:
        """Tiny widths for tests (the configuration of the ``wan_vae`` golden case)."""
        return cls(dim=8, dec_dim=8)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> WanVAEConfig:
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown Wan VAE config fields {sorted(unknown)}; known: {sorted(names)}")
        return cls(**dict(d))

    @property
    def temporal_factor(self) -> int:
        return 2 ** sum(self.temperal_downsample[: len(self.dim_mult) - 1])

    @property
    def spatial_factor(self) -> int:
        return PATCH * 2 ** (len(self.dim_mult) - 1)


