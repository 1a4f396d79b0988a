"""A digits feature space: a small CNN classifier, the Fréchet distance in its features, class histograms.

The classifier is trained deterministically on the ``digits`` train split by
``scripts/train_digits_classifier.py`` (seconds on one CPU core) and its weights are committed under
``diffflow_core/assets/``; when they are missing, :func:`digits_classifier` retrains and caches them.

The Fréchet distance ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))`` between Gaussian fits of the
features is biased upwards at small sample sizes, so a model is compared at the size of the test split: its
samples are cut into chunks of ``len(test)`` rows, each chunk is compared with the train features, and the
chunk values are averaged. The floor is the same statistic for the held-out test images.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import attrs
import numpy as np
import torch
from torch import Tensor, nn

from diffflow_core.errors import ConfigError
from diffflow_core.metrics._common import as_matrix

__all__ = ["DigitsClassifier", "FrechetResult", "ClassHistogram", "digits_classifier", "train_digits_classifier",
           "frechet_distance", "frechet_digits", "frechet_floor", "class_histogram"]

ASSETS = Path(__file__).resolve().parent.parent / "assets"
WEIGHTS = ASSETS / "digits_classifier.pt"
REPORT = ASSETS / "digits_classifier.json"
FEATURES = 32


class DigitsClassifier(nn.Module):
    """Two 3x3 convolutions and a 32-unit feature layer on [1, 8, 8] images in [-1, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
            nn.Linear(32 * 4 * 4, FEATURES), nn.ReLU())
        self.head = nn.Linear(FEATURES, 10)

    def features(self, x: Tensor) -> Tensor:
        """The 32-dimensional feature vector of each image (inputs of any shape with 64 values per row)."""
        return self.body(x.reshape(-1, 1, 8, 8))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def train_digits_classifier(epochs: int = 40, seed: int = 0, batch_size: int = 64) -> tuple[DigitsClassifier, float]:
    """Train on the digits train split with one-pixel random shifts; returns the model and its test accuracy."""
    from diffflow_core.data import load_dataset

    data = load_dataset("digits")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = DigitsClassifier().double()
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    x, y = data.train.double(), data.train_labels
    padded = nn.functional.pad(x, (1, 1, 1, 1), value=-1.0)
    for _ in range(epochs):
        order = torch.randperm(x.shape[0], generator=generator)
        for start in range(0, x.shape[0], batch_size):
            idx = order[start:start + batch_size]
            dx, dy = torch.randint(0, 3, (2,), generator=generator).tolist()
            batch = padded[idx, :, dy:dy + 8, dx:dx + 8]
            loss = nn.functional.cross_entropy(model(batch), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model = model.float().eval()
    with torch.no_grad():
        accuracy = float((model(data.test).argmax(1) == data.test_labels).double().mean())
    return model, accuracy


def save_classifier(model: DigitsClassifier, accuracy: float, floor: float) -> None:
    """Write the weights (a plain state dict) and a JSON report next to them."""
    ASSETS.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), WEIGHTS)
    REPORT.write_text(json.dumps({"test_accuracy": accuracy, "frechet_floor": floor, "features": FEATURES},
                                 indent=2) + "\n")


@lru_cache(maxsize=1)
def digits_classifier() -> DigitsClassifier:
    """The committed classifier (loaded without unpickling code), retrained and cached if the file is missing."""
    model = DigitsClassifier()
    if WEIGHTS.exists():
        model.load_state_dict(torch.load(WEIGHTS, map_location="cpu", weights_only=True))
        return model.eval()
    model, accuracy = train_digits_classifier()
    save_classifier(model, accuracy, frechet_floor(model))
    return model


def _features(model: DigitsClassifier, images: Tensor) -> Tensor:
    images = torch.as_tensor(images, dtype=torch.float32)
    if images.ndim < 2 or images[0].numel() != 64:
        raise ConfigError(f"samples: expected digits images with 64 values each ([N, 1, 8, 8]), got shape "
                          f"{tuple(images.shape)}")
    as_matrix(images, "samples")
    with torch.no_grad():
        return model.features(images.cpu()).double()


def frechet_distance(a: Tensor, b: Tensor) -> float:
    """Fréchet distance between Gaussian fits of two feature sets [N, D] (exact symmetric eigen form)."""
    a, b = as_matrix(a, "a"), as_matrix(b, "b")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T).reshape(a.shape[1], -1), torch.cov(b.T).reshape(b.shape[1], -1)
    evals, evecs = torch.linalg.eigh(cov_a)
    root_a = evecs @ torch.diag(evals.clamp_min(0).sqrt()) @ evecs.T
    cross = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp_min(0).sqrt().sum()
    return float((mu_a - mu_b).pow(2).sum() + torch.trace(cov_a) + torch.trace(cov_b) - 2 * cross)


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
    return frechet_distance(_features(model, data.test), _features(model, data.train))


def frechet_digits(samples: Tensor) -> FrechetResult:
    """Fréchet distance of digits ``samples`` (model space [-1, 1], ``[N, 1, 8, 8]``, N >= 300) to the train split.

    Samples are compared in chunks of ``len(test) = 300`` rows (the floor's size) and the chunk values averaged.
    """
    from diffflow_core.data import load_dataset

    samples = getattr(samples, "x", samples)
    data = load_dataset("digits")
    model = digits_classifier()
    n = data.test.shape[0]
    feats = _features(model, samples)
    if feats.shape[0] < n:
        raise ConfigError(f"samples: expected at least {n} images (the test split's size), got {feats.shape[0]}")
    train = _features(model, data.train)
    values = [frechet_distance(feats[i:i + n], train) for i in range(0, feats.shape[0] - n + 1, n)]
    floor = frechet_distance(_features(model, data.test), train)
    return FrechetResult(float(np.mean(values)), float(np.std(values)), floor, n, len(values))


@attrs.frozen
class ClassHistogram:
    """Predicted classes of samples: counts and shares per digit."""

    counts: tuple[int, ...]

    @property
    def shares(self) -> tuple[float, ...]:
        total = sum(self.counts)
        return tuple(c / total for c in self.counts)

    @property
    def min_share(self) -> float:
        return min(self.shares)

    @property
    def max_share(self) -> float:
        return max(self.shares)


def class_histogram(samples: Tensor) -> ClassHistogram:
    """How many ``samples`` the digits classifier assigns to each of the ten classes."""
    samples = getattr(samples, "x", samples)
    model = digits_classifier()
    with torch.no_grad():
        labels = model.head(_features(model, samples).float()).argmax(1)
    return ClassHistogram(tuple(torch.bincount(labels, minlength=10).tolist()))
