"""Sample-quality metrics (registry ``metrics``); results are attrs classes.

* :func:`w2_ratio` - exact W2 to the data with the data-vs-data floor at the same sample size (over seeds);
* :func:`sliced_wasserstein`, :func:`mmd`, :func:`energy_distance` - two-sample distances;
* :func:`mode_coverage`, :func:`log_density` - for Gaussian-mixture targets;
* :func:`frechet_digits` - Fréchet distance in a small digits classifier's feature space.
"""
from __future__ import annotations

from diffflow_core.metrics.wasserstein import W2Result, sliced_wasserstein, w2, w2_ratio

__all__ = ["W2Result", "sliced_wasserstein", "w2", "w2_ratio"]
