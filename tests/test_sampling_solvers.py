"""Flow schedules and solvers: golden outputs of the official solvers, diffusers as an oracle, analytic toy field."""

import json
import os
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ovi_core.sampling.schedules import dpm_schedule, euler_schedule, unipc_schedule
from ovi_core.sampling.solvers import SOLVERS, make_solver

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


@pytest.fixture(scope="module")
def golden():
    with open(os.path.join(DATA, "sampler.json")) as f:
        cfg = json.load(f)
    return cfg, load_file(os.path.join(DATA, "sampler.io.safetensors"))


def field(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The golden case's fixed velocity field, t being the timestep the solver passes (0-1000 scale)."""
    return 0.7 * x - 0.3 * torch.sin(t / 200)


def run(solver, x: torch.Tensor, trajectory: bool = False):
    out = []
    for i, t in enumerate(solver.timesteps):
        x = solver.step(field(x, t), i, x)
        out.append(x)
    return out if trajectory else x


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.mark.parametrize("name", SOLVERS)
def test_golden(golden, name):
    cfg, g = golden
    solver = make_solver(name, steps=cfg["steps"], shift=cfg["shift"])
    ref_t = g[f"cases.{name}.timesteps"]
    assert solver.timesteps.dtype == ref_t.dtype
    assert torch.equal(solver.timesteps, ref_t)
    final = run(solver, g["inputs.start"].clone())
    assert rel(final, g[f"cases.{name}.final"]) < 1e-5
    assert torch.allclose(final, g[f"cases.{name}.final"], atol=1e-5, rtol=1e-5)


def test_reference_timestep_values():
    """OVI_REFERENCE section 5: 50 UniPC steps at shift 5 run 999, 995, 991, ..., 302, 241, 172, 92."""
    _, t = unipc_schedule(50, 5.0)
    assert t[:3].tolist() == [999, 995, 991] and t[-4:].tolist() == [302, 241, 172, 92]
    s, t = dpm_schedule(50, 5.0)
    assert t[0].item() == 1000 and s[0].item() == 1.0
    s, t = euler_schedule(50, 5.0)
    assert t.dtype == torch.float32 and s[-1].item() == 0.0 and 24.0 < t[-1].item() < 25.0


@pytest.mark.parametrize("name", SOLVERS)
def test_schedule_shape(name):
    for steps in (1, 2, 7):
        s = make_solver(name, steps=steps, shift=3.0)
        assert s.sigmas.shape == (steps + 1,) and s.timesteps.shape == (steps,)
        assert s.sigmas.dtype == torch.float32 and s.sigmas[-1].item() == 0.0
        assert bool((s.sigmas[1:] < s.sigmas[:-1]).all())


@pytest.mark.parametrize("name", SOLVERS)
@pytest.mark.parametrize("steps", [1, 2, 3, 10])
def test_linear_field_reaches_x0(name, steps):
    """With the exact straight-path velocity v = (x - x0) / sigma every solver lands on x0."""
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 3, 4, generator=gen, dtype=torch.float64)
    solver = make_solver(name, steps=steps, shift=5.0)
    x = solver.sigmas[0].item() * torch.randn(2, 3, 4, generator=gen, dtype=torch.float64)
    x = x + (1 - solver.sigmas[0].item()) * x0
    for i in range(steps):
        x = solver.step((x - x0) / solver.sigmas[i].item(), i, x)
    assert torch.allclose(x, x0, atol=1e-5)


@pytest.mark.parametrize("name", SOLVERS)
def test_dtype_and_shape_kept(name):
    solver = make_solver(name, steps=3)
    x = torch.randn(1, 5, 20, dtype=torch.bfloat16)
    for i in range(3):
        x = solver.step(torch.randn(1, 5, 20, dtype=torch.bfloat16), i, x)
        assert x.dtype == torch.bfloat16 and x.shape == (1, 5, 20)


def test_errors():
    with pytest.raises(ValueError, match="unknown solver"):
        make_solver("heun", steps=10)
    with pytest.raises(ValueError, match="steps"):
        make_solver("unipc", steps=0)
    with pytest.raises(ValueError, match="shift"):
        make_solver("unipc", steps=10, shift=0.0)
    solver = make_solver("unipc", steps=3)
    x = torch.zeros(2)
    with pytest.raises(ValueError, match="fresh solver"):
        solver.step(x, 1, x)
    solver.step(x, 0, x)
    with pytest.raises(ValueError, match="fresh solver"):
        solver.step(x, 0, x)


# --- diffusers as an independent oracle (test-only dependency) ---


@pytest.fixture(scope="module")
def diffusers_mod():
    pytest.importorskip("diffusers")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import diffusers
    return diffusers


def _drive(sched, x, timesteps):
    out = []
    for t in timesteps:
        x = sched.step(field(x, t), t, x, return_dict=False)[0]
        out.append(x)
    return out


@pytest.mark.parametrize("steps,shift", [(50, 5.0), (20, 3.0), (7, 5.0), (3, 8.0)])
def test_unipc_matches_diffusers(diffusers_mod, golden, steps, shift):
    """diffusers' UniPCMultistepScheduler configured for flow (use_flow_sigmas, flow_shift) is the same algorithm.

    Its sigma grid is built as ``1 - linspace(1, 0.001)`` instead of ``linspace(0.999, 0)``, which differs by an
    ulp, so integer timesteps may differ by 1 where the truncation falls on a boundary (never for 50 steps at
    shift 5, checked by test_golden); the trajectory is compared step by step.
    """
    sched = diffusers_mod.UniPCMultistepScheduler(
        num_train_timesteps=1000,
        solver_order=2,
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        flow_shift=shift,
        predict_x0=True,
        solver_type="bh2",
        lower_order_final=True,
        final_sigmas_type="zero",
    )
    sched.set_timesteps(steps)
    ours = make_solver("unipc", steps=steps, shift=shift)
    assert (sched.timesteps - ours.timesteps).abs().max().item() <= 1
    assert torch.allclose(sched.sigmas, ours.sigmas, atol=1e-6)
    start = golden[1]["inputs.start"][:1]
    ref = _drive(sched, start.clone(), ours.timesteps)
    got = run(ours, start.clone(), trajectory=True)
    for a, b in zip(got, ref, strict=True):
        assert rel(a, b) < 1e-5


@pytest.mark.parametrize("steps,shift", [(50, 5.0), (20, 3.0), (7, 5.0), (3, 8.0)])
def test_euler_matches_diffusers(diffusers_mod, golden, steps, shift):
    sched = diffusers_mod.FlowMatchEulerDiscreteScheduler(shift=shift)
    sched.set_timesteps(steps)
    ours = make_solver("euler", steps=steps, shift=shift)
    assert torch.equal(sched.timesteps, ours.timesteps) and torch.equal(sched.sigmas, ours.sigmas)
    start = golden[1]["inputs.start"][:1]
    for a, b in zip(run(ours, start.clone(), True), _drive(sched, start.clone(), ours.timesteps), strict=True):
        assert torch.equal(a, b)
    # bfloat16 latents, as the official pipeline: same rounding as diffusers, bit for bit
    sched.set_timesteps(steps)
    ours = make_solver("euler", steps=steps, shift=shift)
    start = start.to(torch.bfloat16)
    for a, b in zip(run(ours, start.clone(), True), _drive(sched, start.clone(), ours.timesteps), strict=True):
        assert a.dtype == torch.bfloat16 and torch.equal(a, b)


@pytest.mark.parametrize("steps,shift", [(50, 5.0), (20, 3.0), (7, 5.0), (3, 8.0)])
def test_dpm_matches_diffusers(diffusers_mod, golden, steps, shift):
    """diffusers' DPMSolverMultistepScheduler (flow sigmas, dpmsolver++, midpoint, order 2, final sigma 0).

    Its own flow grid starts at sigma 0.999 whereas the official DPM++ path starts at exactly 1 (Wan's
    ``get_sampling_sigmas``), and its ``set_timesteps`` accepts no custom sigmas, so the official sigmas and
    timesteps are assigned after ``set_timesteps``; the update rule is then diffusers' own.
    """
    sched = diffusers_mod.DPMSolverMultistepScheduler(
        num_train_timesteps=1000,
        solver_order=2,
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        flow_shift=shift,
        algorithm_type="dpmsolver++",
        solver_type="midpoint",
        lower_order_final=True,
        final_sigmas_type="zero",
    )
    sched.set_timesteps(steps)
    sig = np.linspace(1, 0, steps + 1)[:steps]
    sig = shift * sig / (1 + (shift - 1) * sig)
    sched.sigmas = torch.from_numpy(np.concatenate([sig, [0.0]]).astype(np.float32))
    sched.timesteps = torch.from_numpy(sig * 1000).to(torch.int64)
    ours = make_solver("dpm++", steps=steps, shift=shift)
    assert torch.equal(sched.timesteps, ours.timesteps) and torch.equal(sched.sigmas, ours.sigmas)
    start = golden[1]["inputs.start"][:1]
    for a, b in zip(run(ours, start.clone(), True), _drive(sched, start.clone(), ours.timesteps), strict=True):
        assert rel(a, b) < 1e-5


@pytest.mark.parametrize("name", SOLVERS)
def test_step_has_no_host_reads(name):
    """Steps run on meta tensors, so they never read tensor values on the host (no device sync per step)."""
    solver = make_solver(name, steps=4)
    x = torch.empty(1, 48, 2, 4, 4, device="meta", dtype=torch.bfloat16)
    for i in range(4):
        x = solver.step(torch.empty_like(x), i, x)
    assert x.device.type == "meta" and x.dtype == torch.bfloat16


@pytest.mark.parametrize("name", SOLVERS)
@pytest.mark.parametrize("steps", [50, 7])
def test_bfloat16_matches_official(name, steps):
    """bfloat16 latents (as the official pipeline) against outputs recorded from the official solvers.

    ``tests/data/sampler_bf16.json`` says how they were made. The coefficients must round to bfloat16 exactly as
    the official 0-d float32 tensors do; coefficients applied as Python floats land about 1e-2 away.
    """
    g = load_file(os.path.join(DATA, "sampler_bf16.io.safetensors"))
    final = run(make_solver(name, steps=steps, shift=5.0), g["inputs.start"].clone())
    ref = g[f"cases.{name}.steps{steps}.final"]
    assert final.dtype == torch.bfloat16
    assert rel(final, ref) < 1e-3
