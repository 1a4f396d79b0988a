"""A digits feature space: a small CNN classifier, the Fréchet distance in its features, class histograms.

The classifier is trained deterministically on the ``digits`` train split by
``scripts/train_digits_classifier.py`` (seconds on one CPU core) and its weights are committed under
``diffflow_core/assets/``; when they are missing, :func:`digits_classifier` retrains and caches them. Loading,
training and the statistics are the shared classifier-feature machinery of ``diffflow_core.metrics.images``.

The Fréchet distance is biased upwards at small sample sizes, so a model is compared at the size of the test
split: its samples are cut into chunks of ``len(test)`` rows, each chunk is compared with the train features,
and the chunk values are averaged. The floor is the same statistic for the held-out test images.
"""
from __future__ import annotations

from typing import Any

import attrs
import numpy as np
import torch
from torch import Tensor, nn

from diffflow_core.errors import ConfigError
from diffflow_core.metrics.images import (ClassHistogram, ClassifierAsset, FeatureClassifier, accuracy,
                                          classifier_features, frechet_distance, load_classifier,
                                          train_classifier)
from diffflow_core.metrics.images import class_histogram as _class_histogram

__all__ = ["DigitsClassifier", "FrechetResult", "ClassHistogram", "digits_classifier", "train_digits_classifier",
           "frechet_distance", "frechet_digits", "frechet_floor", "class_histogram"]

FEATURES = 32


class DigitsClassifier(FeatureClassifier):
    """Two 3x3 convolutions and a 32-unit feature layer on [1, 8, 8] images in [-1, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
            nn.Linear(32 * 4 * 4, FEATURES), nn.ReLU())
        self.head = nn.Linear(FEATURES, 10)

    def prepare(self, x: Tensor) -> Tensor:
        """Inputs of any shape with 64 values per row, as ``[N, 1, 8, 8]``."""
        if x.ndim < 2 or x[0].numel() != 64:
            raise ConfigError(f"samples: expected digits images with 64 values each ([N, 1, 8, 8]), got shape "
                              f"{tuple(x.shape)}")
        return x.reshape(-1, 1, 8, 8)


def train_digits_classifier(epochs: int = 40, seed: int = 0, batch_size: int = 64) -> tuple[DigitsClassifier, float]:
    """Train on the digits train split (float64, one-pixel random shifts); returns the model and its test accuracy."""
    from diffflow_core.data import load_dataset

    data = load_dataset("digits")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = DigitsClassifier()
    model = train_classifier(model, data.train_rows, data.train_labels, epochs=epochs, seed=seed,
                             batch_size=batch_size, lr=2e-3, shift=1, dtype=torch.float64)
    return model, accuracy(model, data.test, data.test_labels)


def _report(test_accuracy: float, floor: float) -> dict[str, Any]:
    """The JSON report of the digits classifier: test accuracy, Fréchet floor, feature dimension."""
    return {"test_accuracy": test_accuracy, "frechet_floor": floor, "features": FEATURES}


def _retrain() -> tuple[DigitsClassifier, dict[str, Any]]:
    model, test_accuracy = train_digits_classifier()
    return model, _report(test_accuracy, frechet_floor(model))


DIGITS = ClassifierAsset("digits_classifier", DigitsClassifier, "scripts/train_digits_classifier.py", _retrain)
WEIGHTS, REPORT = DIGITS.weights, DIGITS.report_path


def save_classifier(model: DigitsClassifier, test_accuracy: float, floor: float) -> None:
    """Write the weights (a plain float32 state dict) and the JSON report next to them."""
    DIGITS.save(model, _report(test_accuracy, floor))


def digits_classifier() -> DigitsClassifier:
    """The committed classifier (loaded without unpickling code), retrained and cached if the file is missing."""
    return load_classifier(DIGITS)


@attrs.frozen
class FrechetResult:
    """Fréchet distance of samples to the train features, and the held-out test images' floor, at one size."""

    fd: float
    fd_std: float
    floor: float
    n: int
    chunks: int

    @property
    def ratio(self) -> float:
        return self.fd / self.floor


def frechet_floor(model: DigitsClassifier) -> float:
    """Fréchet distance of the held-out test images to the train images: what a perfect sampler scores."""
    from diffflow_core.data import load_dataset

    data = load_dataset("digits")
    return frechet_distance(classifier_features(model, data.test), classifier_features(model, data.train))


def frechet_digits(samples: Tensor) -> FrechetResult:
    """Fréchet distance of digits ``samples`` (model space [-1, 1], ``[N, 1, 8, 8]``, N >= 300) to the train split.

    Samples are compared in chunks of ``len(test) = 300`` rows (the floor's size) and the chunk values averaged.
    """
    from diffflow_core.data import load_dataset

    data = load_dataset("digits")
    model = digits_classifier()
    n = data.test.shape[0]
    feats = classifier_features(model, samples)
    if feats.shape[0] < n:
        raise ConfigError(f"samples: expected at least {n} images (the test split's size), got {feats.shape[0]}")
    train = classifier_features(model, data.train)
    values = [frechet_distance(feats[i:i + n], train) for i in range(0, feats.shape[0] - n + 1, n)]
    floor = frechet_distance(classifier_features(model, data.test), train)
    return FrechetResult(float(np.mean(values)), float(np.std(values)), floor, n, len(values))


def class_histogram(samples: Tensor) -> ClassHistogram:
    """How many ``samples`` the digits classifier assigns to each of the ten classes."""
    model = digits_classifier()
    return _class_histogram(model, classifier_features(model, samples))
