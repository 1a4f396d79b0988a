"""Class conditioning for flows: labels, the null label and classifier-free guidance at sampling time.

A flow that mixes in :class:`ClassConditioned` sets ``conditional`` and ``num_classes``, declares
``drift(self, x, t, context)`` and reads the label and guidance weight of the current solve from the
:class:`~diffflow_core.interfaces.SamplingContext` with :meth:`ClassConditioned.conditioning` (SPEC §4.4).
``Model.sample(label=..., guidance=...)`` validates them with :meth:`ClassConditioned.check_sampling_options`
and puts them in the context; the flow keeps neither as state.
"""
from __future__ import annotations

from typing import Any, ClassVar, Mapping

import torch
from torch import Tensor

from diffflow_core import validation as check
from diffflow_core.errors import ConfigError
from diffflow_core.interfaces import SamplingContext

__all__ = ["ClassConditioned"]


class ClassConditioned:
    """Mixin (before :class:`~diffflow_core.Flow`): label handling shared by every class-conditional flow."""

    conditional: bool = False
    num_classes: int | None = None
    sampling_options: ClassVar[tuple[str, ...]] = ("label", "guidance")

    def null_labels(self, n: int, device: torch.device | str) -> Tensor:
        """The null label (index ``num_classes``) of classifier-free guidance."""
        return torch.full((n,), self.num_classes, dtype=torch.long, device=device)

    def check_sampling_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """Validate ``label`` (a class index, or one per particle) and the classifier-free ``guidance`` weight;
        return them normalised (``label`` an ``int`` or a long tensor, ``guidance`` a float)."""
        options = super().check_sampling_options(options)  # refuses unknown names
        label, guidance = options.get("label"), options.get("guidance", 1.0)
        if label is not None and not self.conditional:
            raise ConfigError(f"label: this {type(self).__name__} is unconditional "
                              "(build it with conditional=True)")
        guidance = check.finite("guidance", guidance)
        if label is None:
            if guidance != 1.0:
                raise ConfigError("guidance: classifier-free guidance needs a class label")
            return {}
        labels = torch.as_tensor(label)
        if labels.dtype == torch.bool or labels.is_floating_point() or labels.ndim > 1 or \
                bool(((labels < 0) | (labels >= self.num_classes)).any()):
            raise ConfigError(f"label: expected class indices in [0, {self.num_classes}), got {label!r}")
        return {"label": labels.long() if labels.ndim == 1 else int(labels), "guidance": float(guidance)}

    def conditioning(self, x: Tensor, context: SamplingContext | None) -> tuple[Tensor | None, float]:
        """The labels of the solve, one per particle of ``x`` (None: unconditional), and its guidance weight."""
        options = context.options if context is not None else {}
        label = options.get("label")
        if label is None:
            return None, 1.0
        if isinstance(label, Tensor):
            if label.shape != (x.shape[0],):
                raise ConfigError(f"label: expected one label per particle, shape ({x.shape[0]},), "
                                  f"got {tuple(label.shape)}")
            return label.to(x.device), float(options.get("guidance", 1.0))
        return torch.full((x.shape[0],), label, dtype=torch.long, device=x.device), float(options.get("guidance", 1.0))
