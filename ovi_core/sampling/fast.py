"""Sampling presets and the speed options of one run (few-step preset, CFG reuse, step cache, counters).

The ``fast`` preset is the community recipe that works with Ovi: a distilled few-step Wan2.2-TI2V-5B LoRA
("FastWan"-style) on the video tower, 6 steps for a 5 s clip and 10 for 10 s, both guidance scales 1 (so the
negative pass is skipped: one forward per step) and shift 6. No LoRA file is implied: the user loads the
LoRA (``generate --lora FILE``, or an OviLoraLoader node); without one the preset is just a short run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from ovi_core.sampling.cfg_cache import CFGCache, CFGReuse
from ovi_core.sampling.step_cache import StepCache, StepCacheConfig

logger = logging.getLogger(__name__)

PRESET_NAMES = ("default", "fast")


@dataclass(frozen=True)
class SamplingPreset:
    """Sampler settings a preset sets (None: leave as given)."""

    name: str
    steps_5s: int | None = None
    steps_10s: int | None = None
    video_guidance_scale: float | None = None
    audio_guidance_scale: float | None = None
    shift: float | None = None
    note: str = ""

    def steps(self, seconds: float) -> int | None:
        if self.steps_5s is None:
            return None
        return self.steps_10s if seconds > 7.5 and self.steps_10s is not None else self.steps_5s


PRESETS: dict[str, SamplingPreset] = {
    "default": SamplingPreset("default"),
    "fast": SamplingPreset(
        "fast", steps_5s=6, steps_10s=10, video_guidance_scale=1.0, audio_guidance_scale=1.0, shift=6.0,
        note="expects a few-step (FastWan-style) Wan2.2-TI2V-5B LoRA on the video tower",
    ),
}


def get_preset(name: str) -> SamplingPreset:
    if name not in PRESETS:
        raise ValueError(f"Unknown sampling preset {name!r}; choose one of {sorted(PRESETS)}.")
    return PRESETS[name]


def apply_preset(name: str, *, seconds: float, steps: int, video_guidance_scale: float,
                 audio_guidance_scale: float, shift: float) -> dict:
    """The sampler settings after preset ``name``: ``{steps, video_guidance_scale, audio_guidance_scale,
    shift}`` (``default`` returns the given values unchanged)."""
    p = get_preset(name)
    out = {"steps": steps, "video_guidance_scale": video_guidance_scale,
           "audio_guidance_scale": audio_guidance_scale, "shift": shift}
    if p.steps(seconds) is not None:
        out["steps"] = p.steps(seconds)
    for k in ("video_guidance_scale", "audio_guidance_scale", "shift"):
        if getattr(p, k) is not None:
            out[k] = getattr(p, k)
    if p.name != "default":
        logger.info("sampling preset %r: %s (%s)", p.name, out, p.note)
    return out


@dataclass(frozen=True)
class SpeedOptions:
    """Optional speed-ups of one sampling run; the defaults change nothing (bit-identical to dense)."""

    cfg_reuse: CFGReuse | None = None
    step_cache: StepCacheConfig | None = None

    @property
    def active(self) -> bool:
        return self.cfg_reuse is not None or (self.step_cache is not None and self.step_cache.threshold > 0)


class ForwardCounter:
    """Wraps a fusion-DiT ``model_fn`` and counts forwards: ``forwards`` counts rows (a batched CFG pass of
    2 rows for one clip is 2 forwards), ``calls`` the calls."""

    def __init__(self, model_fn: Callable, *, batch: int = 1) -> None:
        self.model_fn = model_fn
        self.batch = max(1, int(batch))
        self.calls = 0
        self.rows = 0

    def __call__(self, video, audio, t, *args, **kwargs):
        self.calls += 1
        self.rows += int(video.shape[0])
        return self.model_fn(video, audio, t, *args, **kwargs)

    @property
    def forwards(self) -> float:
        """DiT forwards per clip (rows / batch)."""
        return self.rows / self.batch


@dataclass
class SpeedState:
    """The run-time objects of :class:`SpeedOptions` for one run, and their counts."""

    cfg_cache: CFGCache | None
    step_cache: StepCache | None
    counter: ForwardCounter | None = None

    @classmethod
    def make(cls, options: SpeedOptions | None, *, steps: int) -> SpeedState:
        o = options or SpeedOptions()
        cfg = CFGCache(o.cfg_reuse, steps=steps) if o.cfg_reuse is not None else None
        sc = StepCache(o.step_cache, steps=steps) if o.step_cache is not None and o.step_cache.threshold > 0 else None
        return cls(cfg_cache=cfg, step_cache=sc)

    def stats(self) -> dict:
        out: dict = {}
        if self.counter is not None:
            out["forwards"] = self.counter.forwards
        if self.cfg_cache is not None:
            out.update(self.cfg_cache.stats())
        if self.step_cache is not None:
            out.update(self.step_cache.stats())
        return out


def speed_options(*, cfg_reuse_refresh: int = 0, cfg_reuse_start: float = 0.3, cfg_reuse_end: float = 0.9,
                  cfg_reuse_towers: str = "both", cfg_reuse_mode: str = "delta",
                  step_cache_threshold: float = 0.0) -> SpeedOptions:
    """:class:`SpeedOptions` from flat values (UI inputs): ``cfg_reuse_refresh`` 0 = no CFG reuse;
    ``cfg_reuse_towers`` ``both``/``video``/``audio`` (the other tower keeps a fresh negative every step);
    ``step_cache_threshold`` 0 = no step cache."""
    from ovi_core.sampling.cfg_cache import ReuseWindow

    if cfg_reuse_towers not in ("both", "video", "audio"):
        raise ValueError(f"cfg_reuse_towers must be both, video or audio, got {cfg_reuse_towers!r}.")
    reuse = None
    if int(cfg_reuse_refresh) > 0:
        w = ReuseWindow(float(cfg_reuse_start), float(cfg_reuse_end), int(cfg_reuse_refresh))
        reuse = CFGReuse(video=w if cfg_reuse_towers in ("both", "video") else None,
                         audio=w if cfg_reuse_towers in ("both", "audio") else None, mode=cfg_reuse_mode)
    elif int(cfg_reuse_refresh) < 0:
        raise ValueError(f"cfg_reuse_refresh must be >= 0 (0 = off), got {cfg_reuse_refresh}.")
    cache = StepCacheConfig(threshold=float(step_cache_threshold)) if float(step_cache_threshold) != 0 else None
    return SpeedOptions(cfg_reuse=reuse, step_cache=cache)
