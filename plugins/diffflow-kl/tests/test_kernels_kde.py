"""Kernels, their interactions and KDE scores against autograd and direct formulas (float64)."""
import math

import pytest
import torch

from diffflow_core.errors import ConfigError
from diffflow_kl.kde import bandwidth, kde_log_density, kde_score
from diffflow_kl.interactions import kernel_sums
from diffflow_kl.kernels import make_kernel, median_bandwidth

KERNELS = [("gaussian", {"bandwidth": [0.5, 2.0]}), ("imq", {"scale": 0.7}), ("laplace", {"bandwidth": 1.3}),
           ("energy", {})]


@pytest.fixture
def points():
    g = torch.Generator().manual_seed(0)
    return torch.randn(37, 2, generator=g, dtype=torch.float64), torch.randn(23, 2, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("name,params", KERNELS)
def test_gradient_sum_is_the_autograd_gradient_of_the_mean_embedding(points, name, params):
    x, y = points
    kernel = make_kernel(name, **params)
    xg = x.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(kernel(xg, y).mean(1).sum(), xg)
    assert torch.allclose(kernel_sums(kernel, x, y, weights=1 / 23)[1], expected, atol=1e-12)
    assert torch.allclose(kernel_sums(kernel, x, y, weights=1 / 23, chunk=5)[1], expected, atol=1e-12)


def test_smoothing_chunked_equals_dense(points):
    x, y = points
    values = torch.randn(23, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    kernel = make_kernel("gaussian", bandwidth=0.8)
    dense = kernel(x, y) @ values / 23
    assert torch.allclose(kernel_sums(kernel, x, y, values / 23, chunk=4)[0], dense, atol=1e-13)


def test_kde_log_density_and_score_match_the_formula_and_autograd(points):
    x, centres = points
    h = 0.6
    direct = torch.log(torch.exp(-torch.cdist(x, centres) ** 2 / (2 * h * h)).mean(1) / (2 * math.pi * h * h))
    assert torch.allclose(kde_log_density(x, centres, h, chunk=7), direct, atol=1e-10)
    xg = x.clone().requires_grad_(True)
    (auto,) = torch.autograd.grad(kde_log_density(xg, centres, h).sum(), xg)
    assert torch.allclose(kde_score(x, centres, h, chunk=3), auto, atol=1e-10)


def test_bandwidth_rules():
    sample = torch.randn(10_000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2.0
    scott = bandwidth("scott", sample)
    assert scott == pytest.approx(2.0 * 10_000 ** (-1 / 6), rel=0.02)
    assert bandwidth("silverman", sample) == pytest.approx(scott, rel=1e-12)  # (4/(d+2))^(1/(d+4)) = 1 in 2-D
    assert bandwidth(0.3, sample) == 0.3
    with pytest.raises(ConfigError, match="bandwidth"):
        bandwidth("median", sample)


def test_median_heuristic():
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    # off-diagonal squared distances {1, 4, 5}: median 4
    assert median_bandwidth(x) == pytest.approx(math.sqrt(4 / (2 * math.log(4))))


def test_bad_kernel_names_are_rejected():
    with pytest.raises(ConfigError, match="kernel"):
        make_kernel("rbf")
    with pytest.raises(ConfigError, match="bandwidth"):
        make_kernel("gaussian", bandwidth=-1.0)
