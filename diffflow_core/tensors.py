"""Tensor helpers every family needs."""
from __future__ import annotations

from torch import Tensor

__all__ = ["per_sample"]


def per_sample(values: Tensor, like: Tensor) -> Tensor:
    """Per-sample values ``[N]`` shaped ``[N, 1, ..., 1]`` to broadcast against particles ``like [N, *shape]``."""
    return values.reshape(-1, *([1] * (like.ndim - 1)))
