"""Kernel two-sample distances: unbiased MMD^2 with a multi-bandwidth Gaussian kernel, and the energy distance.

Both are U-statistics over pairwise distances, accumulated in row blocks so memory stays O(block * N).
"""
from __future__ import annotations

from typing import Callable, Sequence

import attrs
import torch
from torch import Tensor

from diffflow_core.errors import ConfigError
from diffflow_core.metrics._common import as_matrix, same_width

__all__ = ["MMDResult", "mmd", "energy_distance", "median_distance"]

_BLOCK = 2048


def _mean_kernel(a: Tensor, b: Tensor, fn: Callable[[Tensor], Tensor], same: bool) -> float:
    """Mean of ``fn(|a_i - b_j|^2)`` over all pairs, or over pairs i != j when ``a`` is ``b`` (U-statistic)."""
    total = a.new_zeros(())
    for start in range(0, a.shape[0], _BLOCK):
        sq = torch.cdist(a[start:start + _BLOCK], b).pow(2)
        values = fn(sq)
        if same:
            rows = torch.arange(values.shape[0])
            values[rows, rows + start] = 0.0
        total = total + values.sum()
    pairs = a.shape[0] * (b.shape[0] - 1) if same else a.shape[0] * b.shape[0]
    return float(total / pairs)


def median_distance(x: Tensor, max_points: int = 2000) -> float:
    """Median pairwise Euclidean distance among the first ``max_points`` rows (the usual bandwidth scale)."""
    x = as_matrix(x, "x")[:max_points]
    d = torch.pdist(x)
    return float(d.median())


@attrs.frozen
class MMDResult:
    """Unbiased MMD^2 (can be slightly negative when the laws agree) and the bandwidths used."""

    mmd2: float
    bandwidths: tuple[float, ...]

    @property
    def mmd(self) -> float:
        """``sqrt(max(MMD^2, 0))``."""
        return max(self.mmd2, 0.0) ** 0.5


def mmd(x: Tensor, y: Tensor, bandwidths: Sequence[float] | None = None,
        scales: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0)) -> MMDResult:
    """Unbiased MMD^2 between samples ``x`` and reference ``y`` with ``k = sum_h exp(-|a-b|^2 / (2 h^2))``.

    Without ``bandwidths`` they are ``scales`` times the median pairwise distance of the *reference* ``y``,
    so every model compared against the same reference uses the same kernel.
    """
    x, y = as_matrix(x, "x"), as_matrix(y, "y")
    same_width(x, y, "mmd")
    if bandwidths is None:
        bandwidths = [s * median_distance(y) for s in scales]
    bandwidths = tuple(float(h) for h in bandwidths)
    if not bandwidths or any(not h > 0 for h in bandwidths):
        raise ConfigError(f"bandwidths: expected positive values, got {bandwidths}")
    inv = torch.tensor([1 / (2 * h * h) for h in bandwidths], dtype=torch.float64)

    def kernel(sq: Tensor) -> Tensor:
        return torch.exp(-sq[..., None] * inv).sum(-1)

    value = _mean_kernel(x, x, kernel, True) + _mean_kernel(y, y, kernel, True) - 2 * _mean_kernel(x, y, kernel, False)
    return MMDResult(value, bandwidths)


def energy_distance(x: Tensor, y: Tensor) -> float:
    """Energy distance ``2 E|X - Y| - E|X - X'| - E|Y - Y'|`` (unbiased within-sample terms); 0 iff equal laws."""
    x, y = as_matrix(x, "x"), as_matrix(y, "y")
    same_width(x, y, "energy_distance")
    norm = lambda sq: sq.clamp_min(0).sqrt()  # noqa: E731
    return 2 * _mean_kernel(x, y, norm, False) - _mean_kernel(x, x, norm, True) - _mean_kernel(y, y, norm, True)
