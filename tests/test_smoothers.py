"""Smoothers: ``identity`` is x + dt v; ``generator`` satisfies the Int-PM identity (SPEC §2.3 eq 13, §2.11.3):
one small SGD step on ``-<stopgrad(v), g_theta(z)>`` moves ``g_theta(z)`` by ``lr * A[v](z)``."""
from __future__ import annotations

import copy

import pytest
import torch

from diffflow_core import ConfigError, Flow, SamplingContext, registry
from diffflow_core.networks.mlp import MLP
from diffflow_core.smoothers import GeneratorSmoother, IdentitySmoother
from diffflow_solvers.testing import fitted_slope


class Pull(Flow):
    """v(x) = a - x, a field that differs from particle to particle and is not in the generator's span."""

    def drift(self, x, t):
        return torch.tensor([1.0, -2.0], dtype=x.dtype) - x ** 3


def generator_smoother(seed: int = 0, n: int = 64) -> GeneratorSmoother:
    torch.manual_seed(seed)
    net = MLP(in_shape=(4,), out_shape=(2,), hidden=32, depth=2, time_conditioned=False).double()
    smoother = GeneratorSmoother(network=net, latent_dim=4, event_shape=(2,))
    smoother.init_particles(n, torch.Generator().manual_seed(seed))
    assert smoother.z.dtype == torch.float64  # latents follow the generator's dtype
    return smoother


def sgd_displacement(smoother: GeneratorSmoother, v: torch.Tensor, lr: float) -> torch.Tensor:
    """(g_theta'(z) - g_theta(z)) / lr after one SGD step of ``lr`` on ``-<stopgrad(v), g_theta(z)>`` (mean over z)."""
    net = copy.deepcopy(smoother.net)
    z = smoother.z
    before = net(z).detach()
    loss = -(v.detach() * net(z)).sum(1).mean()
    grads = torch.autograd.grad(loss, list(net.parameters()))
    with torch.no_grad():
        for p, g in zip(net.parameters(), grads):
            p -= lr * g
        return (net(z) - before) / lr


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_operator_equals_the_sgd_displacement_over_lr():
    smoother = generator_smoother()
    with torch.no_grad():
        x = smoother(smoother.z)
    v = Pull().drift(x, torch.tensor(0.0))
    exact = smoother.operator(v, smoother.z)
    assert exact.shape == x.shape and exact.dtype == torch.float64
    lrs = (1e-3, 1e-4, 1e-5, 1e-6)
    errors = [relative_error(sgd_displacement(smoother, v, lr), exact) for lr in lrs]
    assert errors[-1] < 1e-3, errors
    # the mismatch is the O(lr) curvature term: it shrinks linearly in lr
    assert fitted_slope(lrs[:3], errors[:3]) == pytest.approx(1.0, abs=0.1), errors


def test_operator_is_the_ntk_gram_form():
    """A[v](z_i) = (1/N) sum_j J(z_i) J(z_j)^T v_j, checked against explicit per-sample Jacobians on a tiny batch."""
    smoother = generator_smoother(seed=1, n=5)
    z = smoother.z
    params = list(smoother.net.parameters())
    jac = []
    for i in range(z.shape[0]):  # explicit Jacobians are the reference, not the implementation
        rows = [torch.cat([g.flatten() for g in torch.autograd.grad(smoother(z[i:i + 1])[0, k], params)])
                for k in range(2)]
        jac.append(torch.stack(rows))
    jac = torch.stack(jac)  # [N, 2, P]
    v = torch.randn(5, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    expected = torch.einsum("idp,jep,je->id", jac, jac, v) / 5
    assert torch.allclose(smoother.operator(v, z), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("direction", [1.0, -1.0])
def test_euler_with_the_generator_smoother_moves_particles_by_dt_times_the_operator(direction):
    smoother = generator_smoother(seed=2)
    with torch.no_grad():
        x0 = smoother(smoother.z)
    expected = smoother.operator(Pull().drift(x0, torch.tensor(0.0)), smoother.z)
    dt = 1e-6 * direction
    solver = registry("solvers").create("euler")
    out = solver.solve(Pull(), x0, torch.tensor([0.0, dt], dtype=torch.float64), smoother=smoother)
    assert out.nfe == 1
    assert relative_error((out.x - x0) / dt, expected) < 1e-3


def test_generator_smoother_needs_its_particles_first():
    smoother = GeneratorSmoother(network=MLP(in_shape=(4,), out_shape=(2,), hidden=8, depth=1,
                                             time_conditioned=False), latent_dim=4, event_shape=(2,))
    with pytest.raises(ConfigError, match="call init_particles"):
        registry("solvers").create("euler").solve(Pull(), torch.zeros(3, 2), torch.tensor([0.0, 0.1]),
                                                  smoother=smoother)


@pytest.mark.parametrize("params,field", [({"latent_dim": 0}, "latent_dim"), ({"optimizer": "rmsprop"}, "optimizer")])
def test_generator_smoother_rejects_bad_parameters(params, field):
    with pytest.raises(ConfigError, match=f"^{field}: expected"):
        GeneratorSmoother(network=MLP(in_shape=(4,), out_shape=(2,), hidden=8, depth=1, time_conditioned=False),
                          **params)


def test_identity_reduces_to_x_plus_dt_v():
    x = torch.randn(7, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t, dt = torch.tensor(0.5, dtype=torch.float64), torch.tensor(-0.25, dtype=torch.float64)
    smoother = registry("smoothers").create("identity")
    assert isinstance(smoother, IdentitySmoother)
    v = Pull().drift(x, t)
    context = SamplingContext()
    assert torch.equal(smoother.velocity(Pull(), x, t, context), v)
    assert torch.equal(smoother.advance(Pull(), x, t, dt, context), x + dt * v)
    euler = registry("solvers").create("euler").solve(Pull(), x, torch.stack([t, t + dt]), smoother=smoother)
    assert torch.equal(euler.x, x + dt * v)
