"""Class conditioning for flows: labels, the null label and classifier-free guidance at sampling time.

A flow that mixes in :class:`ClassConditioned` sets ``conditional`` and ``num_classes`` and reads the label
and guidance weight of the current solve from ``_labels_for(x)`` and ``_guidance``; ``Model.sample(label=...,
guidance=...)`` enters :meth:`ClassConditioned.sampling` around the solve (SPEC §4.4).
"""
from __future__ import annotations

import contextlib
import math
from typing import Iterator

import torch
from torch import Tensor

from diffflow_core.errors import ConfigError

__all__ = ["ClassConditioned"]


class ClassConditioned:
    """Mixin: label bookkeeping shared by every class-conditional flow."""

    conditional: bool = False
    num_classes: int | None = None
    _label: Tensor | int | None = None
    _guidance: float = 1.0

    def null_labels(self, n: int, device: torch.device | str) -> Tensor:
        """The null label (index ``num_classes``) of classifier-free guidance."""
        return torch.full((n,), self.num_classes, dtype=torch.long, device=device)

    def _labels_for(self, x: Tensor) -> Tensor:
        """The labels of the current solve, one per particle of ``x``."""
        if isinstance(self._label, Tensor):
            if self._label.shape != (x.shape[0],):
                raise ConfigError(f"label: expected one label per particle, shape ({x.shape[0]},), "
                                  f"got {tuple(self._label.shape)}")
            return self._label.to(x.device)
        return torch.full((x.shape[0],), self._label, dtype=torch.long, device=x.device)

    @contextlib.contextmanager
    def sampling(self, label: int | Tensor | None = None, guidance: float = 1.0) -> Iterator[None]:
        """Sample class ``label`` (an int or one per particle) with classifier-free ``guidance`` weight."""
        if label is not None and not self.conditional:
            raise ConfigError(f"label: this {type(self).__name__} is unconditional "
                              "(build it with conditional=True)")
        if isinstance(guidance, bool) or not isinstance(guidance, (int, float)) or not math.isfinite(guidance):
            raise ConfigError(f"guidance: expected a finite number, got {guidance!r}")
        if label is None and guidance != 1.0:
            raise ConfigError("guidance: classifier-free guidance needs a class label")
        if label is not None:
            labels = torch.as_tensor(label)
            if labels.dtype == torch.bool or labels.is_floating_point() or labels.ndim > 1 or \
                    bool(((labels < 0) | (labels >= self.num_classes)).any()):
                raise ConfigError(f"label: expected class indices in [0, {self.num_classes}), got {label!r}")
            label = labels.long() if labels.ndim == 1 else int(labels)
        saved = (self._label, self._guidance)
        self._label, self._guidance = label, float(guidance)
        try:
            yield
        finally:
            self._label, self._guidance = saved
