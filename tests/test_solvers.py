"""The Solver contract (DESIGN §1) as every registered solver implements it: direction, NFE in the returned
Solution (and as declared by ``Solver.nfe``), recording, callbacks, NaN/Inf reporting, capability checks and
explicit step counts."""
from __future__ import annotations

import math

import pytest
import torch

from diffflow_core import ConfigError, Flow, Solver, StepInfo, registry
from diffflow_core.interfaces import check_steps

ODE_SOLVERS = ["euler", "heun", "euler-maruyama"]


class Decay(Flow):
    def drift(self, x, t):
        return -x


class Noisy(Decay):
    def diffusion(self, t):
        return 0.5


class BlowUp(Flow):
    """Finite until t crosses 0.5, then NaN."""

    def drift(self, x, t):
        return x * (float("nan") if float(t) >= 0.5 else 1.0)


class SingularAtZero(Flow):
    """EDM-like: the drift may not be evaluated at the final time 0."""

    singular_end = True

    def drift(self, x, t):
        assert float(t) > 0, "drift evaluated at the singular end"
        return x / t


def solver(name: str) -> Solver:
    return registry("solvers").create(name)


@pytest.mark.parametrize("name", ODE_SOLVERS)
def test_decreasing_grid_integrates_backwards(name):
    """From x(1) = e^{-1} back to t = 0 recovers x(0) = 1 (time may decrease)."""
    x1 = torch.full((3, 2), math.exp(-1), dtype=torch.float64)
    x0 = solver(name).solve(Decay(), x1, torch.linspace(1, 0, 201, dtype=torch.float64)).x
    assert torch.allclose(x0, torch.ones_like(x0), atol=1e-2 if name != "heun" else 1e-5)


@pytest.mark.parametrize("name,nfe_per_step", [("euler", 1), ("heun", 2), ("euler-maruyama", 1)])
def test_nfe_counts_drift_evaluations(name, nfe_per_step):
    calls = []

    class Counting(Decay):
        def drift(self, x, t):
            calls.append(float(t))
            return super().drift(x, t)

    s = solver(name)
    assert s.solve(Counting(), torch.ones(4, 1), torch.linspace(0, 1, 8)).nfe == 7 * nfe_per_step == len(calls)
    assert s.solve(Counting(), torch.ones(4, 1), torch.linspace(0, 1, 3)).nfe == 2 * nfe_per_step
    assert s.nfe(7, Counting()) == 7 * nfe_per_step and s.evaluations_per_step == nfe_per_step
    assert not vars(s), "a solver keeps no per-call state"


def test_heun_skips_its_correction_on_a_last_step_into_a_singular_end():
    """EDM's rule: 2N - 1 evaluations and none at sigma = 0."""
    sigmas = registry("grids").get("edm")(5, dtype=torch.float64)
    s = solver("heun")
    assert s.solve(SingularAtZero(), torch.ones(2, 1, dtype=torch.float64), sigmas).nfe == 2 * 5 - 1
    assert s.nfe(5, SingularAtZero()) == 9 and s.steps_for(9, SingularAtZero()) == s.steps_for(10, SingularAtZero()) == 5


def test_record_and_callback_report_every_step():
    seen: list[StepInfo] = []
    s = solver("heun")
    times = torch.linspace(0, 1, 5, dtype=torch.float64)
    out = s.solve(Decay(), torch.ones(3, 1, dtype=torch.float64), times, record=True, callback=seen.append)
    assert out.trajectory.shape == (5, 3, 1) and torch.equal(out.trajectory[-1], out.x)
    assert torch.equal(out.trajectory[0], torch.ones(3, 1, dtype=torch.float64)) and torch.equal(out.times, times)
    assert [i.i for i in seen] == [0, 1, 2, 3] and [i.nfe for i in seen] == [2, 4, 6, 8]
    assert torch.equal(torch.stack([i.t for i in seen]), times[1:])
    unrecorded = s.solve(Decay(), torch.ones(3, 1), times)
    assert unrecorded.trajectory is None and unrecorded.times is None


@pytest.mark.parametrize("name,where", [("euler", r"step 3/4 \(t=0\.75\)"), ("euler-maruyama", r"step 3/4 \(t=0\.75\)"),
                                        ("heun", r"step 2/4 \(t=0\.5\)")])  # heun evaluates at t1 too
def test_nan_stops_the_solve_naming_step_and_time(name, where):
    with pytest.raises(FloatingPointError, match=f"particles after {where}: 2 non-finite value"):
        solver(name).solve(BlowUp(), torch.ones(2, 1), torch.linspace(0, 1, 5))


class Untouchable(Decay):
    """A flow whose drift must never run (checks that happen before any work)."""

    def drift(self, x, t):
        raise AssertionError("drift evaluated")


class UntouchableNoisy(Untouchable, Noisy):
    pass


def test_non_finite_initial_particles_are_rejected_before_any_work():
    x0 = torch.tensor([[1.0], [float("inf")]])
    with pytest.raises(FloatingPointError, match="x0: 1 non-finite"):
        solver("euler").solve(Untouchable(), x0, torch.linspace(0, 1, 3))


@pytest.mark.parametrize("name", ["euler", "heun"])
def test_ode_solvers_reject_stochastic_flows(name):
    s = solver(name)
    assert not s.stochastic
    with pytest.raises(ConfigError, match="integrates ODEs only.*non-zero diffusion.*euler-maruyama"):
        s.solve(UntouchableNoisy(), torch.ones(2, 1), torch.linspace(0, 1, 3))


def test_euler_maruyama_is_reproducible_from_its_generator_and_noise_uses_abs_dt():
    em = solver("euler-maruyama")
    assert em.stochastic and em.order == 1
    times = torch.linspace(1, 0, 11, dtype=torch.float64)
    x0 = torch.zeros(50_000, 1, dtype=torch.float64)
    a = em.solve(Noisy(), x0, times, generator=torch.Generator().manual_seed(3)).x
    b = em.solve(Noisy(), x0, times, generator=torch.Generator().manual_seed(3)).x
    assert torch.equal(a, b)
    # backwards in time the drift -x grows the spread; the noise still adds 0.25 * |dt| per step
    expected = sum(0.25 * 0.1 * 1.1 ** (2 * k) for k in range(10))
    assert float(a.var()) == pytest.approx(expected, rel=0.03)


@pytest.mark.parametrize("times,match", [
    (torch.tensor([0.0]), "at least 2 points"), (torch.zeros(2, 2), "1-D grid"),
    (torch.tensor([0.0, 0.5, 0.5, 1.0]), "strictly monotone"), (torch.tensor([0.0, 1.0, 0.5]), "strictly monotone")])
def test_bad_grids_are_rejected(times, match):
    with pytest.raises(ConfigError, match=f"^times: expected.*{match}"):
        solver("euler").solve(Decay(), torch.ones(1, 1), times)


@pytest.mark.parametrize("steps", [0, -3, 2.5, True, None, "10"])
def test_step_counts_must_be_explicit_positive_integers(steps):
    with pytest.raises(ConfigError, match=f"steps: expected a positive integer number of solver steps, got {steps!r}"):
        check_steps(steps)
    with pytest.raises(ConfigError, match="steps:"):
        Decay().time_grid(steps)


def test_model_sampling_needs_an_explicit_step_count():
    from diffflow_core.model import Model

    model = Model(Decay())
    with pytest.raises(ConfigError, match="steps: sampling needs an explicit number of solver steps"):
        model.sample(4)
    samples = model.sample(4, steps=3, seed=0)
    assert samples.nfe == 3 and samples.x.shape == (4,) + Decay.event_shape
