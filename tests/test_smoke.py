import torch

from diffflow_core import Flow, registry


class Decay(Flow):
    def drift(self, x, t):
        return -x


def test_euler_and_heun_solve_linear_decay_by_name():
    x0 = torch.ones(4, 1, dtype=torch.float64)
    times = torch.linspace(0, 1, 65, dtype=torch.float64)
    for name, tol in (("euler", 1e-2), ("heun", 1e-4)):
        solver = registry("solvers").create(name)
        out = solver.solve(Decay(), x0, times)
        assert torch.allclose(out.x, x0 * torch.exp(torch.tensor(-1.0, dtype=torch.float64)), atol=tol)
        assert out.nfe == 64 * solver.evaluations_per_step
