"""Checks of the sampling arguments (seed, steps, shift, guidance scales, skip-layer block, solver): each raises a
``ValueError`` that says what to do and returns the normalised value. :mod:`ovi_core.validate` runs them with the
other pre-flight checks; :func:`ovi_core.sampling.av.sample_av` runs them on what reaches it directly."""

from __future__ import annotations

import math

# torch.Generator.manual_seed takes 0 .. 2**64 - 1 (negatives down to -2**63 wrap around; refused here so a
# seed means one thing only).
MAX_SEED = 2**64 - 1
MAX_STEPS = 1000


def as_int(name: str, value: object) -> int:
    """``value`` as an int (a whole float is accepted); a ValueError naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ValueError(f"{name} must be an integer, got {value!r}.")
    return value


def as_finite(name: str, value: object) -> float:
    """``value`` as a finite float; a ValueError naming ``name`` otherwise."""
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}.") from None
    if not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number, got {value!r}.")
    return v


def check_seed(seed: object) -> int:
    """A seed for ``torch.Generator.manual_seed``: an integer in ``0 .. 2**64 - 1``."""
    s = as_int("seed", seed)
    if not 0 <= s <= MAX_SEED:
        raise ValueError(f"seed must be in 0 .. 2**64 - 1 ({MAX_SEED}), got {s}; pick another seed.")
    return s


def check_steps(steps: object) -> int:
    """Sampling steps: an integer in ``1 .. MAX_STEPS`` (official default 50)."""
    s = as_int("steps", steps)
    if not 1 <= s <= MAX_STEPS:
        raise ValueError(f"steps must be in 1 .. {MAX_STEPS}, got {s}; the official default is 50.")
    return s


def check_shift(shift: object) -> float:
    """Flow-matching time shift: a finite number > 0 (official default 5.0)."""
    v = as_finite("shift", shift)
    if not v > 0:
        raise ValueError(f"shift must be > 0, got {v}; the official default is 5.0.")
    return v


def check_guidance(name: str, scale: object) -> float:
    """A classifier-free guidance scale: any finite number (1 = no guidance)."""
    return as_finite(name, scale)


def check_slg_layer(layer: object, *, num_layers: int | None = None) -> int:
    """Skip-layer guidance block: ``-1`` (off) or ``0 .. num_layers - 1`` (range checked once the model is known)."""
    v = as_int("slg_layer", layer)
    if v < -1:
        raise ValueError(f"slg_layer must be -1 (off) or a block index >= 0, got {v}.")
    if num_layers is not None and v >= num_layers:
        raise ValueError(f"slg_layer {v} is past the model's last block ({num_layers - 1}); use -1 to disable.")
    return v


def check_solver(solver: object) -> str:
    from ovi_core.sampling.solvers import SOLVERS  # here: keeps this module free of torch

    if solver not in SOLVERS:
        raise ValueError(f"Unknown solver {solver!r}; choose one of {SOLVERS}.")
    return str(solver)
