"""Dimension-free distances of samples to the data, each beside its data-vs-data floor (any event shape).

Sliced W2, unbiased MMD^2 and the energy distance work in any dimension, so every dataset gets a quality
figure, not only 2-D toys and digits. Like W2 (see ``wasserstein``), none reads 0 for a perfect sampler at a
finite sample size, so each is reported beside its floor: the same statistic between the reference and
independent data at the same ``n`` and against the same reference. For array data the reference is held-out
test rows and the floor's partner training rows (``reference_draw``), so a sampler that copies its training
rows scores at the floor, not below it.

Sliced W2 is positive, so its ``ratio`` to the floor reads like W2's (about 1 for a perfect sampler). The
unbiased MMD^2 and energy distance scatter around 0 for equal laws: their floors give the noise level (read
the model's value against ``floor`` +/- ``floor_std``) and they carry no ratio.
"""
from __future__ import annotations

import attrs
import numpy as np

from diffflow_core import validation as check
from diffflow_core.metrics._common import SampleSource, draws, reference_draw, same_width
from diffflow_core.metrics.two_sample import energy_distance, mmd
from diffflow_core.metrics.wasserstein import sliced_wasserstein

__all__ = ["Distance", "DistancesResult", "data_distances"]


def _std(values: tuple[float, ...]) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


@attrs.frozen
class Distance:
    """One two-sample statistic over seeds: the model's value and the floor's, per seed."""

    values: tuple[float, ...]
    floors: tuple[float, ...]
    #: True for a statistic that is positive by construction, whose ratio to the floor is meaningful
    positive: bool

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))

    @property
    def floor_mean(self) -> float:
        return float(np.mean(self.floors))

    @property
    def ratio(self) -> float | None:
        """``mean / floor_mean`` for a positive statistic with a positive floor, else ``None``."""
        return self.mean / self.floor_mean if self.positive and self.floor_mean > 0 else None

    def as_dict(self) -> dict[str, float]:
        out = {"model": self.mean, "model_std": _std(self.values), "floor": self.floor_mean,
               "floor_std": _std(self.floors)}
        return out if self.ratio is None else {**out, "ratio": self.ratio}


@attrs.frozen
class DistancesResult:
    """Sliced W2, MMD^2 and energy distance of samples to the data at sample size ``n`` over ``seeds`` seeds."""

    sliced_w2: Distance
    mmd2: Distance
    energy: Distance
    n: int
    seeds: int

    def as_dict(self) -> dict[str, object]:
        return {"n": self.n, "seeds": self.seeds, "sliced_w2": self.sliced_w2.as_dict(),
                "mmd2": self.mmd2.as_dict(), "energy": self.energy.as_dict()}


def data_distances(samples: SampleSource, dataset, n: int = 1000, seeds: int = 3,
                   projections: int = 256) -> DistancesResult:
    """Sliced W2, MMD^2 and energy distance of ``samples`` to the data, each with its floor, at ``n`` points.

    ``samples`` is ``fn(n, seed)`` or a list of arrays (one per seed), as for ``w2_ratio``; rows of any shape
    are flattened. For seed ``i`` the model's samples and the floor's partner meet the same reference
    (``reference_draw(dataset, n, i)``), and MMD's bandwidths come from that reference, so model and floor
    use the same kernel; the sliced W2 uses the same ``projections`` directions throughout.
    """
    from diffflow_core.data import load_dataset

    n = check.integer("n", n, 2)
    seeds = check.integer("seeds", seeds, 1)
    dataset = load_dataset(dataset)
    statistics = {"sliced_w2": lambda a, b: sliced_wasserstein(a, b, projections),
                  "mmd2": lambda a, b: mmd(a, b).mmd2, "energy": energy_distance}
    values: dict[str, list[float]] = {k: [] for k in statistics}
    floors: dict[str, list[float]] = {k: [] for k in statistics}
    model_draws = draws(samples, n, seeds)
    for i, x in enumerate(model_draws):
        reference, partner = reference_draw(dataset, n, i)
        same_width(x, reference, "data_distances")
        for name, statistic in statistics.items():
            values[name].append(statistic(x, reference))
            floors[name].append(statistic(partner, reference))
    result = {k: Distance(tuple(values[k]), tuple(floors[k]), positive=k == "sliced_w2") for k in statistics}
    return DistancesResult(**result, n=n, seeds=len(model_draws))
