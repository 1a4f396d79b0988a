"""The MMD flow: velocity = -grad of N * 1/2 MMD^2 by autograd (SPEC §2.11.5), chunking, noise, errors."""
import pytest
import torch

from diffflow_core import build
from diffflow_core.errors import ConfigError
from diffflow_kl.kernels import sq_dists
from diffflow_mmd.flow import MMDFlow

F64 = torch.float64
KERNELS = [("gaussian", {"bandwidth": [0.5, 2.0]}), ("imq", {"scale": 1.0}), ("laplace", {"bandwidth": 1.0}),
           ("energy", {})]


def half_mmd2_times_n(kernel, x, y):
    """N * 1/2 MMD^2 with the diagonal pairs left out (k(x_i, x_i) is a constant; the cone kernels have no
    gradient at 0)."""
    n, m = x.shape[0], y.shape[0]
    off = ~torch.eye(n, dtype=torch.bool)
    kxx = kernel.value(sq_dists(x, x)[off].clamp_min(1e-30)).sum() / n ** 2
    kxy = kernel.value(sq_dists(x, y)).sum() / (n * m)
    return n * 0.5 * (kxx - 2 * kxy)


@pytest.mark.parametrize("name,params", KERNELS)
def test_velocity_is_minus_the_autograd_gradient_of_n_half_mmd2(name, params):
    data = torch.randn(60, 2, generator=torch.Generator().manual_seed(0), dtype=F64) + 1.0
    flow = MMDFlow(data, kernel={"name": name, **params}, points=60, chunk=7)
    flow.targets = flow.targets.to(F64)
    x = torch.randn(45, 2, generator=torch.Generator().manual_seed(1), dtype=F64).requires_grad_(True)
    (grad,) = torch.autograd.grad(half_mmd2_times_n(flow.kernel, x, flow.targets), x)
    v = flow.evaluate_drift(x.detach(), torch.tensor(0.0, dtype=F64))
    assert torch.allclose(v, -grad, atol=1e-10)
    unchunked = MMDFlow(data, kernel={"name": name, **params}, points=60)
    unchunked.targets = flow.targets
    assert torch.allclose(unchunked.evaluate_drift(x.detach(), torch.tensor(0.0, dtype=F64)), v, atol=1e-12)


def test_flow_decreases_mmd_and_noise_is_seeded():
    model = build(preset="mmd-energy", data="ring5", flow={"points": 300})
    flow = model.flow
    x0 = flow.prior(300, torch.Generator().manual_seed(0))
    x1 = model.sample(300, steps=40, seed=0).x
    y = flow.targets

    def mmd2(x):  # the full (biased) MMD^2, including the constant target-target term
        return (flow.kernel(x, x).mean() + flow.kernel(y, y).mean() - 2 * flow.kernel(x, y).mean()).item()

    assert mmd2(x1) < 0.2 * mmd2(x0)
    noisy = build(preset="mmd", data="ring5", flow={"points": 200, "noise": 0.3})
    a, b = noisy.sample(100, steps=3, seed=1).x, noisy.sample(100, steps=3, seed=1).x
    assert torch.equal(a, b)
    quiet = build(preset="mmd", data="ring5", flow={"points": 200})
    assert not torch.allclose(quiet.sample(100, steps=3, seed=1).x, a)


def test_bad_parameters_are_rejected():
    with pytest.raises(ConfigError, match="kernel"):
        MMDFlow("ring5", kernel="rbf")
    with pytest.raises(ConfigError, match="points"):
        MMDFlow("ring5", points=1)
    with pytest.raises(ConfigError, match="data"):
        MMDFlow(None)
    with pytest.raises(ConfigError, match="noise"):
        MMDFlow("ring5", noise=-1.0)
