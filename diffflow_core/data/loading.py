"""``load_dataset``: one entry point from whatever names data (a registry name, a ``.npy`` path, an array,
image files by ``scheme:/path``, a torch Dataset) to a :class:`~diffflow_core.data.base.Dataset`."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from diffflow_core.data import images
from diffflow_core.data.base import Dataset, read_npy, split_array
from diffflow_core.errors import ConfigError

__all__ = ["load_dataset"]

_ARRAY_PARAMS = ("test_fraction", "seed")


def load_dataset(spec: Any, **params: Any) -> Dataset:
    """A Dataset from a registry name, ``{"name": ..., **params}``, a ``.npy`` path, an array or a tensor, image
    files as ``"scheme:/path"`` (``mnist:``, ``cifar10:``, ``folder:``, ``images:``; see
    :mod:`diffflow_core.data.images`) or a map-style ``torch.utils.data.Dataset`` of images.

    Arrays, tensors and files hold out ``test_fraction`` (default 10%) of their rows as the test split,
    seeded by ``seed`` (default 0); a file's Dataset records its absolute path.
    """
    if isinstance(spec, Dataset):
        return spec
    if isinstance(spec, dict):
        params = {**{k: v for k, v in spec.items() if k != "name"}, **params}
        spec = spec.get("name")
    if isinstance(spec, (str, Path, torch.utils.data.Dataset)):
        if isinstance(spec, torch.utils.data.Dataset):
            return images.from_torch_dataset(spec, **params)
        scheme, colon, _ = str(spec).partition(":")
        if colon and scheme in images.SCHEMES:
            return images.load_image_path(str(spec), **params)
    is_file = isinstance(spec, (str, Path)) and str(spec).endswith(".npy")
    if is_file or isinstance(spec, (np.ndarray, Tensor)):
        for key in params:
            if key not in _ARRAY_PARAMS:
                raise ConfigError(f"data.{key}: unknown parameter for array data; expected some of "
                                  f"{', '.join(_ARRAY_PARAMS)}")
        if not is_file:
            return split_array(spec, **params)
        path = Path(spec).expanduser().resolve()
        return split_array(read_npy(path), **params, name=path.stem, path=str(path))
    if isinstance(spec, str):
        from diffflow_core.plugins import registry

        return registry("datasets").create(spec, **params)
    raise ConfigError(f"data: expected a dataset name, a .npy path, scheme:/path image files, an array, a tensor "
                      f"or a torch Dataset, got {type(spec).__name__}")
