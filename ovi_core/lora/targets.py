"""Where a LoRA goes in the Ovi fusion DiT: the towers, the target groups and projections, finding those
Linear layers in a (possibly wrapped) model, and :class:`LoRAConfig` (rank, alpha, dropout, targets, towers).

Re-exported by :mod:`ovi_core.lora`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from torch import nn

TOWERS = ("video_model", "audio_model")

TARGET_GROUPS: dict[str, tuple[str, ...]] = {
    "self_attn": ("self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o"),
    "cross_attn": ("cross_attn.q", "cross_attn.k", "cross_attn.v", "cross_attn.o"),
    "fusion": ("cross_attn.k_fusion", "cross_attn.v_fusion"),
}
ALL_TARGETS: tuple[str, ...] = tuple(s for g in TARGET_GROUPS.values() for s in g)
DEFAULT_TARGETS: tuple[str, ...] = ("self_attn", "cross_attn", "fusion")

_BLOCK_RE = re.compile(r"^(video_model|audio_model)\.blocks\.(\d+)\.(.+)$")


def expand_targets(targets: str | Iterable[str]) -> tuple[str, ...]:
    """Group names (``self_attn``, ``cross_attn``, ``fusion``, ``all``) and single projections
    (``self_attn.q``, ``cross_attn.k_fusion``, ...) -> sorted unique projection suffixes."""
    if isinstance(targets, str):
        targets = [t for t in re.split(r"[,\s]+", targets) if t]
    out: set[str] = set()
    for t in targets:
        if t == "all":
            out.update(ALL_TARGETS)
        elif t in TARGET_GROUPS:
            out.update(TARGET_GROUPS[t])
        elif t in ALL_TARGETS:
            out.add(t)
        else:
            raise ValueError(
                f"Unknown LoRA target {t!r}; use groups {sorted(TARGET_GROUPS)} or 'all', or single projections "
                f"such as {ALL_TARGETS[:2]}."
            )
    if not out:
        raise ValueError("No LoRA targets given; use e.g. 'self_attn,cross_attn,fusion'.")
    return tuple(s for s in ALL_TARGETS if s in out)


def _check_towers(towers: str | Iterable[str]) -> tuple[str, ...]:
    if isinstance(towers, str):
        towers = [t for t in re.split(r"[,\s]+", towers) if t]
    names = {"video": "video_model", "audio": "audio_model", "both": None}
    out: list[str] = []
    for t in towers:
        if t == "both":
            out.extend(TOWERS)
        elif t in names:
            out.append(names[t])
        elif t in TOWERS:
            out.append(t)
        else:
            raise ValueError(f"Unknown tower {t!r}; use 'video', 'audio' or 'both'.")
    if not out:
        raise ValueError("No towers given; use 'video', 'audio' or 'both'.")
    return tuple(t for t in TOWERS if t in out)


class ModelView:
    """A proxy of a DiT that keeps the real module in ``base`` (:class:`ovi_core.lora.model.LoRAModel` is one)."""

    base: nn.Module


def unwrap_model(model: nn.Module) -> nn.Module:
    """The DiT inside DDP/FSDP/compile wrappers or a :class:`ModelView` proxy (a LoRAModel)."""
    seen = 0
    while seen < 8:
        seen += 1
        if isinstance(model, ModelView):
            model = model.base
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        else:
            break
    return model


def find_target_modules(
    model: nn.Module, *, targets: str | Iterable[str] = DEFAULT_TARGETS, towers: str | Iterable[str] = TOWERS
) -> dict[str, nn.Linear]:
    """``{official module name: Linear}`` of the DiT for the chosen targets and towers, in model order."""
    suffixes = set(expand_targets(targets))
    tw = set(_check_towers(towers))
    found: dict[str, nn.Linear] = {}
    for name, mod in unwrap_model(model).named_modules():
        m = _BLOCK_RE.match(name)
        if m and m.group(1) in tw and m.group(3) in suffixes and isinstance(mod, nn.Linear):
            found[name] = mod
    if not found:
        raise ValueError(
            f"The model has no Linear layers for LoRA targets {sorted(suffixes)} in towers {sorted(tw)}; "
            "is it an Ovi fusion model (video_model/audio_model with blocks.N.self_attn/cross_attn)?"
        )
    return found


@dataclass(frozen=True)
class LoRAConfig:
    """Where LoRA goes and how big it is. ``alpha`` None means ``alpha = rank`` (scale 1)."""

    rank: int = 16
    alpha: float | None = None
    dropout: float = 0.0
    targets: tuple[str, ...] = DEFAULT_TARGETS
    towers: tuple[str, ...] = TOWERS

    def __post_init__(self) -> None:
        if int(self.rank) < 1:
            raise ValueError(f"LoRA rank must be at least 1, got {self.rank}.")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout}.")
        object.__setattr__(self, "rank", int(self.rank))
        object.__setattr__(self, "targets", expand_targets(self.targets))
        object.__setattr__(self, "towers", _check_towers(self.towers))

    @property
    def effective_alpha(self) -> float:
        return float(self.rank if self.alpha is None else self.alpha)
