"""The three flow-matching solvers of the official Ovi sampler, written as small stateful step functions.

All three share the convention ``x_sigma = (1 - sigma) * x0 + sigma * noise``; the model returns the velocity
``v`` and the solvers recover ``x0 = x - sigma * v``.

- ``unipc`` (default): UniPC multistep, order 2, B(h) = expm1 ("bh2"), updates on the x0 prediction, lower order
  on the last step, final sigma 0 (Wan's ``FlowUniPCMultistepScheduler``). The corrector (UniC) refines the sample
  with the new model output before each predictor (UniP) step.
- ``dpm++``: DPM-Solver++ (2M, midpoint) on the x0 prediction, first order on the first and last step (Wan's
  ``FlowDPMSolverMultistepScheduler``), arithmetic in float32.
- ``euler``: plain Euler on the velocity, ``x <- x + (sigma_next - sigma) * v`` in float32 (diffusers'
  ``FlowMatchEulerDiscreteScheduler``).

Every scalar coefficient depends only on the schedule, so it is computed once at construction on the host, in
float32 with the same operation order as the official schedulers, and held as a 0-d float32 CPU tensor: like the
official code, which keeps its sigmas on the CPU. PyTorch passes such CPU scalars to device kernels by value, so
``step`` does only tensor arithmetic on the sample's device: no host synchronisation, no host-to-device copies. It
also keeps the official rounding for bfloat16 samples (a 0-d float32 tensor is rounded to the sample's dtype in a
mixed op, a Python float is not), so bfloat16 runs match the official solvers bit for bit, not just closely.

Differences from the official schedulers that do not change results in the supported range: the official code
finds the first step by looking the timestep up in its table, which picks the wrong entry when the first two
integer timesteps coincide (more than about 250 UniPC steps) and then fails at the end; here the step index is
explicit. Results are cast back to the sample's dtype (the official code casts to the sample's or the model
output's dtype, which are the same in the official pipeline).
"""

from __future__ import annotations

import torch

from ovi_core.sampling.schedules import SCHEDULES

SOLVERS = ("unipc", "euler", "dpm++")


def _lam(sigma: torch.Tensor) -> torch.Tensor:
    """Half log-SNR ``log(alpha) - log(sigma)`` of the flow schedule (alpha = 1 - sigma), float32 0-d."""
    return torch.log(1 - sigma) - torch.log(sigma)


class Solver:
    """Base class: holds the schedule and enforces that steps are taken in order, once.

    Attributes:
        name: solver name (one of ``SOLVERS``).
        steps: number of model evaluations.
        shift: time shift of the schedule.
        sigmas: float32 ``[steps + 1]``, from about 1 down to 0 (host tensor).
        timesteps: ``[steps]`` timesteps on the 0-1000 scale, what the model receives (int64 for unipc/dpm++,
            float32 for euler, as the official schedulers; host tensor).
    """

    name = ""

    def __init__(self, *, steps: int, shift: float = 5.0) -> None:
        self.steps = steps
        self.shift = float(shift)
        self.sigmas, self.timesteps = SCHEDULES[self.name](steps, self.shift)
        self._s = list(self.sigmas.unbind(0))  # 0-d float32 CPU tensors
        self._next = 0

    def __repr__(self) -> str:
        return f"{type(self).__name__}(steps={self.steps}, shift={self.shift})"

    def _advance(self, index: int) -> None:
        if index != self._next:
            raise ValueError(
                f"{self.name} solver: step index {index} given but step {self._next} was expected; call step() once "
                f"per index in order 0..{self.steps - 1} and make a fresh solver (make_solver) for every run"
            )
        self._next += 1

    def step(self, velocity: torch.Tensor, index: int, sample: torch.Tensor) -> torch.Tensor:
        """One solver step from ``sigmas[index]`` to ``sigmas[index + 1]``.

        Args:
            velocity: model output ``v`` at ``(sample, timesteps[index])``, same shape as ``sample``.
            index: step index, 0..steps-1, called in order.
            sample: current sample ``x`` (any shape, e.g. ``[B, 48, F, H, W]`` or ``[B, L, 20]``).
        Returns:
            the next sample, same shape and dtype as ``sample``.
        """
        raise NotImplementedError


class EulerSolver(Solver):
    """Flow-match Euler: ``x <- x + (sigma_{i+1} - sigma_i) * v`` (computed in float32)."""

    name = "euler"

    def __init__(self, *, steps: int, shift: float = 5.0) -> None:
        super().__init__(steps=steps, shift=shift)
        self._dt = [self.sigmas[i + 1] - self.sigmas[i] for i in range(steps)]

    def step(self, velocity: torch.Tensor, index: int, sample: torch.Tensor) -> torch.Tensor:
        self._advance(index)
        out = sample.to(torch.float32) + self._dt[index] * velocity
        return out.to(sample.dtype)


class DPMSolver(Solver):
    """DPM-Solver++(2M), midpoint, on x0; first order on the first and the last step; float32 arithmetic."""

    name = "dpm++"

    def __init__(self, *, steps: int, shift: float = 5.0) -> None:
        super().__init__(steps=steps, shift=shift)
        s = self.sigmas
        self._cx: list[torch.Tensor] = []  # sigma_t / sigma_s0
        self._cm: list[torch.Tensor] = []  # alpha_t * (exp(-h) - 1)
        self._cd1: list[torch.Tensor | None] = []  # 1 / r0 (second-order steps only)
        self._second: list[bool] = []
        for i in range(steps):
            sig_t, sig_s0 = s[i + 1], s[i]
            h = _lam(sig_t) - _lam(sig_s0)
            self._cx.append(sig_t / sig_s0)
            self._cm.append((1 - sig_t) * (torch.exp(-h) - 1.0))
            second = 0 < i < steps - 1
            self._second.append(second)
            if second:
                r0 = (_lam(sig_s0) - _lam(s[i - 1])) / h
                self._cd1.append(1.0 / r0)
            else:
                self._cd1.append(None)
        self._m_prev: torch.Tensor | None = None

    def step(self, velocity: torch.Tensor, index: int, sample: torch.Tensor) -> torch.Tensor:
        self._advance(index)
        i = index
        m0 = sample - self._s[i] * velocity  # x0 prediction, in the sample's dtype
        x = sample.to(torch.float32)
        if self._second[i]:
            assert self._m_prev is not None
            d1 = self._cd1[i] * (m0 - self._m_prev)
            out = self._cx[i] * x - self._cm[i] * m0 - (0.5 * self._cm[i]) * d1
        else:
            out = self._cx[i] * x - self._cm[i] * m0
        self._m_prev = m0
        return out.to(sample.dtype)


class UniPCSolver(Solver):
    """UniPC (UniP predictor + UniC corrector), order 2, bh2, x0 prediction, lower order on the last step."""

    name = "unipc"
    order = 2

    def __init__(self, *, steps: int, shift: float = 5.0) -> None:
        super().__init__(steps=steps, shift=shift)
        s = self.sigmas
        n = steps
        # Predictor order at step i: warm-up (order 1 first), lower order on the final step.
        self._order = [min(self.order, n - i, i + 1) for i in range(n)]
        self._p: list[tuple[torch.Tensor, ...]] = []  # predictor: (c_x, c_m0, c_res, rk)
        self._c: list[tuple[torch.Tensor, ...] | None] = [None]  # corrector, i >= 1: (c_x, c_m0, c_res, rk, rhos)
        for i in range(n):
            self._p.append(self._coefs(s, t_idx=i + 1, s0_idx=i, order=self._order[i], corrector=False))
        for i in range(1, n):
            self._c.append(self._coefs(s, t_idx=i, s0_idx=i - 1, order=self._order[i - 1], corrector=True))
        self._m: list[torch.Tensor] = []  # the last two x0 predictions, oldest first
        self._last_sample: torch.Tensor | None = None

    @staticmethod
    def _coefs(s: torch.Tensor, *, t_idx: int, s0_idx: int, order: int, corrector: bool) -> tuple[torch.Tensor, ...]:
        """Scalar coefficients of one UniP (predictor) or UniC (corrector) update, float32 as the reference."""
        sig_t, sig_s0 = s[t_idx], s[s0_idx]
        alpha_t = 1 - sig_t
        h = _lam(sig_t) - _lam(sig_s0)
        hh = -h  # x0 prediction
        h_phi_1 = torch.expm1(hh)
        b_h = torch.expm1(hh)  # bh2
        c_x = sig_t / sig_s0
        c_m0 = alpha_t * h_phi_1
        c_res = alpha_t * b_h
        rk = torch.ones(())
        if order == 2:
            rk = (_lam(s[s0_idx - 1]) - _lam(sig_s0)) / h
        if not corrector:
            return (c_x, c_m0, c_res, rk)  # rho_p = 0.5 for order 2
        if order == 1:
            rhos = torch.tensor([0.5])
        else:
            rks_t = torch.stack([rk, torch.ones(())])
            big_r, b = [], []
            h_phi_k = h_phi_1 / hh - 1
            factorial = 1
            for k in range(1, order + 1):
                big_r.append(torch.pow(rks_t, k - 1))
                b.append(h_phi_k * factorial / b_h)
                factorial *= k + 1
                h_phi_k = h_phi_k / hh - 1 / factorial
            rhos = torch.linalg.solve(torch.stack(big_r), torch.stack(b))
        return (c_x, c_m0, c_res, rk, rhos)

    def step(self, velocity: torch.Tensor, index: int, sample: torch.Tensor) -> torch.Tensor:
        self._advance(index)
        i = index
        dtype = sample.dtype
        m_new = sample - self._s[i] * velocity  # x0 prediction
        x = sample
        if i > 0:  # UniC: correct the sample that the previous predictor produced, using the new x0 prediction
            c_x, c_m0, c_res, rk, rhos = self._c[i]
            rhos = rhos.to(dtype)  # host op; the reference casts the solved coefficients to the sample dtype
            m0 = self._m[-1]
            x_base = c_x * self._last_sample - c_m0 * m0
            corr = rhos[-1] * (m_new - m0)
            if len(rhos) == 2:
                corr = rhos[0] * ((self._m[-2] - m0) / rk) + corr
            x = (x_base - c_res * corr).to(dtype)
        self._m = (self._m + [m_new])[-self.order :]
        self._last_sample = x
        c_x, c_m0, c_res, rk = self._p[i]
        m0 = self._m[-1]
        out = c_x * x - c_m0 * m0
        if self._order[i] == 2:
            out = out - c_res * (0.5 * ((self._m[-2] - m0) / rk))
        return out.to(dtype)


_CLASSES = {"unipc": UniPCSolver, "euler": EulerSolver, "dpm++": DPMSolver}


def make_solver(name: str, *, steps: int, shift: float = 5.0) -> Solver:
    """A fresh solver for one sampling run.

    Args:
        name: ``"unipc"`` (official default), ``"euler"`` or ``"dpm++"``.
        steps: number of model evaluations (official default 50).
        shift: time shift of the flow schedule (official default 5.0).
    """
    key = name.strip().lower() if isinstance(name, str) else name
    if key not in _CLASSES:
        raise ValueError(f"unknown solver {name!r}; choose one of {', '.join(SOLVERS)}")
    return _CLASSES[key](steps=steps, shift=shift)
