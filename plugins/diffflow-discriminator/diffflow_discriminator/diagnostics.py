"""Diagnostics of the discriminator family: the discriminator's potential as a picture background (GPM
Figures 9-10) and mode coverage over training (GPM §C.2: Score GANs drop modes)."""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

__all__ = ["potential_background", "coverage_evaluator"]


def potential_background(flow: Any, t: float = 0.0) -> Callable[[Tensor], Tensor]:
    """``points [M, 2] -> h = -c(f(points, t))`` ``[M]``, for ``diffflow_core.plots.snapshots(background=...)``."""

    @torch.no_grad()
    def background(points: Tensor) -> Tensor:
        device = next(flow.parameters()).device
        return flow.loss.potential(flow.logit(points.to(device), t)).cpu()

    return background


def coverage_evaluator(n: int = 2000, steps: int | None = None) -> Callable[[Any, int], dict[str, float]]:
    """A ``Trainer(evaluate=...)`` callback: mode shares and their largest deviation (points) at each evaluation."""
    from diffflow_core.metrics import mode_coverage

    def evaluate(model, step: int) -> dict[str, float]:
        coverage = mode_coverage(model.sample(n, steps, seed=0).x, model.data)
        return {"max_deviation": coverage.max_deviation, "modes_covered": coverage.modes_covered,
                **{f"share_{i}": s for i, s in enumerate(coverage.shares)}}

    return evaluate
