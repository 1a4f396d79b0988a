"""Source laws pi_1: where the particles of a velocity flow start at t = 0 (SPEC §4.1, "x_1 ~ pi_1").

A source is noise (an isotropic Gaussian), a dataset, or one class of a labelled dataset. Every draw takes an
explicit generator; a dataset source draws its rows on the CPU generator and moves them to ``device``.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from diffflow_core import validation as check
from diffflow_core.data import Dataset, load_dataset
from diffflow_core.errors import ConfigError
from diffflow_core.tensors import draw_device, draw_noise

__all__ = ["Source", "GaussianSource", "DatasetSource", "make_source"]


class Source:
    """A law of particles of shape ``event_shape`` that can be sampled."""

    event_shape: tuple[int, ...] = ()

    def sample(self, n: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu",
               dtype: torch.dtype = torch.float32) -> Tensor:
        raise NotImplementedError

    def log_prob(self, x: Tensor) -> Tensor:
        """Log-density of the source, needed by the ODE log-likelihood (SPEC §1.7)."""
        raise NotImplementedError(f"source {type(self).__name__} has no closed-form density")


class GaussianSource(Source):
    """``N(0, std^2 I)``: noise for generation; ``std`` is sigma_max on the VE path (SPEC §4.1)."""

    def __init__(self, event_shape: tuple[int, ...], std: float = 1.0) -> None:
        self.event_shape, self.std = tuple(event_shape), check.positive("source.std", std)

    def sample(self, n, generator=None, device="cpu", dtype=torch.float32):
        return self.std * draw_noise((n, *self.event_shape), generator, torch.empty(0, device=device, dtype=dtype))

    def log_prob(self, x: Tensor) -> Tensor:
        d = math.prod(self.event_shape)
        sq = x.flatten(1).pow(2).sum(1) / self.std ** 2
        return -0.5 * sq - d * (math.log(self.std) + 0.5 * math.log(2 * math.pi))


class DatasetSource(Source):
    """Rows of a dataset's training split, optionally only those of class ``label`` (a class as a law)."""

    def __init__(self, dataset: Dataset, label: int | None = None) -> None:
        rows = dataset.train
        if label is not None:
            if dataset.train_labels is None:
                raise ConfigError(f"source.label: dataset '{dataset.name}' has no labels, got label={label!r}")
            label = check.integer("source.label", label, 0, dataset.num_classes - 1,
                                  expected=f"a class index in [0, {dataset.num_classes})")
            rows = rows[dataset.train_labels == label]
        self.dataset, self.label, self.rows = dataset, label, rows
        self.event_shape = tuple(rows.shape[1:])

    def sample(self, n, generator=None, device="cpu", dtype=torch.float32):
        if generator is not None and generator.device.type != "cpu":
            # the rows (and a law's sampler) live on the CPU: draw them from a CPU stream seeded by this generator
            seed = int(torch.randint(0, 2 ** 62, (1,), generator=generator, device=generator.device))
            generator = torch.Generator().manual_seed(seed)
        if self.label is None:
            draw = self.dataset.sample(n, generator=generator)
        else:
            index = torch.randint(0, self.rows.shape[0], (n,), generator=generator,
                                  device=draw_device(generator, "cpu"))
            draw = self.rows[index.cpu()]
        return draw.to(device=device, dtype=dtype)


def make_source(spec: Any, event_shape: tuple[int, ...], data: Dataset | None = None) -> Source:
    """A Source from ``"gaussian"``, ``{"name": "gaussian", "std": s}`` or
    ``{"name": "dataset", "data": <name|array|Dataset> (default: the model's data), "label": c}``."""
    if isinstance(spec, Source):
        source = spec
    else:
        params = {"name": spec} if isinstance(spec, str) else dict(spec) if isinstance(spec, dict) else None
        if params is None or "name" not in params:
            raise ConfigError(f"source: expected 'gaussian', 'dataset' or a table with a 'name' key, got {spec!r}")
        name = params.pop("name")
        if name == "gaussian":
            source = GaussianSource(event_shape, **params)
        elif name == "dataset":
            dataset = params.pop("data", None)
            dataset = load_dataset(dataset) if dataset is not None else data
            if dataset is None:
                raise ConfigError("source.data: a dataset source needs 'data' (or a model built with data)")
            source = DatasetSource(dataset, **params)
        else:
            raise ConfigError(f"source.name: expected 'gaussian' or 'dataset', got {name!r}")
    if tuple(source.event_shape) != tuple(event_shape):
        raise ConfigError(f"source: its samples have shape {tuple(source.event_shape)}, but the flow's "
                          f"event_shape is {tuple(event_shape)}")
    return source
