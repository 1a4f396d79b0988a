"""Wasserstein distances: exact W2 (POT's network simplex) with its data-vs-data floor, and sliced W2.

A finite-sample W2 never reaches 0 even for a perfect sampler: two independent ``n``-point draws of the same
law sit at a positive distance (the *floor* F). The comparable number is therefore ``W2(samples, data) / F``
at the same ``n``, each averaged over seeds, since a single W2 varies from draw to draw. A perfect sampler
scores slightly below 1 on average (the ring5 values are in docs/datasets-and-metrics.md, "The W2 floor on ring5").

Reference draws use fixed seeds, so the floor is one fixed number per ``(dataset, n, seeds)`` and every model
is compared against the same references. The model side stays noisy: a single W2 of a perfect sampler
spreads widely (on a mixture mostly from the multinomial mode shares), and so does a 3-seed ratio (measured on
ring5 in the same docs section); use more seeds for decisions near a threshold.
"""
from __future__ import annotations

import attrs
import numpy as np
import torch
from torch import Tensor

from diffflow_core import validation as check
from diffflow_core.errors import ConfigError
from diffflow_core.metrics._common import (SampleSource, as_matrix, draws, reference_draw,
                                           same_width)

__all__ = ["W2Result", "w2", "w2_ratio", "sliced_wasserstein"]


def w2(x: Tensor, y: Tensor) -> float:
    """Exact 2-Wasserstein distance between two empirical laws with uniform weights (squared Euclidean cost)."""
    import ot

    x, y = as_matrix(x, "x"), as_matrix(y, "y")
    same_width(x, y, "w2")
    cost = torch.cdist(x, y).pow(2).numpy()
    a = np.full(x.shape[0], 1.0 / x.shape[0])
    b = np.full(y.shape[0], 1.0 / y.shape[0])
    return float(np.sqrt(max(ot.emd2(a, b, cost, numItermax=10_000_000), 0.0)))


@attrs.frozen
class W2Result:
    """W2 of samples to fresh data draws and the data-vs-data floor, both over ``seeds`` seeds."""

    w2_mean: float
    w2_std: float
    floor_mean: float
    floor_std: float
    n: int
    seeds: int
    w2_values: tuple[float, ...] = attrs.field(repr=False)
    floor_values: tuple[float, ...] = attrs.field(repr=False)

    @property
    def ratio(self) -> float | None:
        """``mean W2 / mean floor``: slightly below 1 for a perfect sampler, larger is worse.

        ``None`` when the floor is 0 (data with few distinct rows can give two identical reference draws).
        """
        return self.w2_mean / self.floor_mean if self.floor_mean > 0 else None

    @property
    def ratio_stderr(self) -> float | None:
        """Standard error of :attr:`ratio` from the seed-to-seed spread of the model's W2.

        The floor uses the same reference draws for every model, so it is a fixed number for a given
        ``(dataset, n, seeds)``; the uncertainty that matters when comparing models is the model side's.
        """
        return float(self.w2_std / np.sqrt(self.seeds) / self.floor_mean) if self.floor_mean > 0 else None

    def as_dict(self) -> dict[str, float]:
        return {"w2_mean": self.w2_mean, "w2_std": self.w2_std, "floor_mean": self.floor_mean,
                "floor_std": self.floor_std, "ratio": self.ratio, "ratio_stderr": self.ratio_stderr,
                "n": self.n, "seeds": self.seeds}

    def __str__(self) -> str:
        ratio = "undefined (floor 0)" if self.ratio is None else f"{self.ratio:.3f} +/- {self.ratio_stderr:.3f}"
        return (f"W2 {self.w2_mean:.4f} +/- {self.w2_std:.4f}, floor {self.floor_mean:.4f} +/- {self.floor_std:.4f}, "
                f"ratio {ratio} (n={self.n}, {self.seeds} seeds)")


def w2_ratio(samples: SampleSource, dataset, n: int = 2000, seeds: int = 3) -> W2Result:
    """W2 of ``samples`` to the data and the floor F at the same ``n``, averaged over seeds.

    ``samples`` is ``fn(n, seed) -> [n, ...]`` (called for seeds 0..seeds-1; e.g.
    ``lambda n, s: model.sample(n, steps, seed=s).x``) or a list of sample arrays (one per seed). For seed
    ``i`` the reference and the floor's partner are fresh, independent draws ``dataset.sample(n, g_i)``
    (for array data without a sampler: held-out test rows and training rows, see ``reference_draw``).
    """
    from diffflow_core.data import load_dataset

    n = check.integer("n", n, 2)
    seeds = check.integer("seeds", seeds, 1)
    dataset = load_dataset(dataset)
    model_draws = draws(samples, n, seeds)
    values, floors = [], []
    for i, x in enumerate(model_draws):
        reference, partner = reference_draw(dataset, n, i)
        same_width(x, reference, "w2_ratio")
        values.append(w2(x, reference))
        floors.append(w2(partner, reference))
    std = lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0  # noqa: E731
    return W2Result(float(np.mean(values)), std(values), float(np.mean(floors)), std(floors), n, len(values),
                    tuple(values), tuple(floors))


def sliced_wasserstein(x: Tensor, y: Tensor, projections: int = 256, seed: int = 0) -> float:
    """Sliced W2: the root mean squared 1-D W2 over ``projections`` random unit directions.

    Each 1-D W2 is exact by sorting; ``x`` and ``y`` must hold the same number of rows.
    """
    x, y = as_matrix(x, "x"), as_matrix(y, "y")
    same_width(x, y, "sliced_wasserstein")
    if x.shape[0] != y.shape[0]:
        raise ConfigError(f"sliced_wasserstein: expected equal sample sizes, got {x.shape[0]} and {y.shape[0]}")
    projections = check.integer("projections", projections, 1)
    generator = torch.Generator().manual_seed(int(seed))
    directions = torch.randn(x.shape[1], projections, generator=generator, dtype=torch.float64)
    directions = directions / directions.norm(dim=0, keepdim=True)
    px, _ = torch.sort(x @ directions, dim=0)
    py, _ = torch.sort(y @ directions, dim=0)
    return float(((px - py) ** 2).mean().sqrt())
