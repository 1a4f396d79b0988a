"""The ``velocity`` flow: a learned neural ODE ``dx/dt = f_theta(x, t[, c])`` on ``t in [0, 1]`` (SPEC §4.1).

Particles start at ``t = 0`` from the source law pi_1 (noise, a dataset, or a class of one) and reach the data
law pi_2 at ``t = 1``. Two interpolation paths define what ``f`` regresses on (SPEC §4.1-4.2):

* ``linear`` (rectified flow / ScoreFlow): ``x(t) = (1 - t) x_1 + t x_2``, target ``x_2 - x_1``;
* ``ve`` (the score view): ``x(t) = x_2 + (1 - t) x_1`` with ``x_1 = sigma_max eps`` drawn from a Gaussian source
  of std sigma_max, target ``d/dt x(t) = -x_1``; its optimum is the VE probability-flow ODE
  ``f* = sigma'_t (x - D(x; sigma_t)) / sigma_t`` with ``sigma_t = (1 - t) sigma_max``.

With ``conditional=True`` the network also sees a class label; the extra label index ``num_classes`` is the null
label of classifier-free guidance (SPEC §4.4), and :meth:`sampling` selects a label and a guidance weight.
"""
from __future__ import annotations

import itertools
from typing import Any

import torch
from torch import Tensor

from diffflow_core import validation as check
from diffflow_core.compose import NoiseLevel
from diffflow_core.conditioning import ClassConditioned
from diffflow_core.errors import ConfigError
from diffflow_core.interfaces import Flow, SamplingContext, as_time
from diffflow_core.networks import build_network
from diffflow_core.tensors import per_sample
from diffflow_velocity.sources import GaussianSource, make_source

__all__ = ["VelocityFlow", "PATHS"]

PATHS = ("linear", "ve")


class VelocityFlow(ClassConditioned, Flow):
    """``dx/dt = f_theta(x, t[, c])``; ``network`` is any registered network (called ``net(x, t, y)``)."""

    def __init__(self, network: Any = "mlp", source: Any = "gaussian", path: str = "linear",
                 conditional: bool = False, event_shape: tuple[int, ...] | None = None,
                 num_classes: int | None = None, data: Any = None) -> None:
        super().__init__()
        if event_shape is None:
            raise ConfigError("event_shape: the velocity flow needs the particle shape (build it with data)")
        if path not in PATHS:
            raise ConfigError(f"path: expected one of {', '.join(PATHS)}, got {path!r}")
        if conditional:
            check.positive_int("num_classes", num_classes,
                               expected="a positive class count (a conditional velocity flow needs labelled data)")
        self.event_shape = tuple(event_shape)
        self.path = path
        self.conditional = bool(conditional)
        self.num_classes = num_classes if conditional else None
        self.source = make_source(source, self.event_shape, data)
        if path == "ve" and not isinstance(self.source, GaussianSource):
            raise ConfigError("source: the 've' path needs a Gaussian source (its std is sigma_max)")
        self.net = build_network(network, in_shape=self.event_shape, time_conditioned=True,
                                 num_classes=self.num_classes)

    # -- the field -----------------------------------------------------------------------------------
    def field(self, x: Tensor, t: Tensor | float, y: Tensor | None = None) -> Tensor:
        """``f_theta(x, t, y)``; for a conditional flow ``y=None`` means the null label (unconditional)."""
        if self.conditional and y is None:
            y = self.null_labels(x.shape[0], x.device)
        return self.net(x, as_time(t, x), y) if self.conditional else self.net(x, as_time(t, x))

    def guided_field(self, x: Tensor, t: Tensor | float, y: Tensor, guidance: float) -> Tensor:
        """Classifier-free guidance ``f(x,t,null) + w (f(x,t,c) - f(x,t,null))`` (SPEC §4.4), one batched pass.

        ``w = 1`` is the conditional field (evaluated alone), ``w = 0`` the unconditional one.
        """
        if guidance == 1.0:
            return self.field(x, t, y)
        t = as_time(t, x)
        both = self.field(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, self.null_labels(x.shape[0], x.device)]))
        cond, uncond = both.chunk(2)
        return uncond + guidance * (cond - uncond)

    def drift(self, x: Tensor, t: Tensor, context: SamplingContext) -> Tensor:
        """The field at the context's label and guidance (unconditional without a label)."""
        labels, guidance = self.conditioning(x, context)
        if labels is None:
            return self.field(x, t)
        return self.guided_field(x, t, labels, guidance)

    # -- paths and laws --------------------------------------------------------------------------------
    def interpolate(self, x1: Tensor, x2: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """The path point ``x(t)`` and its velocity (the regression target) for pairs ``(x_1, x_2)``, ``t [N]``."""
        tt = per_sample(t, x1)
        if self.path == "linear":
            return (1 - tt) * x1 + tt * x2, x2 - x1
        return x2 + (1 - tt) * x1, -x1

    def noise_level(self) -> NoiseLevel | None:
        """The path as a Gaussian noise path ``x_t = alpha(t) (y + sigma(t) eps)`` (:mod:`diffflow_core.compose`),
        for a Gaussian source of std ``s``: ``linear`` has ``alpha = t``, ``sigma = s (1 - t) / t``; ``ve`` has
        ``alpha = 1``, ``sigma = s (1 - t)``. None for a dataset source (no noise level)."""
        if not isinstance(self.source, GaussianSource):
            return None
        std = self.source.std
        if self.path == "linear":
            return NoiseLevel(lambda t: t, lambda t: std * (1 - t) / t, lambda sigma: std / (std + sigma))
        return NoiseLevel(torch.ones_like, lambda t: std * (1 - t), lambda sigma: 1 - sigma / std)

    def prior(self, n: int, generator: torch.Generator | None = None,
              device: torch.device | str | None = None) -> Tensor:
        """``n`` draws of the source law pi_1 (the particles at ``t = 0``)."""
        param = next(itertools.chain(self.parameters(), self.buffers()))
        return self.source.sample(n, generator, device if device is not None else param.device, param.dtype)

    def prior_log_prob(self, x: Tensor) -> Tensor:
        """Log-density of the source at ``t = 0``, the start of the ODE log-likelihood (SPEC §1.7)."""
        return self.source.log_prob(x)
