"""Flow-matching sampling for Ovi: schedules, the three official solvers and the joint video+audio loop."""

from .joint import make_cfg_denoiser, sample_joint
from .schedules import dpm_schedule, euler_schedule, shift_sigmas, unipc_schedule
from .solvers import SOLVERS, DPMSolver, EulerSolver, Solver, UniPCSolver, make_solver

__all__ = [
    "SOLVERS",
    "DPMSolver",
    "EulerSolver",
    "Solver",
    "UniPCSolver",
    "dpm_schedule",
    "euler_schedule",
    "make_cfg_denoiser",
    "make_solver",
    "sample_joint",
    "shift_sigmas",
    "unipc_schedule",
]
