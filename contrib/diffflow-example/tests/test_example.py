"""diffflow-example: the Ornstein-Uhlenbeck flow against its closed-form law, the midpoint solver's order,
and the plugin seen through the entry point exactly as a user sees it."""
from __future__ import annotations

from importlib import metadata

import pytest
import torch

from diffflow_core import ConfigError, Flow, registry
from diffflow_example.flows import OrnsteinUhlenbeck
from diffflow_example.solvers import Midpoint

testing = pytest.importorskip("diffflow_solvers.testing")


def installed() -> bool:
    return any(ep.name == "example" for ep in metadata.entry_points(group="diffflow"))


@pytest.mark.skipif(not installed(), reason="diffflow-example is not pip-installed")
def test_listed_active_and_usable_by_name(fresh_plugins, monkeypatch):
    monkeypatch.setenv("DIFFFLOW_LOAD_PLUGINS", "example")
    flows, solvers = fresh_plugins.registry("flows"), fresh_plugins.registry("solvers")
    info = fresh_plugins.manager().plugins["example"]
    assert (info.status, info.distribution, info.error) == ("active", "diffflow-example", None)
    assert info.hooks == ["register_flows", "register_solvers"] and info.components == 2
    assert flows.entry("ornstein-uhlenbeck").distribution == "diffflow-example"
    flow = flows.create("ornstein-uhlenbeck", theta=2.0, mu=1.0)
    x = solvers.create("midpoint").solve(flow, torch.zeros(3, 1, dtype=torch.float64),
                                         torch.linspace(0, 1, 65, dtype=torch.float64)).x
    assert torch.allclose(x, flow.mean(0.0, 1.0).expand_as(x), rtol=1e-4)


def test_hooks_register_by_name(fresh_plugins, monkeypatch):
    """The hooks module works without installing the distribution (the pattern docs/plugins.md shows)."""
    import diffflow_example.plugin as hooks

    monkeypatch.setenv("DIFFFLOW_LOAD_PLUGINS", "solvers")  # keep an installed copy out (else: ambiguous)
    info = fresh_plugins.register_plugin(hooks, "example-under-test")
    assert info.status == "active" and info.components == 2
    flow = fresh_plugins.registry("flows").create("ornstein-uhlenbeck", theta=2.0)
    assert isinstance(flow, OrnsteinUhlenbeck) and flow.theta == 2.0
    assert isinstance(fresh_plugins.registry("solvers").create("midpoint"), Midpoint)


def test_midpoint_is_second_order_on_linear_decay():
    order = testing.fitted_order(Midpoint(), testing.decay_problem(), (16, 32, 64, 128))
    assert abs(order - 2) < 0.25, order


def test_midpoint_converges_on_the_edm_gaussian_pf_ode():
    """On this field the midpoint rule is one order better than in general, and we assert what is measured.

    For ``x' = a(sigma) x`` one midpoint step has local error ``x h^3 (a^3/6 + a a'/4 + a''/24) + O(h^4)``;
    with ``a = sigma / (s^2 + sigma^2)`` that bracket is identically zero (times ``12 u^3 / sigma``,
    ``u = s^2 + sigma^2``: ``2 sigma^2 + 3 (s^2 - sigma^2) - (3 s^2 - sigma^2) = 0``). So the local error is
    O(h^4) and the fitted global order is 3; Heun on the same problem measures 2."""
    problem = testing.edm_gaussian_problem()
    order = testing.fitted_order(Midpoint(), problem, (16, 32, 64, 128))
    assert abs(order - 3) < 0.25, order
    flow, t0 = problem.flow, torch.tensor(1.0, dtype=torch.float64)
    x0 = torch.ones(1, 1, dtype=torch.float64)
    local = [float((Midpoint().solve(flow, x0, torch.stack([t0, t0 + h])).x - flow.exact(x0, 1.0, 1.0 + h)).abs())
             for h in (0.1, 0.05, 0.025)]
    assert -testing.fitted_slope((0.1, 0.05, 0.025), local) == pytest.approx(-4, abs=0.2)


class TwoGaussians(Flow):
    """EDM PF-ODE ``dx/dsigma = (x - D)/sigma`` for data ``(N(-1, s^2) + N(1, s^2)) / 2``, whose ideal denoiser is
    ``D = sum_k w_k(x) (s^2 x + sigma^2 mu_k) / (s^2 + sigma^2)``, ``w_k`` the posterior weights (SPEC §2.6)."""

    def __init__(self, s: float = 0.3) -> None:
        super().__init__()
        self.s = s

    def drift(self, x, t):
        var = self.s ** 2 + t ** 2
        means = torch.tensor([-1.0, 1.0], dtype=x.dtype)
        weights = torch.softmax(-(x - means) ** 2 / (2 * var), dim=-1)
        denoised = (weights * (self.s ** 2 * x + t ** 2 * means) / var).sum(-1, keepdim=True)
        return (x - denoised) / t


def test_midpoint_is_second_order_on_a_generic_edm_pf_ode():
    """Without the Gaussian's cancellation the midpoint rule is order 2 on the EDM rho-grid (measured 1.94);
    the reference is a 2048-step Heun solve, ~25x more accurate than the finest midpoint solve here."""
    flow = TwoGaussians()
    x0 = torch.tensor([[80.0], [-30.0], [5.0]], dtype=torch.float64)

    def grid(steps):
        return registry("grids").get("edm")(steps, sigma_min=0.002, sigma_max=80.0, append_zero=False,
                                            dtype=torch.float64)

    reference = registry("solvers").create("heun").solve(flow, x0, grid(2048)).x
    steps = (64, 128, 256, 512)
    errors = [float((Midpoint().solve(flow, x0, grid(n)).x - reference).abs().max()) for n in steps]
    assert abs(-testing.fitted_slope(steps, errors) - 2) < 0.25, errors


def test_midpoint_counts_two_evaluations_per_step_and_rejects_sdes():
    solver = Midpoint()
    assert solver.solve(OrnsteinUhlenbeck(), torch.ones(2, 1), torch.linspace(0, 1, 6)).nfe == 10 == solver.nfe(5, None)
    with pytest.raises(ConfigError, match="integrates ODEs only"):
        solver.solve(OrnsteinUhlenbeck(sigma=1.0), torch.ones(2, 1), torch.linspace(0, 1, 6))


def test_ou_sde_matches_its_closed_form_law():
    """From x0 ~ N(3, 0.25): E[x_1] and Var[x_1] of Euler-Maruyama (200 steps) match the closed form."""
    flow = OrnsteinUhlenbeck(theta=1.5, mu=-1.0, sigma=0.8)
    assert flow.is_stochastic and not OrnsteinUhlenbeck(sigma=0.0).is_stochastic
    gen = torch.Generator().manual_seed(0)
    x0 = 3.0 + 0.5 * torch.randn(50_000, 1, generator=gen, dtype=torch.float64)
    x = registry("solvers").create("euler-maruyama").solve(flow, x0, torch.linspace(0, 1, 201, dtype=torch.float64),
                                                           generator=gen).x
    assert float(x.mean()) == pytest.approx(float(flow.mean(3.0, 1.0)), abs=0.01)
    assert float(x.var()) == pytest.approx(float(flow.variance(0.25, 1.0)), rel=0.02)


def test_ou_stationary_law_is_preserved():
    flow = OrnsteinUhlenbeck(theta=0.7, mu=2.0, sigma=1.2)
    stationary = flow.sigma ** 2 / (2 * flow.theta)
    assert float(flow.variance(stationary, 5.0)) == pytest.approx(stationary, rel=1e-12)
    assert float(flow.mean(2.0, 5.0)) == 2.0


@pytest.mark.parametrize("params,field", [({"theta": 0.0}, "theta"), ({"theta": -1.0}, "theta"),
                                          ({"sigma": -0.1}, "sigma"), ({"mu": float("nan")}, "mu"),
                                          ({"theta": "1"}, "theta")])
def test_bad_parameters_name_the_field(params, field):
    with pytest.raises(ConfigError, match=f"^{field}: expected"):
        OrnsteinUhlenbeck(**params)
