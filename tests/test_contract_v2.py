"""Kernel contract v2 (issue 19, DESIGN §1 and §7): a solve is a pure function of its inputs.

``Flow.is_stochastic`` follows from what ``diffusion`` returns; ``Solver.solve`` returns a ``Solution`` and the
base class counts every evaluation; solvers declare their evaluations per step (so ``--nfe`` maps to steps for
a multistep solver) and what they require of a flow (refused before any work); randomness and sampling options
reach the flow in a per-call ``SamplingContext``, so one model and one solver serve two threads at once.
"""
from __future__ import annotations

import json
import math
import threading

import pytest
import torch
from torch import Tensor

from diffflow_core import (ConfigError, Evaluator, Flow, SamplingContext, Solution, Solver, build, register,
                           registry)
from diffflow_core.cli import main
from diffflow_core.commands.run import steps_for_nfe
from diffflow_core.model import Model

F64 = torch.float64


class ZeroDiffusion(Flow):
    """A third-party ODE flow written to the contract: it overrides ``diffusion`` and returns 0."""

    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        return -x

    def diffusion(self, t: Tensor) -> float:
        return 0.0


class LateNoise(ZeroDiffusion):
    """Stochastic only on part of its grid: the value decides, wherever it is non-zero."""

    def diffusion(self, t: Tensor) -> Tensor:
        return torch.where(torch.as_tensor(t) > 0.5, 0.3, 0.0)


class DeclaredStochastic(ZeroDiffusion):
    stochastic = True


class Untouchable(Flow):
    """Any evaluation of this flow's drift is a failure: checks must come before any work."""

    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        raise AssertionError("drift evaluated")


class Recording(Flow):
    """A flow that opts into the sampling context and records what it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[int, int, dict, torch.Generator | None]] = []

    def drift(self, x: Tensor, t: Tensor, context: SamplingContext) -> Tensor:
        self.seen.append((context.step, context.steps, dict(context.options), context.generator))
        return -x


class AdamsBashforth2(Solver):
    """A third-party linear-multistep solver: ``x_{n+1} = x_n + h_n (f_n + h_n / (2 h_{n-1}) (f_n - f_{n-1}))``,
    started by one Euler step; one evaluation per step at order 2. Past velocities live in the solve's
    :attr:`Evaluator.memory`, never on the solver."""

    order = 2
    evaluations_per_step = 1

    def step(self, drift: Evaluator, x: Tensor, t0: Tensor, t1: Tensor) -> Tensor:
        h, v = t1 - t0, drift.velocity(x, t0)
        previous = drift.memory.get("previous")
        drift.memory["previous"] = (v, h)
        if previous is None:
            return x + h * v
        v_old, h_old = previous
        return x + h * (v + h / (2 * h_old) * (v - v_old))


# -- (a) is_stochastic from diffusion's value --------------------------------------------------------------------
@pytest.mark.parametrize("name", ["euler", "heun"])
def test_a_flow_whose_diffusion_returns_zero_solves_with_ode_solvers(name):
    flow = ZeroDiffusion()
    assert not flow.is_stochastic
    out = registry("solvers").create(name).solve(flow, torch.ones(3, 1, dtype=F64), torch.linspace(0, 1, 201, dtype=F64))
    assert isinstance(out, Solution)
    assert torch.allclose(out.x, torch.full((3, 1), math.exp(-1), dtype=F64), atol=1e-2)


def test_stochastic_follows_the_values_or_an_explicit_declaration():
    assert LateNoise().is_stochastic and DeclaredStochastic().is_stochastic
    with pytest.raises(ConfigError, match="solver Heun integrates ODEs only, but flow LateNoise"):
        registry("solvers").create("heun").solve(LateNoise(), torch.ones(2, 1), torch.linspace(0, 1, 3))


# -- (b) evaluations per step, and a third-party multistep solver -------------------------------------------------
def test_nfe_and_steps_for_are_inverse_for_every_registered_solver():
    flows = [ZeroDiffusion()]
    singular = ZeroDiffusion()
    singular.singular_end = True
    flows.append(singular)
    for name in registry("solvers").names():
        solver = registry("solvers").create(name)
        if solver.adaptive:  # no step count fits a budget: refused, naming the tolerances (kit: _check_adaptive)
            with pytest.raises(ConfigError, match="rtol/atol"):
                solver.steps_for(7, flows[0])
            continue
        for flow in flows:
            for steps in (1, 2, 7):
                nfe = solver.nfe(steps, flow)
                assert solver.steps_for(nfe, flow) == steps, name
                assert solver.steps_for(nfe - 1, flow) == steps - 1, name


def test_a_linear_multistep_solver_gets_steps_equal_to_nfe_and_has_order_two(fresh_plugins, tmp_path):
    from diffflow_solvers.testing import decay_problem, fitted_order

    solver = AdamsBashforth2()
    assert fitted_order(solver, decay_problem(), steps=(16, 32, 64, 128)) == pytest.approx(2.0, abs=0.15)
    out = solver.solve(ZeroDiffusion(), torch.ones(2, 1), torch.linspace(0, 1, 11))
    assert out.nfe == 10 and not vars(solver)

    register("solvers", "ab2", AdamsBashforth2, "Adams-Bashforth 2 (test)")
    model = build(preset="flow-matching", solver={"name": "ab2"})
    assert steps_for_nfe(model, 7) == 7
    argv = ["run", "--preset", "flow-matching", "--solver", "ab2", "--nfe", "7", "--steps", "1", "--n", "16",
            "--seed", "0", "--out", str(tmp_path / "run"), "--set", "train.progress=false",
            "--set", "sample.likelihood_steps=2", "--set", "sample.likelihood_points=16"]
    assert main(argv) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["solver_steps"] == 7 and metrics["nfe"] == 7


# -- (c) one model and one solver, two threads -------------------------------------------------------------------
@pytest.mark.parametrize("preset,calls", [
    ("langevin", [{"seed": 1}, {"seed": 2}]),  # Euler-Maruyama: the noise comes from each call's generator
    ("scoreflow-translate", [{"seed": 0, "label": 0}, {"seed": 0, "label": 1, "guidance": 2.0}]),
])
def test_concurrent_samples_from_a_shared_model_equal_sequential_ones(preset, calls):
    model = build(preset=preset)
    sequential = [model.sample(64, 6, **call).x for call in calls]
    results: list[Tensor | None] = [None] * len(calls)
    barrier = threading.Barrier(len(calls))

    def draw(i: int) -> None:
        barrier.wait()
        for _ in range(3):  # several rounds so the steps of the two solves interleave
            results[i] = model.sample(64, 6, **calls[i]).x

    threads = [threading.Thread(target=draw, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not torch.equal(sequential[0], sequential[1])
    for got, expected in zip(results, sequential):
        assert torch.equal(got, expected)


# -- (d) the same seed, the same samples, for every preset -------------------------------------------------------
def _draws_noise(model: Model) -> bool:
    """Whether sampling this model draws random numbers after the prior: a stochastic solver on a stochastic
    flow, EDM churn, or a flow's own noise injection (the MMD flow)."""
    solver, flow = model.solver, model.flow
    return ((solver.stochastic and flow.is_stochastic) or getattr(solver, "s_churn", 0) > 0
            or getattr(flow, "noise", 0) > 0 or type(solver).__name__ in ("AnnealedLangevin", "AncestralDDPM"))


def test_the_same_seed_gives_the_same_samples_for_every_preset():
    noisy = []
    for name in sorted(registry("presets").names()):
        model = build(preset=name, **({"flow": {"noise": 0.2}} if name == "mmd" else {}))
        noisy += [name] if _draws_noise(model) else []
        torch.manual_seed(1)
        first = model.sample(8, 3, seed=5).x
        torch.manual_seed(2)  # a draw from torch's global generator would show
        assert torch.equal(model.sample(8, 3, seed=5).x, first), name
    assert {"langevin", "mmd", "ddpm"} <= set(noisy), noisy


# -- (e) requirements are refused before any work ----------------------------------------------------------------
@pytest.mark.parametrize("name,match", [
    ("ndm-ddpm", "solver AncestralDDPM: needs a flow with ancestral_step; flow Untouchable has no ancestral_step"),
    ("annealed-langevin", "solver AnnealedLangevin: needs a flow with score, schedule, denoise"),
    ("edm-churn", "solver edm-churn: needs a 'score' flow with parameterisation 'edm'"),
])
def test_a_solver_whose_requirement_the_flow_lacks_is_refused_before_any_work(name, match):
    solver = registry("solvers").create(name)
    with pytest.raises(ConfigError, match=match):
        solver.solve(Untouchable(), torch.ones(2, 2), torch.linspace(1, 0, 4))
    with pytest.raises(ConfigError, match=match):
        Model(Untouchable(), solver=solver).sample(2, 3)


def test_the_cli_refuses_a_mismatched_solver_before_training(tmp_path, capsys):
    argv = ["run", "--preset", "edm", "--solver", "ndm-ddim", "--steps", "1", "--out", str(tmp_path / "r")]
    assert main(argv) == 2
    assert "needs a flow with ancestral_step" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


# -- the sampling context ----------------------------------------------------------------------------------------
def test_the_context_reaches_the_flow_with_generator_options_and_step_index():
    flow, generator = Recording(), torch.Generator()
    flow.sampling_options = ("tag",)
    out = registry("solvers").create("heun").solve(flow, torch.ones(2, 1), torch.linspace(0, 1, 4),
                                                   context=SamplingContext(generator, {"tag": 7}))
    assert out.nfe == 6 == len(flow.seen)
    assert [(s, n) for s, n, _, _ in flow.seen] == [(0, 3), (0, 3), (1, 3), (1, 3), (2, 3), (2, 3)]
    assert all(o == {"tag": 7} and g is generator for _, _, o, g in flow.seen)
    assert torch.equal(flow.evaluate_drift(torch.ones(1, 1), torch.tensor(0.0)), -torch.ones(1, 1))


def test_sampling_options_are_validated_before_any_work():
    with pytest.raises(ConfigError, match=r"flow Untouchable accepts none as sampling options, got \['label'\]"):
        Model(Untouchable()).sample(2, 3, label=1)
    with pytest.raises(ConfigError, match="generator: give it inside context"):
        registry("solvers").create("euler").solve(Untouchable(), torch.ones(1, 1), [0.0, 1.0],
                                                  context=SamplingContext(), generator=torch.Generator())


def test_no_flow_or_solver_keeps_per_call_state():
    from diffflow_mmd.flow import MMDFlow

    flow = MMDFlow("ring5", points=50, noise=0.3)
    em = registry("solvers").create("euler")
    a = em.solve(flow, torch.zeros(20, 2), flow.time_grid(3), generator=torch.Generator().manual_seed(4)).x
    b = em.solve(flow, torch.zeros(20, 2), flow.time_grid(3), generator=torch.Generator().manual_seed(4)).x
    c = em.solve(flow, torch.zeros(20, 2), flow.time_grid(3), generator=torch.Generator().manual_seed(5)).x
    assert torch.equal(a, b) and not torch.equal(a, c)  # the injection noise is the context's generator's
    assert not [k for k in vars(flow) if "gen" in k.lower()]
    for name in ("euler", "heun", "euler-maruyama"):
        solver = registry("solvers").create(name)
        solver.solve(ZeroDiffusion(), torch.ones(1, 1), torch.linspace(0, 1, 3), record=True)
        assert not vars(solver), name
    churn = registry("solvers").create("edm-churn", s_churn=1.0)
    assert set(vars(churn)) == {"s_churn", "s_tmin", "s_tmax", "s_noise"}  # its parameters, no per-call state
