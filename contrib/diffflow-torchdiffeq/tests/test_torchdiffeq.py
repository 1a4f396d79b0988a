"""diffflow-torchdiffeq: the adapter keeps the adaptive-solver contract, counts torchdiffeq's own evaluations and
agrees with diffflow's dopri5; the entry point is seen as a user sees it. Skipped without torchdiffeq."""
from __future__ import annotations

import math
from importlib import metadata

import pytest
import torch

pytest.importorskip("torchdiffeq")

from diffflow_core import ConfigError, Flow, registry  # noqa: E402
from diffflow_core.testing import check_solver, decay_problem  # noqa: E402
from diffflow_torchdiffeq.solver import METHODS, TorchDiffEq  # noqa: E402

F64 = torch.float64


class Rotation(Flow):
    """``dx/dt = A x`` with ``A`` a rotation generator: ``x(t) = exp(tA) x(0)``, no decay to hide errors in."""

    def drift(self, x, t):
        return torch.stack([-x[:, 1], x[:, 0]], dim=1)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_keeps_the_adaptive_contract(method):
    check_solver(TorchDiffEq(method=method))


def test_nfe_is_what_torchdiffeq_evaluates_and_agrees_with_diffflow_dopri5():
    import torchdiffeq

    x0, calls = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=F64), []
    times = torch.tensor([0.0, 6.0], dtype=F64)

    def field(t, y):
        calls.append(t)
        return Rotation().drift(y, t)

    direct = torchdiffeq.odeint(field, x0, times, rtol=1e-7, atol=1e-7, method="dopri5")[-1]
    ours = TorchDiffEq(rtol=1e-7, atol=1e-7).solve(Rotation(), x0, times)
    assert ours.nfe == len(calls) and torch.equal(ours.x, direct)
    angle = torch.tensor(6.0, dtype=F64)
    exact = torch.stack([x0[:, 0] * angle.cos() - x0[:, 1] * angle.sin(),
                         x0[:, 0] * angle.sin() + x0[:, 1] * angle.cos()], dim=1)
    native = registry("solvers").create("dopri5", rtol=1e-7, atol=1e-7).solve(Rotation(), x0, times).x
    assert (ours.x - exact).abs().max() < 1e-5 and (native - exact).abs().max() < 1e-5


def test_budget_and_bad_parameters_are_refused_before_work():
    solver = TorchDiffEq()
    with pytest.raises(ConfigError, match="rtol/atol"):
        solver.steps_for(20, decay_problem().flow)
    with pytest.raises(ConfigError, match="method: expected one of"):
        TorchDiffEq(method="rk4")
    with pytest.raises(ConfigError, match="rtol"):
        TorchDiffEq(rtol=0.0)


def test_log_prob_at_a_tolerance_through_the_adapter():
    from diffflow_core.likelihood import log_prob

    testing = pytest.importorskip("diffflow_score.testing")
    s, sigma_min, sigma_max = 0.7, 0.002, 80.0
    flow = testing.exact_flow(testing.gaussian_denoiser(s), "edm", event_shape=(2,)).double()
    x = torch.randn(32, 2, generator=torch.Generator().manual_seed(0), dtype=F64) * s
    var = sigma_max ** 2 * (s ** 2 + sigma_min ** 2) / (s ** 2 + sigma_max ** 2)  # the model's exact law
    exact = -0.5 * (x.pow(2) / var + math.log(2 * math.pi * var)).sum(1)
    result = log_prob(flow, x, solver=TorchDiffEq(rtol=1e-6, atol=1e-6))
    assert (result.nats - exact).abs().max() < 1e-3


def installed() -> bool:
    return any(ep.name == "torchdiffeq" for ep in metadata.entry_points(group="diffflow"))


@pytest.mark.skipif(not installed(), reason="diffflow-torchdiffeq is not pip-installed")
def test_listed_active_and_usable_by_name(fresh_plugins, monkeypatch):
    monkeypatch.setenv("DIFFFLOW_LOAD_PLUGINS", "torchdiffeq")
    info = fresh_plugins.manager().plugins["torchdiffeq"]
    assert (info.status, info.distribution, info.error) == ("active", "diffflow-torchdiffeq", None)
    problem = decay_problem()
    solver = fresh_plugins.registry("solvers").create("torchdiffeq", method="bosh3", rtol=1e-6, atol=1e-6)
    assert isinstance(solver, TorchDiffEq) and solver.order == 3
    assert (solver.solve(problem.flow, problem.x0, problem.grid(1)).x - problem.exact).abs().max() < 1e-3
