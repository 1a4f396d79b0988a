"""The Dataset type and name/array/file resolution."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from diffflow_core.errors import ConfigError
from diffflow_core.interfaces import check_finite


class Dataset:
    """A finite train/test split; subclasses with a closed-form law override the analytic methods."""

    name: str = "array"

    def __init__(self, train: Tensor, test: Tensor | None = None, train_labels: Tensor | None = None,
                 test_labels: Tensor | None = None, name: str | None = None) -> None:
        train = torch.as_tensor(train, dtype=torch.float32)
        if train.ndim < 2 or train.shape[0] < 2:
            raise ConfigError(f"data: expected an array [N, *shape] with N >= 2, got shape {tuple(train.shape)}")
        test = train if test is None else torch.as_tensor(test, dtype=torch.float32)
        if test.shape[1:] != train.shape[1:] or test.shape[0] < 1:
            raise ConfigError(f"data: the test split has shape {tuple(test.shape)} but the train split has rows of "
                              f"shape {tuple(train.shape[1:])}")
        for split, values in (("train", train), ("test", test)):
            try:
                check_finite(values, f"data ({split} split)")
            except FloatingPointError as error:
                raise ConfigError(str(error)) from None
        self.train = train
        self.test = test
        self.train_labels = None if train_labels is None else torch.as_tensor(train_labels, dtype=torch.long)
        self.test_labels = None if test_labels is None else torch.as_tensor(test_labels, dtype=torch.long)
        if name is not None:
            self.name = name

    @property
    def event_shape(self) -> tuple[int, ...]:
        return tuple(self.train.shape[1:])

    @property
    def num_classes(self) -> int | None:
        return None if self.train_labels is None else int(self.train_labels.max()) + 1

    @property
    def has_density(self) -> bool:
        return type(self).log_prob is not Dataset.log_prob

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` fresh samples of the law (a closed-form law draws new ones; an array resamples rows)."""
        idx = torch.randint(0, self.train.shape[0], (n,), generator=generator)
        return self.train[idx]

    def log_prob(self, x: Tensor) -> Tensor:
        raise NotImplementedError(f"dataset '{self.name}' has no closed-form density")

    def score(self, x: Tensor) -> Tensor:
        return self.smoothed_score(x, 0.0)

    def smoothed_score(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        raise NotImplementedError(f"dataset '{self.name}' has no closed-form score")

    def to_data_space(self, x: Tensor) -> Tensor:
        """Map model-space samples back to the data's own space (identity unless the data were rescaled)."""
        return x

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, train={tuple(self.train.shape)}, test={tuple(self.test.shape)})"


def load_dataset(spec: Any, **params: Any) -> Dataset:
    """A Dataset from a registry name, ``{"name": ..., **params}``, a ``.npy`` path, an array or a tensor."""
    if isinstance(spec, Dataset):
        return spec
    if isinstance(spec, dict):
        params = {**{k: v for k, v in spec.items() if k != "name"}, **params}
        spec = spec.get("name")
    if isinstance(spec, (np.ndarray, Tensor)):
        return Dataset(torch.as_tensor(np.asarray(spec) if isinstance(spec, np.ndarray) else spec))
    if isinstance(spec, (str, Path)) and str(spec).endswith(".npy"):
        path = Path(spec)
        if not path.exists():
            raise ConfigError(f"data: file {str(path)!r} does not exist")
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as error:
            raise ConfigError(f"data: cannot read {str(path)!r} as a numeric .npy array ({error})") from None
        return Dataset(torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)), name=path.stem)
    if isinstance(spec, str):
        from diffflow_core.plugins import registry

        return registry("datasets").create(spec, **params)
    raise ConfigError(f"data: expected a dataset name, a .npy path, an array or a tensor, got {type(spec).__name__}")
