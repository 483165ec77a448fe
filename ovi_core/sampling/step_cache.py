"""Step caching for the joint sampler (the TeaCache / MagCache / EasyCache family), both towers at once.

Between neighbouring steps the DiT's input often changes little, and so does its output. The cache wraps a
denoiser ``denoise(video, audio, t) -> (v_video, v_audio)`` (the whole guided step, every CFG pass included)
and, before each call, adds up how much the input moved since the last step that really ran::

    change_i = max(rel_L1(video_i, video_{i-1}), rel_L1(audio_i, audio_{i-1})) + |t_i - t_{i-1}| / t_{i-1}
    rel_L1(x, y) = mean|x - y| / mean|y|

While the accumulated change stays below ``threshold`` the step is skipped: no forward at all, and the last
computed velocities are reused for both streams (audio and video are computed together, so one decision
covers both). Once it reaches the threshold the step runs and the sum restarts. The first ``warmup`` steps
and the last step always run; at most ``max_skips`` steps in a row are skipped. (With the cache on, each step
reads the change to the host once; off, nothing is added to the step.)

``threshold=0`` never skips, so the result is bit-identical to the dense run. Larger values skip more; the
right value depends on the model and the step count (see ``bench/RESULTS.md`` for measured trade-offs).

Unlike TeaCache, the indicator is computed on the latents and the timestep, not on the modulated input of
the first block, and there is no fitted rescaling polynomial: that keeps the model untouched and works for
any denoiser, at the price of a cruder estimate of the output change.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

logger = logging.getLogger(__name__)

Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def rel_l1(x: torch.Tensor, prev: torch.Tensor) -> float:
    """``mean|x - prev| / mean|prev|`` in float32 (one host sync)."""
    num = (x.float() - prev.float()).abs().mean()
    den = prev.float().abs().mean().clamp_min(1e-12)
    return float(num / den)


@dataclass(frozen=True)
class StepCacheConfig:
    """``threshold``: accumulated relative change below which a step is skipped (0 = never skip).
    ``warmup``: first steps that always run. ``max_skips``: most consecutive skipped steps."""

    threshold: float = 0.0
    warmup: int = 2
    max_skips: int = 3

    def __post_init__(self) -> None:
        if not float(self.threshold) >= 0.0:
            raise ValueError(f"step cache threshold must be >= 0 (0 = off), got {self.threshold!r}; "
                             "try 0.05-0.3.")
        if int(self.warmup) < 1:
            raise ValueError(f"step cache warmup must be >= 1 (the first step always runs), got {self.warmup}.")
        if int(self.max_skips) < 0:
            raise ValueError(f"step cache max_skips must be >= 0, got {self.max_skips}.")


class StepCache:
    """Run-time state for one sampling run of ``steps`` steps; :meth:`wrap` a denoiser with it.

    Attributes:
        computed: steps that ran the denoiser; skipped: steps that reused the last velocities;
        skipped_steps: their 0-based indices.
    """

    def __init__(self, config: StepCacheConfig, *, steps: int) -> None:
        if not isinstance(config, StepCacheConfig):
            raise ValueError(f"config must be a StepCacheConfig, got {type(config).__name__}.")
        self.config = config
        self.steps = int(steps)
        self.step = 0
        self.computed = 0
        self.skipped = 0
        self.skipped_steps: list[int] = []
        self._acc = 0.0
        self._run = 0
        self._prev: tuple[torch.Tensor, torch.Tensor, float] | None = None
        self._out: tuple[torch.Tensor, torch.Tensor] | None = None

    def _change(self, video: torch.Tensor, audio: torch.Tensor, t: float) -> float:
        pv, pa, pt = self._prev
        dt = abs(t - pt) / pt if pt > 0 else (0.0 if t == pt else float("inf"))
        return max(rel_l1(video, pv), rel_l1(audio, pa)) + dt

    def should_skip(self, video: torch.Tensor, audio: torch.Tensor, t: torch.Tensor) -> bool:
        """Decide step ``self.step`` (advancing it); both streams at once."""
        c = self.config
        i = self.step
        self.step += 1
        tv = float(t.reshape(-1)[0])
        skip = False
        if c.threshold > 0 and self._prev is not None and self._out is not None:
            self._acc += self._change(video, audio, tv)
            skip = (i >= c.warmup and i < self.steps - 1 and self._run < c.max_skips and self._acc < c.threshold)
        self._prev = (video.detach().clone(), audio.detach().clone(), tv) if c.threshold > 0 else None
        if skip:
            self._run += 1
            self.skipped += 1
            self.skipped_steps.append(i)
        else:
            self._run = 0
            self._acc = 0.0
            self.computed += 1
        return skip

    def wrap(self, denoise: Denoiser, *, on_skip: Callable[[], None] | None = None) -> Denoiser:
        """``denoise`` with the cache in front: one call per step, as the sampler makes them. ``on_skip`` is
        called on each skipped step (e.g. :meth:`CFGCache.advance`, so step-counting wrappers stay in step)."""

        def cached(video: torch.Tensor, audio: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            if self.should_skip(video, audio, t):
                if on_skip is not None:
                    on_skip()
                return self._out
            out = denoise(video, audio, t)
            if self.config.threshold > 0:
                self._out = out
            return out

        return cached

    def stats(self) -> dict[str, int]:
        return {"step_cache_computed": self.computed, "step_cache_skipped": self.skipped}
