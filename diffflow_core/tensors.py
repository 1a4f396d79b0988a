"""Tensor helpers every family needs."""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["per_sample", "draw_device"]


def per_sample(values: Tensor, like: Tensor) -> Tensor:
    """Per-sample values ``[N]`` shaped ``[N, 1, ..., 1]`` to broadcast against particles ``like [N, *shape]``."""
    return values.reshape(-1, *([1] * (like.ndim - 1)))


def draw_device(generator: torch.Generator | None, fallback: torch.device | str) -> torch.device | str:
    """Where a draw with ``generator`` must happen: a generator draws only on its own device, so a CPU generator
    that drives CUDA particles draws on the CPU (the caller moves the result); ``fallback`` without one."""
    return generator.device if generator is not None else fallback
