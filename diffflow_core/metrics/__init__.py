"""Sample-quality metrics (registry ``metrics``); results are attrs classes.

* :func:`w2_ratio` - exact W2 to the data with the data-vs-data floor at the same sample size (over seeds);
* :func:`sliced_wasserstein`, :func:`mmd`, :func:`energy_distance` - two-sample distances;
* :func:`data_distances` - those three against the data, each beside its data-vs-data floor (any dimension);
* :func:`mode_coverage`, :func:`log_density` - for Gaussian-mixture targets;
* :func:`frechet_digits`, :func:`class_histogram`, :func:`digits_classifier` - the digits feature space
  (the classifier loads on first use);
* :func:`image_quality`, :func:`precision_recall`, :func:`mnist_classifier` - MNIST-like images in a shipped
  classifier's features: Fréchet distance and precision/recall beside their floors, class shares;
* ``diffflow_core.metrics.inception`` - Inception-v3 FID/KID (optional package, imported on use).
"""
from __future__ import annotations

from diffflow_core.metrics.digits import (ClassHistogram, FrechetResult, class_histogram, digits_classifier,
                                          frechet_digits, frechet_distance)
from diffflow_core.metrics.distances import Distance, DistancesResult, data_distances
from diffflow_core.metrics.images import (ImageQuality, PrecisionRecall, image_quality, is_mnist_like,
                                          mnist_classifier, precision_recall)
from diffflow_core.metrics.mixture import LogDensityResult, ModeCoverage, log_density, mode_coverage
from diffflow_core.metrics.two_sample import MMDResult, energy_distance, mmd
from diffflow_core.metrics.wasserstein import W2Result, sliced_wasserstein, w2, w2_ratio

__all__ = ["ClassHistogram", "Distance", "DistancesResult", "FrechetResult", "ImageQuality", "LogDensityResult",
           "MMDResult", "ModeCoverage", "PrecisionRecall", "W2Result", "class_histogram", "data_distances",
           "digits_classifier", "energy_distance", "frechet_digits", "frechet_distance", "image_quality",
           "is_mnist_like", "log_density", "mmd", "mnist_classifier", "mode_coverage", "precision_recall",
           "sliced_wasserstein", "w2", "w2_ratio"]
