"""Shared helpers of the metrics: input checks and the per-seed sample sources."""
from __future__ import annotations

import sys
from typing import Callable, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from diffflow_core.errors import ConfigError

#: Either ``fn(n, seed) -> samples`` or one sample array per seed.
SampleSource = Union[Callable[[int, int], Tensor], Sequence[Tensor]]

#: Reference draws use seeds ``REFERENCE_SEED + i`` so they never coincide with a sampler's seed ``i``.
REFERENCE_SEED = 10_000


def as_matrix(x: Tensor | np.ndarray, what: str, dtype: torch.dtype = torch.float64) -> Tensor:
    """``x`` flattened to ``[N, D]`` on the CPU in ``dtype``; NaN/Inf or fewer than 2 rows raise ConfigError."""
    x = torch.as_tensor(x)
    if x.ndim < 1 or x.shape[0] < 2:
        raise ConfigError(f"{what}: expected an array [N, ...] with N >= 2, got shape {tuple(x.shape)}")
    x = x.detach().to("cpu", dtype).reshape(x.shape[0], -1)
    if not bool(torch.isfinite(x).all()):
        raise ConfigError(f"{what}: {int((~torch.isfinite(x)).sum())} non-finite value(s) (NaN/Inf)")
    return x


def same_width(a: Tensor, b: Tensor, what: str) -> None:
    if a.shape[1] != b.shape[1]:
        raise ConfigError(f"{what}: samples have {a.shape[1]} features per row but the reference has {b.shape[1]}")


def draws(samples: SampleSource, n: int, seeds: int) -> list[Tensor]:
    """One ``[n, D]`` float64 sample matrix per seed from a sampler ``fn(n, seed)`` or a list of arrays.

    A list fixes the number of seeds to its length (``seeds`` is then ignored); each array must hold at
    least ``n`` rows and its first ``n`` are used.
    """
    if callable(samples):
        out = [samples(n, seed) for seed in range(seeds)]
    elif isinstance(samples, (list, tuple)) and samples:
        out = list(samples)
    else:
        raise ConfigError("samples: expected a callable fn(n, seed) or a non-empty list of sample arrays, "
                          f"got {type(samples).__name__}")
    result = []
    for i, x in enumerate(out):
        x = getattr(x, "x", x)  # a Model.sample() result
        x = as_matrix(x, f"samples[{i}]")
        if x.shape[0] < n:
            raise ConfigError(f"samples[{i}]: expected at least n={n} rows, got {x.shape[0]}")
        result.append(x[:n])
    return result


def reference_rows(dataset) -> int:
    """The largest ``n`` :func:`reference_draw` can give: unbounded for a law with a sampler; for array data the
    held-out test rows (and as many training rows), or half the rows when nothing is held out."""
    if dataset.has_sampler:
        return sys.maxsize
    train, test = dataset.train_rows, dataset.test_rows  # rows convert when indexed: no float copy of a split
    if test is train:
        return train.shape[0] // 2
    return min(test.shape[0], train.shape[0])


def reference_draw(dataset, n: int, index: int) -> tuple[Tensor, Tensor]:
    """Two independent ``n``-sample draws of the data law for seed ``index`` (reference and floor partner).

    A law with a sampler gives two fresh draws. Array data give ``n`` held-out test rows and ``n`` training
    rows (or two disjoint halves of a permutation when nothing is held out), without replacement: a floor
    that compared rows with themselves would be too low.
    """
    generator = torch.Generator().manual_seed(REFERENCE_SEED + index)
    if dataset.has_sampler:
        first = as_matrix(dataset.sample(n, generator), "data")
        return first, as_matrix(dataset.sample(n, generator), "data")
    available = reference_rows(dataset)
    if n > available:
        raise ConfigError(f"n: data '{dataset.name}' ({dataset.split}) gives at most {available} reference rows "
                          f"without replacement; expected n <= {available}, got {n}")
    train, test = dataset.train_rows, dataset.test_rows
    if test is train:
        order = torch.randperm(train.shape[0], generator=generator)
        return as_matrix(train[order[:n]], "data"), as_matrix(train[order[n:2 * n]], "data")
    test = test[torch.randperm(test.shape[0], generator=generator)[:n]]
    train = train[torch.randperm(train.shape[0], generator=generator)[:n]]
    return as_matrix(test, "data"), as_matrix(train, "data")
