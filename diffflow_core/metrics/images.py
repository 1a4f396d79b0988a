"""Image metrics in a classifier's feature space: Fréchet distance with its floor, precision/recall, class shares.

Pixel distances say little about images, and Inception-v3 features are costly on a CPU and were never trained on
grey digits. So each image family gets a small classifier that the project trains and ships under
``diffflow_core/assets/`` (a :class:`ClassifierAsset`: a plain state dict loaded with ``weights_only=True`` and a
JSON report of its accuracy and floors), and samples are measured in its penultimate features:

* the Fréchet distance ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))`` between Gaussian fits
  (:func:`frechet_distance`), beside its floor: the same statistic for held-out data at the same sample size,
  since the estimate is biased upwards at finite n and never reads 0 even for a perfect sampler;
* precision and recall (Kynkäänniemi et al. 2019, :func:`precision_recall`): the share of samples inside the
  data's k-nearest-neighbour manifold, and the share of data inside the samples' (fidelity and coverage, which
  one Fréchet number mixes up);
* class shares from the classifier's predictions (:class:`ClassHistogram`): a model that drops a digit shows it.

:func:`image_quality` reports all of them for MNIST-like data (one channel, 28x28 up to 32x32, e.g. MNIST padded
to GPM's 32x32), in the features of the MNIST classifier :func:`mnist_classifier`, which
``scripts/train_mnist_classifier.py`` trains (:func:`train_mnist_classifier`). The digits metrics
(``diffflow_core.metrics.digits``) use the same machinery with their own classifier. Inception FID/KID, the
field's common currency, are in ``diffflow_core.metrics.inception`` (an optional package).
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import attrs
import torch
from torch import Tensor, nn

from diffflow_core import validation as check
from diffflow_core.errors import ConfigError
from diffflow_core.metrics._common import as_matrix, reference_draw, reference_rows

__all__ = ["ClassifierAsset", "FeatureClassifier", "ClassHistogram", "PrecisionRecall", "ImageQuality",
           "MnistClassifier", "MNIST", "frechet_distance", "frechet_from_moments", "moments", "precision_recall",
           "class_histogram", "classifier_features", "load_classifier", "train_classifier", "accuracy",
           "mnist_classifier", "train_mnist_classifier", "mnist_report", "is_mnist_like", "image_quality"]

ASSETS = Path(__file__).resolve().parent.parent / "assets"

#: Rows per forward pass of a classifier and per block of pairwise distances (bounds the memory of both).
_BLOCK = 1024


# -- the Fréchet distance -------------------------------------------------------------------------------------
def moments(features: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and covariance (float64) of a feature set ``[N, D]``: the Gaussian fit the Fréchet distance compares."""
    x = as_matrix(features, "features")
    return x.mean(0), torch.cov(x.T).reshape(x.shape[1], x.shape[1])


def frechet_from_moments(mu_a: Tensor, cov_a: Tensor, mu_b: Tensor, cov_b: Tensor) -> float:
    """Fréchet distance between ``N(mu_a, cov_a)`` and ``N(mu_b, cov_b)`` (exact symmetric eigen form: the cross
    term is ``tr((A^(1/2) B A^(1/2))^(1/2))``, which stays real where ``sqrtm(A B)`` picks up imaginary noise)."""
    evals, evecs = torch.linalg.eigh(cov_a)
    root_a = evecs @ torch.diag(evals.clamp_min(0).sqrt()) @ evecs.T
    cross = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp_min(0).sqrt().sum()
    return float((mu_a - mu_b).pow(2).sum() + torch.trace(cov_a) + torch.trace(cov_b) - 2 * cross)


def frechet_distance(a: Tensor, b: Tensor) -> float:
    """Fréchet distance between Gaussian fits of two feature sets ``[N, D]``."""
    return frechet_from_moments(*moments(as_matrix(a, "a")), *moments(as_matrix(b, "b")))


# -- precision and recall -------------------------------------------------------------------------------------
def _neighbour_radii(x: Tensor, k: int) -> Tensor:
    """Distance of each row of ``x`` to its ``k``-th nearest other row (the radius of its ball in the manifold)."""
    radii = [torch.cdist(x[s:s + _BLOCK], x).topk(k + 1, dim=1, largest=False).values[:, k]
             for s in range(0, x.shape[0], _BLOCK)]
    return torch.cat(radii)


@attrs.frozen
class PrecisionRecall:
    """Improved precision and recall (Kynkäänniemi et al. 2019) with ``k``-nearest-neighbour balls."""

    #: share of samples inside the data's manifold (fidelity)
    precision: float
    #: share of data inside the samples' manifold (coverage)
    recall: float
    k: int


def precision_recall(real: Tensor, fake: Tensor, k: int = 3) -> PrecisionRecall:
    """Precision and recall of ``fake`` features against ``real`` ones (``[N, D]`` each, N > k).

    Each set's manifold is the union of balls around its points, each ball reaching the point's ``k``-th nearest
    neighbour within the set. Precision is the share of ``fake`` points inside the real manifold, recall the
    share of ``real`` points inside the fake manifold: identical sets score 1 and 1, disjoint ones 0 and 0.
    """
    k = check.positive_int("k", k)
    real, fake = as_matrix(real, "real"), as_matrix(fake, "fake")
    if min(real.shape[0], fake.shape[0]) <= k:
        raise ConfigError(f"precision_recall: expected more than k={k} rows in each set, got {real.shape[0]} real "
                          f"and {fake.shape[0]} fake")
    if real.shape[1] != fake.shape[1]:
        raise ConfigError(f"precision_recall: features have {real.shape[1]} and {fake.shape[1]} dimensions")
    return _precision_recall(real, _neighbour_radii(real, k), fake, _neighbour_radii(fake, k), k)


def _precision_recall(real: Tensor, real_radii: Tensor, fake: Tensor, fake_radii: Tensor, k: int) -> PrecisionRecall:
    """Both shares from one pass over the real-to-fake distances, in blocks of real rows (the k-NN radii are given:
    a reference compared with several sets computes its own once)."""
    fake_inside = torch.zeros(fake.shape[0], dtype=torch.bool)
    real_inside = []
    for s in range(0, real.shape[0], _BLOCK):
        d = torch.cdist(real[s:s + _BLOCK], fake)
        real_inside.append((d <= fake_radii).any(1))
        fake_inside |= (d <= real_radii[s:s + _BLOCK, None]).any(0)
    return PrecisionRecall(float(fake_inside.double().mean()), float(torch.cat(real_inside).double().mean()), k)


# -- classifiers and their assets -----------------------------------------------------------------------------
class FeatureClassifier(nn.Module):
    """A classifier whose penultimate layer is the feature space: ``body`` maps images to features, ``head`` maps
    features to class logits. Subclasses set ``body``, ``head`` and :meth:`prepare` (rows to network input)."""

    body: nn.Module
    head: nn.Module

    def prepare(self, x: Tensor) -> Tensor:
        """Rows of any layout (``[N, 1, H, W]``, ``[N, H, W]``, flattened) as the network's input batch."""
        raise NotImplementedError

    def features(self, x: Tensor) -> Tensor:
        return self.body(self.prepare(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


@attrs.frozen
class ClassifierAsset:
    """A shipped classifier: ``<name>.pt`` (a plain state dict, optionally float16 to stay small) and
    ``<name>.json`` (its report) under ``diffflow_core/assets``.

    ``make`` builds the untrained network; ``retrain`` (when cheap) rebuilds missing weights as
    ``(model, report)``, otherwise a missing file is an error naming ``script``.
    """

    name: str
    make: Callable[[], FeatureClassifier]
    script: str
    retrain: Callable[[], tuple[FeatureClassifier, dict[str, Any]]] | None = None
    half: bool = False

    @property
    def weights(self) -> Path:
        return ASSETS / f"{self.name}.pt"

    @property
    def report_path(self) -> Path:
        return ASSETS / f"{self.name}.json"

    def report(self) -> dict[str, Any]:
        return json.loads(self.report_path.read_text())

    def _state(self, model: FeatureClassifier) -> dict[str, Tensor]:
        """The state dict as stored: floating tensors in float16 when ``half``."""
        return {k: v.half() if self.half and v.is_floating_point() else v for k, v in model.state_dict().items()}

    def save(self, model: FeatureClassifier, report: dict[str, Any]) -> None:
        """Write the weights and the JSON report."""
        ASSETS.mkdir(parents=True, exist_ok=True)
        torch.save(self._state(model), self.weights)
        self.report_path.write_text(json.dumps(report, indent=2) + "\n")

    def stored(self, model: FeatureClassifier) -> FeatureClassifier:
        """``model`` as it will load from the file (float16-rounded when ``half``), in float32 eval mode: the
        report must describe the shipped weights, not the unrounded ones."""
        return self._from_state(self._state(model))

    def _from_state(self, state: dict[str, Tensor]) -> FeatureClassifier:
        model = self.make()
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
        return model.eval()

    def load(self) -> FeatureClassifier:
        """The shipped classifier, read without unpickling code (``weights_only=True``); missing weights are
        retrained and cached when ``retrain`` is given, else a ConfigError names the script."""
        if self.weights.exists():
            return self._from_state(torch.load(self.weights, map_location="cpu", weights_only=True))
        if self.retrain is None:
            raise ConfigError(f"metrics: the classifier weights {self.weights} are missing; rebuild them with "
                              f"python {self.script}")
        model, report = self.retrain()
        self.save(model, report)
        return self.stored(model)


@lru_cache(maxsize=None)
def load_classifier(asset: ClassifierAsset) -> FeatureClassifier:
    """``asset.load()`` once per process (evaluation calls it for every run)."""
    return asset.load()


def classifier_features(model: FeatureClassifier, images: Any, what: str = "samples") -> Tensor:
    """Features (float64 ``[N, D]``) of ``images`` (a tensor, a ``Samples``, or image rows such as
    ``dataset.test_rows``), computed in blocks on the CPU without gradients; NaN/Inf are refused."""
    images = getattr(images, "x", images)
    rows = as_matrix(images if isinstance(images, Tensor) else images[torch.arange(len(images))], what,
                     dtype=torch.float32)
    with torch.no_grad():
        return torch.cat([model.features(rows[s:s + _BLOCK]) for s in range(0, rows.shape[0], _BLOCK)]).double()


@attrs.frozen
class ClassHistogram:
    """Predicted classes of samples: counts and shares per class."""

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


def class_histogram(model: FeatureClassifier, features: Tensor, classes: int = 10) -> ClassHistogram:
    """Class counts of the classifier's predictions from its ``features`` (all ``classes`` listed, empty ones too)."""
    with torch.no_grad():
        labels = model.head(features.float()).argmax(1)
    return ClassHistogram(tuple(torch.bincount(labels, minlength=classes).tolist()))


def train_classifier(model: FeatureClassifier, rows: Any, labels: Tensor, *, epochs: int, seed: int,
                     batch_size: int, lr: float, shift: int, decay: bool = False, dtype: torch.dtype = torch.float32,
                     progress: str | None = None) -> FeatureClassifier:
    """Adam on cross-entropy over ``epochs`` seeded passes of ``rows`` (a tensor or image rows that convert when
    indexed), each batch moved by one random shift of up to ``shift`` pixels (a border of -1, the background in
    model space, then a crop back to size): deterministic on the CPU for a given ``seed``. With ``decay`` the
    learning rate falls linearly to 0 over the run (a short run then ends in a well-settled minimum). Returns the
    model in float32 eval mode. ``model`` is trained in ``dtype`` (the digits classifier: float64)."""
    from diffflow_core.progress import progress_bar

    model = model.to(dtype)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    n = len(rows)
    per_epoch = -(-n // batch_size)
    bar = progress_bar(epochs * per_epoch, progress, enabled=progress is not None)
    for epoch in range(epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            if decay:
                done = epoch * per_epoch + start // batch_size
                optimizer.param_groups[0]["lr"] = lr * (1 - done / (epochs * per_epoch))
            idx = order[start:start + batch_size]
            batch = rows[idx].to(dtype)
            if shift:
                dx, dy = torch.randint(0, 2 * shift + 1, (2,), generator=generator).tolist()
                height, width = batch.shape[-2:]
                batch = nn.functional.pad(batch, (shift,) * 4, value=-1.0)[..., dy:dy + height, dx:dx + width]
            loss = nn.functional.cross_entropy(model(batch), labels[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return model.float().eval()


def accuracy(model: FeatureClassifier, rows: Any, labels: Tensor) -> float:
    """Share of ``rows`` whose predicted class is their label."""
    features = classifier_features(model, rows, "rows")
    with torch.no_grad():
        return float((model.head(features.float()).argmax(1) == labels).double().mean())


# -- MNIST ----------------------------------------------------------------------------------------------------
#: Side of the images the MNIST classifier reads; larger MNIST-like images are center-cropped to it.
MNIST_SIDE = 28
#: Largest side accepted as MNIST-like (MNIST with a zero border of up to 2 pixels, GPM's 32x32).
MNIST_MAX_SIDE = 32
MNIST_FEATURES = 128


class MnistClassifier(FeatureClassifier):
    """Two 3x3 convolution + max-pool stages (32 and 64 channels) and a 128-unit feature layer on 28x28 grey
    images in [-1, 1]; square inputs of 28 to 32 pixels are center-cropped to 28 (MNIST padded to 32x32 by
    ``pad=2`` gives exactly the unpadded image)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(64 * 7 * 7, MNIST_FEATURES), nn.ReLU())
        self.head = nn.Linear(MNIST_FEATURES, 10)

    def prepare(self, x: Tensor) -> Tensor:
        side = round(x[0].numel() ** 0.5) if x.ndim > 1 else 0
        if x.ndim < 2 or side * side != x[0].numel() or not MNIST_SIDE <= side <= MNIST_MAX_SIDE:
            raise ConfigError(f"samples: expected grey square images of {MNIST_SIDE} to {MNIST_MAX_SIDE} pixels a side "
                              f"([N, 1, 28, 28] or [N, 1, 32, 32]), got shape {tuple(x.shape)}")
        x = x.reshape(-1, 1, side, side)
        cut = (side - MNIST_SIDE) // 2
        return x[..., cut:cut + MNIST_SIDE, cut:cut + MNIST_SIDE]


#: Sample sizes of the floors the MNIST classifier's report records.
MNIST_FLOOR_SIZES = (2000, 10_000)


def train_mnist_classifier(epochs: int = 3, seed: int = 0, batch_size: int = 128, lr: float = 2e-3, shift: int = 1,
                           progress: bool = False) -> tuple[MnistClassifier, dict[str, Any]]:
    """Train :class:`MnistClassifier` on MNIST's 60,000 training images (random shifts of up to ``shift`` pixels,
    the learning rate falling linearly to 0); returns the model as it will be stored (float16-rounded) and its
    report: test accuracy, feature dimension, the training settings, and the test-vs-train floors of
    :func:`image_quality` at :data:`MNIST_FLOOR_SIZES`."""
    from diffflow_core.data import load_dataset

    data = load_dataset("mnist")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = MnistClassifier()
    model = train_classifier(model, data.train_rows, data.train_labels, epochs=epochs, seed=seed,
                             batch_size=batch_size, lr=lr, shift=shift, decay=True,
                             progress="MNIST classifier" if progress else None)
    model = MNIST.stored(model)
    report: dict[str, Any] = {
        "test_accuracy": accuracy(model, data.test_rows, data.test_labels), "features": MNIST_FEATURES,
        "train": {"epochs": epochs, "seed": seed, "batch_size": batch_size, "lr": lr, "lr_decay": "linear to 0",
                  "shift": shift}}
    for n in MNIST_FLOOR_SIZES:
        _, _, fd_floor, floor = _reference(model, data, n, 3)
        report[f"floor_n{n}"] = {"fd": fd_floor, "precision": floor.precision, "recall": floor.recall}
    return model, report


MNIST = ClassifierAsset("mnist_classifier", MnistClassifier, "scripts/train_mnist_classifier.py", half=True)


def mnist_classifier() -> MnistClassifier:
    """The shipped MNIST classifier (loaded once per process)."""
    return load_classifier(MNIST)


def mnist_report() -> dict[str, Any]:
    """The shipped MNIST classifier's report (test accuracy, features, training settings, floors)."""
    return MNIST.report()


def is_mnist_like(event_shape: tuple[int, ...]) -> bool:
    """Whether rows of ``event_shape`` are MNIST-like images: one channel, square, 28 to 32 pixels a side."""
    shape = tuple(event_shape)
    return (len(shape) == 3 and shape[0] == 1 and shape[1] == shape[2]
            and MNIST_SIDE <= shape[1] <= MNIST_MAX_SIDE)


# -- the report -----------------------------------------------------------------------------------------------
@attrs.frozen
class ImageQuality:
    """Classifier-feature metrics of ``n`` samples against ``n`` held-out test images, and the floors: the same
    statistics for ``n`` training images against the same test images (what a perfect sampler scores)."""

    n: int
    fd: float
    fd_floor: float
    precision: float
    recall: float
    precision_floor: float
    recall_floor: float
    classes: ClassHistogram
    k: int

    @property
    def fd_ratio(self) -> float:
        """``fd / fd_floor``: about 1 for a perfect sampler, larger is worse."""
        return self.fd / self.fd_floor

    def as_dict(self) -> dict[str, Any]:
        return {"n": self.n, "fd": self.fd, "fd_floor": self.fd_floor, "fd_ratio": self.fd_ratio,
                "precision": self.precision, "recall": self.recall, "precision_floor": self.precision_floor,
                "recall_floor": self.recall_floor, "k": self.k, "class_shares": list(self.classes.shares),
                "min_share": self.classes.min_share, "max_share": self.classes.max_share}


def _reference(model: FeatureClassifier, dataset, n: int, k: int) -> tuple[Tensor, Tensor, float, PrecisionRecall]:
    """Features of ``n`` held-out test images (the reference) and their k-NN radii, and the floors: the Fréchet
    distance and the precision/recall of ``n`` training images against them (``reference_draw(dataset, n, 0)``)."""
    test, train = reference_draw(dataset, n, 0)
    reference = classifier_features(model, test, "data")
    radii = _neighbour_radii(reference, k)
    partner = classifier_features(model, train, "data")
    floor = _precision_recall(reference, radii, partner, _neighbour_radii(partner, k), k)
    return reference, radii, frechet_distance(partner, reference), floor


def image_quality(samples: Any, dataset, n: int | None = None, k: int = 3) -> ImageQuality:
    """Fréchet distance, precision/recall (``k``-NN) and class shares of MNIST-like ``samples`` (model space
    [-1, 1], ``[N, 1, 28, 28]`` or ``[N, 1, 32, 32]``) in the MNIST classifier's features, with their floors.
    Samples are clipped to [-1, 1] first, as saving them as pixels would.

    ``n`` (default: as many as the samples and the data's test split allow) samples are compared with ``n``
    held-out test images; the floors compare ``n`` training images with the same test images
    (``reference_draw(dataset, n, 0)``: fixed seeds, so every model meets the same references). The
    Fréchet distance falls with n, so compare models at the same n; the report of :func:`mnist_classifier` holds
    the floors at n = 2,000 and 10,000.
    """
    from diffflow_core.data import load_dataset

    dataset = load_dataset(dataset)
    samples = torch.as_tensor(getattr(samples, "x", samples)).detach().cpu()
    if not is_mnist_like(tuple(samples.shape[1:])):
        raise ConfigError(f"samples: expected MNIST-like images [N, 1, 28..32, 28..32], got shape "
                          f"{tuple(samples.shape)}")
    available = min(samples.shape[0], reference_rows(dataset))
    n = available if n is None else check.integer("n", n, k + 1, available)
    if n <= k:
        raise ConfigError(f"n: image_quality needs more than k={k} samples and reference rows, got {n}")
    model = mnist_classifier()
    reference, radii, fd_floor, floor = _reference(model, dataset, n, k)
    feats = classifier_features(model, samples[:n].clamp(-1, 1))
    pr = _precision_recall(reference, radii, feats, _neighbour_radii(feats, k), k)
    return ImageQuality(n, frechet_distance(feats, reference), fd_floor, pr.precision, pr.recall, floor.precision,
                        floor.recall, class_histogram(model, feats), k)
