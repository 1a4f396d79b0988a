"""Minibatch couplings of flow matching (issue 22 item 4): exact OT, Sinkhorn, and the Schrodinger bridge.

The exact plan is checked against brute force over permutations, Sinkhorn against the exact cost as reg -> 0,
the SB path against its own time derivative and against the closed-form Gaussian field, and every draw
against its generator.
"""
import itertools
import math

import pytest
import torch

from diffflow_core.errors import ConfigError
from diffflow_core.interfaces import Batch
from diffflow_velocity.couplings import brownian_bridge, draw_pairs, make_coupling, squared_cost, transport_plan
from diffflow_velocity.flow import VelocityFlow
from diffflow_velocity.objectives import FlowMatching


def points(n, d=2, seed=0, shift=0.0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + shift


def plan_cost(plan, x1, x2):
    return float((plan * squared_cost(x1, x2)).sum())


def linear_flow(d=2, **kwargs):
    torch.manual_seed(0)
    return VelocityFlow(network={"name": "mlp", "hidden": 16, "depth": 2}, event_shape=(d,), **kwargs).double()


@pytest.mark.parametrize("seed", range(4))
def test_exact_plan_is_the_cheapest_permutation(seed):
    x1, x2 = points(5, seed=seed), points(5, seed=seed + 100, shift=1.0)
    plan = transport_plan(x1, x2)
    support = (plan > 0).double()  # a permutation matrix (times 1/5)
    assert torch.equal(plan > 0, plan > 0.1) and torch.equal(support.sum(0), torch.ones(5, dtype=torch.float64))
    assert torch.equal(support.sum(1), torch.ones(5, dtype=torch.float64))
    cost = squared_cost(x1, x2)
    best = min(float(cost[range(5), list(p)].mean()) for p in itertools.permutations(range(5)))
    worst = max(float(cost[range(5), list(p)].mean()) for p in itertools.permutations(range(5)))
    assert plan_cost(plan, x1, x2) == pytest.approx(best, rel=1e-12) and worst > best * 1.1


def test_identical_batches_pair_each_point_with_itself():
    x = points(64, d=3, seed=1)
    flow, objective = linear_flow(d=3), FlowMatching(coupling="ot")
    rows, cols = objective.pairing.pair(x, x.clone(), torch.Generator().manual_seed(0))
    assert torch.equal(rows, cols) and float(squared_cost(x, x).diagonal().abs().max()) == 0.0
    path = objective.path_sample(flow, Batch(x), torch.Generator().manual_seed(0))
    assert path.x1.shape == path.x2.shape  # the objective pairs its own source draws, not the batch itself


@pytest.mark.filterwarnings("ignore:Sinkhorn did not converge")
def test_sinkhorn_cost_approaches_the_exact_cost_as_reg_shrinks():
    x1, x2 = points(20, seed=2), points(20, seed=3, shift=0.5)
    exact = plan_cost(transport_plan(x1, x2), x1, x2)
    uniform = torch.full((20,), 1 / 20, dtype=torch.float64)
    gaps = []
    for reg in (1.0, 0.1, 3e-3):  # 3e-3: exp(-C / reg) underflows, which the log-domain iteration handles
        plan = transport_plan(x1, x2, reg)
        assert torch.allclose(plan.sum(0), uniform, rtol=2e-3) and torch.allclose(plan.sum(1), uniform, rtol=2e-3)
        gaps.append(plan_cost(plan, x1, x2) - exact)
    assert gaps[0] > gaps[1] > abs(gaps[2]) and abs(gaps[2]) < 1e-3 * exact  # (an unconverged plan may dip below)


def test_pairs_follow_the_plan_and_replay_from_the_generator():
    plan = torch.tensor([[0.5, 0.0, 0.0], [0.0, 0.1, 0.2], [0.0, 0.2, 0.0]], dtype=torch.float64)
    rows, cols = draw_pairs(plan, 60_000, torch.Generator().manual_seed(7))
    counts = torch.zeros(3, 3, dtype=torch.float64).index_put_((rows, cols), torch.ones(60_000, dtype=torch.float64),
                                                               accumulate=True)
    assert torch.allclose(counts / 60_000, plan, atol=0.01) and float(counts[plan == 0].sum()) == 0
    again = draw_pairs(plan, 60_000, torch.Generator().manual_seed(7))
    assert torch.equal(rows, again[0]) and torch.equal(cols, again[1])


@pytest.mark.parametrize("options", [{"coupling": "ot"}, {"coupling": "sinkhorn", "reg": 0.5}, {"coupling": "sb"}])
def test_loss_replays_from_the_trainers_generator(options):
    flow, objective, batch = linear_flow(), FlowMatching(**options), Batch(points(32, seed=4, shift=3.0))
    first = objective.path_sample(flow, batch, torch.Generator().manual_seed(11))
    second = objective.path_sample(flow, batch, torch.Generator().manual_seed(11))
    other = objective.path_sample(flow, batch, torch.Generator().manual_seed(12))
    assert all(torch.equal(getattr(first, k), getattr(second, k)) for k in ("x1", "x2", "t", "xt", "target"))
    assert not torch.equal(first.xt, other.xt)


def test_ot_pairs_are_cheaper_than_independent_ones():
    flow, batch = linear_flow(), Batch(points(256, seed=5))
    cost = {}
    for coupling in ("independent", "ot"):
        path = FlowMatching(coupling=coupling).path_sample(flow, batch, torch.Generator().manual_seed(0))
        cost[coupling] = float((path.x2 - path.x1).pow(2).sum(1).mean())
    assert cost["ot"] < 0.5 * cost["independent"]


def test_bridge_target_is_the_time_derivative_of_the_path():
    """With fixed (x_1, x_2, eps), d/dt x(t) = u_t (eq 21 generates eq 20), by central differences."""
    x1, x2, noise = points(100, seed=6), points(100, seed=7, shift=2.0), points(100, seed=8)
    for t in (0.05, 0.3, 0.5, 0.8):
        def at(s):
            s = torch.full((100,), s, dtype=torch.float64)
            return brownian_bridge((1 - s[:, None]) * x1 + s[:, None] * x2, x2 - x1, s, 0.7, noise)

        h = 1e-6
        derivative = (at(t + h)[0] - at(t - h)[0]) / (2 * h)
        assert torch.allclose(at(t)[1], derivative, rtol=1e-6, atol=1e-6)
    xt, target = at(0.5)
    assert torch.allclose(target, x2 - x1) and torch.allclose(xt, (x1 + x2) / 2 + 0.35 * noise)


@pytest.mark.parametrize("t", [0.25, 0.5, 0.9])
def test_bridge_regression_matches_the_gaussian_closed_form(t):
    """x_1 ~ N(0, 1), x_2 ~ N(m, s^2) independent, x(t) = (1-t) x_1 + t x_2 + sigma sqrt(t(1-t)) eps: the
    least-squares field E[u_t | x(t) = x] = m + c/v (x - t m), c = Cov(u_t, x(t)) = -(1-t) + t s^2 +
    sigma^2 (1-2t)/2, v = Var x(t) = (1-t)^2 + t^2 s^2 + sigma^2 t (1-t); c = v'/2 as continuity demands."""
    n, m, s, sigma = 400_000, 1.5, 0.5, 0.8
    g = torch.Generator().manual_seed(9)
    x1 = torch.randn(n, 1, generator=g, dtype=torch.float64)
    x2 = m + s * torch.randn(n, 1, generator=g, dtype=torch.float64)
    tt = torch.full((n,), t, dtype=torch.float64)
    xt, u = brownian_bridge((1 - t) * x1 + t * x2, x2 - x1, tt, sigma, torch.randn(n, 1, generator=g,
                                                                                     dtype=torch.float64))
    c = -(1 - t) + t * s ** 2 + sigma ** 2 * (1 - 2 * t) / 2
    v = (1 - t) ** 2 + t ** 2 * s ** 2 + sigma ** 2 * t * (1 - t)
    slope = float(torch.cov(torch.cat([u, xt], 1).T)[0, 1] / xt.var())
    assert slope == pytest.approx(c / v, abs=5e-3)
    assert float(u.mean()) == pytest.approx(m, abs=5e-3) and float(xt.mean()) == pytest.approx(t * m, abs=5e-3)


def test_sb_draws_times_inside_the_open_interval_and_uses_reg_two_sigma_squared():
    objective = FlowMatching(coupling="sb", sigma=0.3)
    assert objective.pairing.reg == pytest.approx(2 * 0.3 ** 2) and objective.t_min == 1e-3
    path = objective.path_sample(linear_flow(), Batch(points(1024, seed=10)), torch.Generator().manual_seed(0))
    assert float(path.t.min()) >= 1e-3 and float(path.t.max()) <= 1 - 1e-3 and torch.isfinite(path.target).all()
    assert FlowMatching().t_min == 0.0 and FlowMatching(coupling="ot").t_max == 1.0


@pytest.mark.parametrize("kwargs,field", [
    ({"coupling": "hungarian"}, "coupling"), ({"coupling": "ot", "reg": 0.1}, "reg"),
    ({"coupling": "sb", "reg": 0.1}, "reg"), ({"coupling": "sinkhorn", "reg": 0}, "reg"),
    ({"coupling": "sinkhorn", "reg": math.inf}, "reg"), ({"coupling": "sinkhorn", "sigma": 1.0}, "sigma"),
    ({"coupling": "sb", "sigma": -1.0}, "sigma"), ({"coupling": "sb", "sigma": True}, "sigma"),
    ({"coupling": "sb", "t_min": 0.0}, "t_min"), ({"coupling": "sb", "t_min": 0.5}, "t_min"),
])
def test_bad_options_are_one_line_errors_naming_the_field(kwargs, field):
    with pytest.raises(ConfigError) as info:
        FlowMatching(**kwargs)
    assert str(info.value).startswith(f"{field}:") and "\n" not in str(info.value)


def test_couplings_refuse_the_ve_path():
    with pytest.raises(ConfigError, match="^coupling: 'ot' pairs need the 'linear' path"):
        FlowMatching(coupling="ot", flow=linear_flow(path="ve"))
    with pytest.raises(ConfigError, match="^coupling: 'sb'"):
        FlowMatching(coupling="sb").loss(linear_flow(path="ve"), Batch(points(8)), torch.Generator())
    assert make_coupling("independent") is None
