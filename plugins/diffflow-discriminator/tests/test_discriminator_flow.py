"""Discriminator Flow (SPEC §2.8): with a frozen analytic discriminator it follows the analytic flow."""
import math

import pytest
import torch
from torch import nn

from diffflow_core import build
from diffflow_core.model import Model
from diffflow_core.plugins import registry
from diffflow_core.errors import ConfigError
from diffflow_discriminator.flow import DiscriminatorFlow
from diffflow_discriminator.objectives import DiscriminatorFlowObjective

M = torch.tensor([1.5, -2.0], dtype=torch.float64)
ETA = 3.0


class MovingWell(nn.Module):
    """IPM critic ``f(x, t) = -|x - t m|^2 / 2``: drift ``eta (t m - x)``, an ODE with a closed-form solution."""

    def forward(self, x, t=None, y=None):
        return -0.5 * ((x - t[:, None] * M) ** 2).sum(1, keepdim=True)


def exact(x0, t):
    decay = math.exp(-ETA * t)
    return decay * x0 + M * (t - (1 - decay) / ETA)


def flow(**kw):
    return DiscriminatorFlow(network=MovingWell(), loss="wgan", eta=ETA, time_conditioned=True, **kw)


def euler_iterate(x0, k, n):
    """Closed-form k-step Euler iterate of ``x' = eta (t m - x)`` with step 1/n (unrolled on scalars)."""
    x = x0.clone()
    for j in range(k):
        x = x + (ETA * (j / n * M - x)) / n
    return x


def test_simulate_gives_each_particle_its_own_euler_iterate():
    n = 12
    x0 = torch.randn(40, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    k = torch.randint(0, n, (40,), generator=torch.Generator().manual_seed(1))
    z = flow().simulate(x0, k, n)
    expected = torch.stack([euler_iterate(x0[i], int(k[i]), n) for i in range(40)])
    torch.testing.assert_close(z, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("solver, order", [("euler", 1), ("heun", 2)])
def test_sampling_converges_to_the_analytic_flow_at_the_solver_order(solver, order):
    model = Model(flow(), solver=registry("solvers").create(solver))
    model.flow.event_shape = (2,)
    errors, sizes = [], [14, 28, 56, 112]
    for steps in sizes:
        x0 = model.flow.prior(64, torch.Generator().manual_seed(5)).double()
        times = model.flow.time_grid(steps).double()
        solution = model.solver.solve(model.flow, x0, times)
        errors.append(float((solution.x - exact(x0, 1.0)).abs().max()))
        assert solution.nfe == steps * order - (order - 1)  # Heun's last step is Euler: t = 1 is never seen
    slope = torch.tensor(errors).log().diff().mean() / math.log(2)
    # at least the solver's order (Heun's Euler last step partly cancels its error on these grids: slope ~ -3.2)
    assert float(slope) < -order + 0.15


def test_training_times_and_particles_match():
    """Algorithm 3 steps 2-3: the particle paired with ``t = k/N`` is the Euler state after ``k`` steps."""
    f = flow().double()
    f.event_shape = (2,)
    objective = DiscriminatorFlowObjective(f, flow_steps=8)
    z, t = objective.simulated_particles(32, torch.Generator().manual_seed(2), "cpu")
    replay = torch.Generator().manual_seed(2)
    k = torch.randint(0, 8, (32,), generator=replay)
    x0 = f.prior(32, replay, "cpu").double()
    assert len(set(k.tolist())) > 3
    torch.testing.assert_close(t.double(), k.double() / 8)
    expected = torch.stack([euler_iterate(x0[i], int(k[i]), 8) for i in range(32)])
    torch.testing.assert_close(z.double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n", [32, 30])
def test_trajectory_particles_pair_each_state_with_its_time(n):
    """``particles = "trajectories"``: ``ceil(n / N)`` particles simulated through all N steps; every drawn
    ``(z, t)`` is the Euler state after ``k = tN`` steps of its own particle, and each time gets n / N of them."""
    f = flow().double()
    f.event_shape = (2,)
    objective = DiscriminatorFlowObjective(f, flow_steps=8, particles="trajectories")
    z, t = objective.simulated_particles(n, torch.Generator().manual_seed(2), "cpu")
    replay = torch.Generator().manual_seed(2)
    x0 = f.prior(4, replay, "cpu").double()
    keep = torch.randperm(32, generator=replay)[:n]
    states = torch.stack([torch.stack([euler_iterate(x, k, 8) for x in x0]) for k in range(8)])
    torch.testing.assert_close(z.double(), states.flatten(0, 1)[keep], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(t.double(), (torch.arange(8).repeat_interleave(4)[keep] / 8).double())
    counts = torch.bincount((t * 8).round().long(), minlength=8)
    assert int(counts.min()) >= 4 - (32 - n) and int(counts.max()) == 4


def test_short_discriminator_flow_training_transports_noise_to_the_data():
    """Reduced end-to-end run: N(0, I) particles learn to flow onto N((2, -1), 0.3^2)."""
    g = torch.Generator().manual_seed(0)
    data = torch.randn(4000, 2, generator=g) * 0.3 + torch.tensor([2.0, -1.0])
    model = build(preset="discriminator-flow", data=data,
                     flow={"network": {"name": "mlp", "hidden": 64, "depth": 2, "activation": "leaky_relu"},
                           "eta": 2.5},
                     objective={"flow_steps": 8}, train={"steps": 200, "lr": 2e-4, "ema": 0.0, "progress": False})
    model.fit()
    x = model.sample(1000, steps=8, seed=0).x
    assert float((x.mean(0) - torch.tensor([2.0, -1.0])).norm()) < 0.5  # from 2.24 at the prior


def test_grid_must_cover_unit_interval():
    with pytest.raises(ConfigError, match="grid"):
        flow(grid={"name": "uniform", "end": 2.0}).time_grid(4)
    with pytest.raises(ConfigError, match="time-conditioned"):
        build(preset="discriminator-flow", data=torch.randn(100, 2), flow={"time_conditioned": False,
              "network": {"name": "mlp", "hidden": 8, "depth": 1}})


def test_diffflow_rows_smooth_the_data_by_sigma_of_t():
    """DiffFlow's GAN rows (SPEC §1.6 step a): at time t the discriminator sees y + sigma_max (1 - t) eps."""
    f = DiscriminatorFlow(network={"name": "mlp", "hidden": 8, "depth": 1}, sigma_max=2.0)
    real = torch.zeros(20000, 2, dtype=torch.float64)
    for t in (0.0, 0.5, 1.0):
        noisy = f.smooth(real, torch.full((20000,), t, dtype=torch.float64), torch.Generator().manual_seed(0))
        assert abs(float(noisy.std()) - 2.0 * (1 - t)) < 0.03
    with pytest.raises(ConfigError, match="sigma_max"):
        DiscriminatorFlow(network={"name": "mlp", "hidden": 8, "depth": 1}, sigma_max=1.0, time_conditioned=False)


class TimeRecorder(MovingWell):
    def __init__(self):
        super().__init__()
        self.times = []

    def forward(self, x, t=None, y=None):
        self.times.append(float(t.max()))
        return super().forward(x, t)


@pytest.mark.parametrize("solver", ["euler", "heun"])
def test_sampling_never_evaluates_the_untrained_time_one(solver):
    """The discriminator is trained at t = k/N < 1 (Algorithm 3): no solver may query it at t = 1."""
    recorder = TimeRecorder()
    model = Model(DiscriminatorFlow(network=recorder, loss="wgan", eta=ETA), solver=registry("solvers").create(solver))
    x = model.solver.solve(model.flow, torch.randn(8, 2), model.flow.time_grid(7)).x
    assert recorder.times and max(recorder.times) < 1 and x.shape == (8, 2)
