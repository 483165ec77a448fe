"""Flow-matching sampling for Ovi: schedules, the three official solvers and the joint video+audio loop."""
