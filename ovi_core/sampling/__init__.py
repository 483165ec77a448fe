"""Flow-matching sampling for Ovi: schedules, the three official solvers and the joint video+audio loop."""

from .guides import Guide, GuideSchedule, check_guides, clean_masks
from .joint import first_frame_guide, make_cfg_denoiser, sample_joint
from .schedules import dpm_schedule, euler_schedule, shift_sigmas, unipc_schedule
from .solvers import SOLVERS, DPMSolver, EulerSolver, Solver, UniPCSolver, make_solver

__all__ = [
    "SOLVERS",
    "DPMSolver",
    "EulerSolver",
    "Guide",
    "GuideSchedule",
    "Solver",
    "UniPCSolver",
    "dpm_schedule",
    "check_guides",
    "clean_masks",
    "euler_schedule",
    "first_frame_guide",
    "make_cfg_denoiser",
    "make_solver",
    "sample_joint",
    "shift_sigmas",
    "unipc_schedule",
]
