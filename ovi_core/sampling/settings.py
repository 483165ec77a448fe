"""The sampling settings of one run, carried as one value from the CLI, the nodes and the pipeline down to the
sampler and the long-clip windows (official defaults from :data:`ovi_core.sizes.DEFAULTS`)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ovi_core import sizes

if TYPE_CHECKING:
    from ovi_core.sampling.fast import SpeedOptions


@dataclass(frozen=True)
class SamplingSettings:
    """Steps, solver, time shift, per-stream CFG scales, skip-layer block, seed, the audio RoPE factor override
    (None: the model's own) and the optional speed options (:class:`ovi_core.sampling.fast.SpeedOptions`)."""

    steps: int = sizes.DEFAULTS["steps"]
    solver: str = sizes.DEFAULTS["solver"]
    shift: float = sizes.DEFAULTS["shift"]
    video_guidance_scale: float = sizes.DEFAULTS["video_guidance_scale"]
    audio_guidance_scale: float = sizes.DEFAULTS["audio_guidance_scale"]
    slg_layer: int = sizes.DEFAULTS["slg_layer"]
    seed: int = sizes.DEFAULTS["seed"]
    audio_rope_scale: float | None = None
    speed: SpeedOptions | None = None

    def with_seed(self, seed: int) -> SamplingSettings:
        """The same settings with another seed (long-clip window ``k`` samples with ``seed + k``)."""
        return replace(self, seed=seed)
