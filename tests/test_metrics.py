import math

import numpy as np
import pytest
import torch

from diffflow_core import registry
from diffflow_core.data import load_dataset
from diffflow_core.data.mixture import GaussianMixture
from diffflow_core.errors import ConfigError
from diffflow_core.metrics import sliced_wasserstein, w2, w2_ratio


def test_w2_of_a_translation_is_the_shift():
    x = torch.randn(300, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    shift = torch.tensor([0.3, -0.4], dtype=torch.float64)
    assert w2(x, x + shift) == pytest.approx(0.5, abs=1e-9)
    assert w2(x, x) == pytest.approx(0.0, abs=1e-6)


def test_w2_between_gaussians_approaches_closed_form():
    """W2(N(0, I), N(m, 4 I)) = sqrt(|m|^2 + d (2 - 1)^2); the empirical value converges from above."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1500, 1, generator=g, dtype=torch.float64)
    y = 1.0 + 2 * torch.randn(1500, 1, generator=g, dtype=torch.float64)
    assert w2(x, y) == pytest.approx(math.sqrt(2.0), rel=0.05)


def test_w2_ratio_separates_perfect_from_broken_samplers():
    data = load_dataset("ring5", n_train=2000, n_test=200)
    perfect = w2_ratio(lambda n, s: data.sample(n, torch.Generator().manual_seed(s)), data, n=400, seeds=3)
    assert 0.75 < perfect.ratio < 1.1
    assert perfect.floor_std > 0 and len(perfect.floor_values) == 3
    wide = w2_ratio(lambda n, s: 1.3 * data.sample(n, torch.Generator().manual_seed(s)), data, n=400, seeds=3)
    assert wide.ratio > 1.5 * perfect.ratio
    # a list of arrays gives the same numbers as the sampler that produced them
    listed = w2_ratio([data.sample(400, torch.Generator().manual_seed(s)) for s in range(3)], data, n=400)
    assert listed.w2_values == perfect.w2_values
    assert registry("metrics").create("w2", samples=[data.train[:400]], dataset=data, n=400).seeds == 1


def test_w2_ratio_rejects_bad_input():
    data = load_dataset("ring5", n_train=100, n_test=10)
    with pytest.raises(ConfigError, match="at least n=50"):
        w2_ratio([torch.zeros(10, 2)], data, n=50)
    with pytest.raises(ConfigError, match="non-finite"):
        w2_ratio([torch.full((50, 2), float("nan"))], data, n=50)
    with pytest.raises(ConfigError, match="features per row"):
        w2_ratio([torch.zeros(50, 3)], data, n=50)
    with pytest.raises(ConfigError, match="seeds"):
        w2_ratio([torch.zeros(50, 2)], data, n=50, seeds=0)


def test_sliced_wasserstein_of_a_shift_and_isotropy():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2000, 2, generator=g, dtype=torch.float64)
    # for a pure shift every 1-D W2 is |<shift, theta>|, so SW^2 = |shift|^2 / d in expectation
    sw = sliced_wasserstein(x, x + torch.tensor([1.0, 0.0], dtype=torch.float64), projections=4000)
    assert sw == pytest.approx(math.sqrt(0.5), rel=0.03)
    assert sliced_wasserstein(x, x) == 0.0
