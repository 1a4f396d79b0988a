"""Metrics for Gaussian-mixture targets: per-mode coverage and the mean exact log-density of samples.

A sampler can have a small W2 and still weight the modes wrongly or over-concentrate on their centres; these
two read those failures directly. Over-concentration shows as a mean log-density *above* the data's.
"""
from __future__ import annotations

import attrs
import numpy as np
import torch
from torch import Tensor

from diffflow_core import validation as check
from diffflow_core.errors import ConfigError
from diffflow_core.metrics._common import REFERENCE_SEED, as_matrix

__all__ = ["ModeCoverage", "LogDensityResult", "mode_coverage", "log_density"]


def _mixture(dataset):
    from diffflow_core.data import GaussianMixture, load_dataset

    dataset = load_dataset(dataset)
    if not isinstance(dataset, GaussianMixture):
        raise ConfigError(f"dataset: expected a Gaussian mixture (e.g. 'ring5'), got {dataset.name!r}")
    return dataset


@attrs.frozen
class ModeCoverage:
    """Share of samples whose nearest centre is each mode, against the mixture weights."""

    shares: tuple[float, ...]
    weights: tuple[float, ...]
    outside: float  # share of samples farther than ``radius`` component stds from their nearest centre

    @property
    def max_deviation(self) -> float:
        """Largest |share - weight| in percentage points."""
        return 100 * float(np.max(np.abs(np.subtract(self.shares, self.weights))))

    @property
    def modes_covered(self) -> int:
        """Modes holding at least half their weight."""
        return int(np.sum(np.asarray(self.shares) >= 0.5 * np.asarray(self.weights)))


def mode_coverage(samples: Tensor, dataset, radius: float = 3.0) -> ModeCoverage:
    """Mode shares of ``samples`` (nearest centre) vs the weights of the mixture ``dataset``."""
    data = _mixture(dataset)
    x = as_matrix(samples, "samples")
    if x.shape[1] != data.dim:
        raise ConfigError(f"samples: expected {data.dim} features per row, got {x.shape[1]}")
    nearest = data.nearest_component(x)
    shares = torch.bincount(nearest, minlength=data.num_components).double() / x.shape[0]
    distance = (x - data.means[nearest]).norm(dim=1)
    outside = float((distance > radius * data.stds[nearest]).double().mean())
    return ModeCoverage(tuple(shares.tolist()), tuple(data.weights.tolist()), outside)


@attrs.frozen
class LogDensityResult:
    """Mean exact ``log q`` of the samples and of fresh data draws (``-entropy`` estimate)."""

    sample_mean: float
    data_mean: float

    @property
    def gap(self) -> float:
        """``sample_mean - data_mean``: > 0 means over-concentrated samples, < 0 too spread."""
        return self.sample_mean - self.data_mean


def log_density(samples: Tensor, dataset, reference: int = 100_000) -> LogDensityResult:
    """Mean exact log-density of ``samples`` under the mixture vs that of ``reference`` fresh data draws."""
    data = _mixture(dataset)
    reference = check.integer("reference", reference, 2)
    x = as_matrix(samples, "samples")
    ref = data.sample(reference, torch.Generator().manual_seed(REFERENCE_SEED)).double()
    return LogDensityResult(float(data.log_prob(x).mean()), float(data.log_prob(ref).mean()))
