"""f-divergence flows equal -grad f'(rho/q) (SPEC §2.1 table); the entropy flow spreads particles."""
import pytest
import torch

from diffflow_core.data.mixture import GaussianMixture
from diffflow_kl.sde import DiffFlow, entropy
from diffflow_kl.rows import FDiv

F64 = torch.float64

#: f'(r) for each divergence (SPEC §2.1): the flow's velocity is -grad_x f'(r(x)).
F_PRIME = {
    "kl": lambda r: torch.log(r) + 1,
    "reverse-kl": lambda r: -1 / r,
    "chi2": lambda r: 2 * (r - 1),
    "js": lambda r: torch.log(2 * r / (1 + r)),
}


@pytest.mark.parametrize("divergence", sorted(F_PRIME))
def test_fdiv_velocity_is_minus_grad_f_prime_of_the_ratio(divergence):
    q = GaussianMixture([1.0, 1.0], [[0.0, 0.0], [1.5, 0.5]], 0.7, n_train=2, n_test=2)
    rho = GaussianMixture([1.0], [[0.5, -0.5]], 0.9, n_train=2, n_test=2)
    x = torch.randn(50, 2, generator=torch.Generator().manual_seed(0), dtype=F64).requires_grad_(True)
    r = torch.exp(rho.log_prob(x) - q.log_prob(x))
    (grad,) = torch.autograd.grad(F_PRIME[divergence](r).sum(), x)
    flow = DiffFlow(FDiv(divergence, max_logit=50.0), target=q, particles=rho)
    assert torch.allclose(flow.drift(x.detach(), torch.tensor(0.0, dtype=F64)), -grad, atol=1e-9)


def test_entropy_flow_spreads_a_gaussian_like_the_heat_equation():
    """v = -s_rho: from N(0, 1) in 1-D the variance grows; with the KDE score of rho * k_h it grows at rate
    2 v / (v + h^2) (between 2/(1 + h^2) and 2), here checked over a short time."""
    flow = entropy(bandwidth=0.3, horizon=0.2, event_shape=(1,))
    x0 = torch.randn(600, 1, generator=torch.Generator().manual_seed(0), dtype=F64)
    from diffflow_solvers.solvers import Euler

    x1 = Euler().solve(flow, x0, flow.time_grid(20).to(F64)).x
    growth = (x1.var() - x0.var()) / 0.2
    v = float(x0.var())
    assert 2 * v / (v + 0.09) * 0.93 < growth < 2.0 * 1.02
