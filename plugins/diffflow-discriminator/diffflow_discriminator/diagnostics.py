"""Diagnostics of the discriminator family: mode shares of mixture targets over training and pictures of
particles over the discriminator's value (GPM Figures 9-10)."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from diffflow_core.errors import ConfigError

__all__ = ["mode_shares", "discriminator_field"]


def mode_shares(x: Tensor, means: Tensor) -> Tensor:
    """Share ``[K]`` of samples whose nearest mixture centre is each of ``means`` ``[K, d]``."""
    if x.ndim != 2 or means.ndim != 2 or x.shape[1] != means.shape[1]:
        raise ConfigError(f"x/means: expected [N, d] and [K, d], got {tuple(x.shape)} and {tuple(means.shape)}")
    nearest = torch.cdist(x.double(), means.double()).argmin(1)
    return torch.bincount(nearest, minlength=means.shape[0]).double() / x.shape[0]


@torch.no_grad()
def discriminator_field(flow: Any, lim: float = 5.0, resolution: int = 100, t: float | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Grid ``(xx, yy, h)`` of the potential ``h = -c(f(x, t))`` on ``[-lim, lim]^2`` (2-D flows only)."""
    if tuple(flow.event_shape) != (2,):
        raise ConfigError(f"flow.event_shape: the discriminator picture needs 2-D particles, got {flow.event_shape}")
    axis = torch.linspace(-lim, lim, resolution)
    xx, yy = torch.meshgrid(axis, axis, indexing="xy")
    points = torch.stack([xx.reshape(-1), yy.reshape(-1)], 1).to(next(flow.parameters()).device)
    h = flow.loss.potential(flow.logit(points, t if t is not None else 0.0)).reshape(resolution, resolution)
    return xx, yy, h.cpu()
