"""Flow-matching noise schedules of the official Ovi solvers.

Convention (rectified flow): ``x_sigma = (1 - sigma) * x0 + sigma * noise`` with sigma in [0, 1]; the model is
called with ``timestep = sigma * 1000`` and returns the velocity ``v = noise - x0``.

Each function returns ``(sigmas, timesteps)``: ``sigmas`` is float32 ``[steps + 1]`` ending in 0, ``timesteps``
is ``[steps]`` and is what the model receives. The arithmetic (float64 numpy for the grid, float32 torch where the
official schedulers use it, truncation to int64) mirrors the official schedulers step for step so that the
timesteps match exactly:

- ``unipc``: Wan's ``FlowUniPCMultistepScheduler(shift=1)`` then ``set_timesteps(steps, shift=shift)``;
- ``dpm++``: Wan's ``get_sampling_sigmas(steps, shift)`` fed to ``FlowDPMSolverMultistepScheduler(shift=1)``;
- ``euler``: diffusers' ``FlowMatchEulerDiscreteScheduler(shift=shift).set_timesteps(steps)``, which applies the
  shift twice to its lowest sigma (once at construction, once in ``set_timesteps``), hence a last timestep of
  about 24.4 instead of about 5 for shift 5. Its timesteps are float32.
"""

from __future__ import annotations

import numpy as np
import torch

NUM_TRAIN_TIMESTEPS = 1000


def shift_sigmas(sigmas: np.ndarray, shift: float) -> np.ndarray:
    """Time shift ``s * sigma / (1 + (s - 1) * sigma)`` (float64; maps 0 -> 0 and 1 -> 1, pushes mass to 1)."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def _check(steps: int, shift: float) -> None:
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}; use e.g. 50 (the official default)")
    if not shift > 0:
        raise ValueError(f"shift must be > 0, got {shift!r}; use e.g. 5.0 (the official default)")


def unipc_schedule(steps: int, shift: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Schedule of the official UniPC solver: sigmas float32 ``[steps+1]``, timesteps int64 ``[steps]``."""
    _check(steps, shift)
    # The unshifted training grid runs from 1 - 1/1000 down to 0; its first entry is stored in float32.
    sigma_max = float(np.float32(1.0 - 1.0 / NUM_TRAIN_TIMESTEPS))
    sigmas = np.linspace(sigma_max, 0.0, steps + 1)[:-1]
    sigmas = shift_sigmas(sigmas, shift)
    timesteps = torch.from_numpy(sigmas * NUM_TRAIN_TIMESTEPS).to(torch.int64)  # truncation, as the reference
    sigmas = torch.from_numpy(np.concatenate([sigmas, [0.0]]).astype(np.float32))
    return sigmas, timesteps


def dpm_schedule(steps: int, shift: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Schedule of the official DPM++ solver: sigmas float32 ``[steps+1]`` (first is 1), timesteps int64."""
    _check(steps, shift)
    sigmas = shift_sigmas(np.linspace(1.0, 0.0, steps + 1)[:steps], shift)
    timesteps = torch.from_numpy(sigmas * NUM_TRAIN_TIMESTEPS).to(torch.int64)
    sigmas = torch.from_numpy(np.concatenate([sigmas, [0.0]]).astype(np.float32))
    return sigmas, timesteps


def euler_schedule(steps: int, shift: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Schedule of diffusers' flow-match Euler: sigmas float32 ``[steps+1]``, timesteps float32 ``[steps]``."""
    _check(steps, shift)
    # Training grid 1000..1 in float32, shifted once in float32 torch; only its ends are used.
    train = torch.from_numpy(np.linspace(1, NUM_TRAIN_TIMESTEPS, NUM_TRAIN_TIMESTEPS, dtype=np.float32)[::-1].copy())
    train = train / NUM_TRAIN_TIMESTEPS
    train = shift * train / (1 + (shift - 1) * train)
    sigma_max, sigma_min = train[0].item(), train[-1].item()
    ts = np.linspace(sigma_max * NUM_TRAIN_TIMESTEPS, sigma_min * NUM_TRAIN_TIMESTEPS, steps)
    sigmas = torch.from_numpy(shift_sigmas(ts / NUM_TRAIN_TIMESTEPS, shift)).to(torch.float32)  # second shift
    timesteps = sigmas * NUM_TRAIN_TIMESTEPS
    sigmas = torch.cat([sigmas, torch.zeros(1)])
    return sigmas, timesteps


SCHEDULES = {"unipc": unipc_schedule, "dpm++": dpm_schedule, "euler": euler_schedule}
