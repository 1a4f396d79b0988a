"""Denoising score matching objectives of the score flow (SPEC §2.6; Song et al.'s VP/VE losses).

All three regress the network on noisy data ``x_t = alpha(t) y + std(t) eps`` and differ in how the noise
level is drawn and weighted:

* ``dsm-edm``: ``sigma ~ LogNormal(P_mean, P_std)`` (-1.2, 1.2), loss ``lambda(sigma) ||D(y + sigma eps; sigma) - y||^2``
  with ``lambda = (sigma^2 + sd^2)/(sigma sd)^2`` (SPEC §2.6), which makes the effective target of F unit-scale.
* ``dsm-vp``: ``t ~ U[eps, 1]``, loss ``||eps_hat(x_t, t) - eps||^2`` (DDPM's "simple" loss).
* ``dsm-ve``: ``t ~ U[0, 1]`` (sigma log-uniform), loss ``sigma^2 ||s(x_t, t) + eps/sigma||^2 = ||eps_hat - eps||^2``.

Squared norms are averaged over coordinates (divided by the dimension D). Every draw uses the given generator.
With a conditional flow, labels are replaced by the null label with probability ``label_dropout``, which fits
the unconditional score used by classifier-free guidance.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from diffflow_core import validation as check
from diffflow_core.errors import ConfigError
from diffflow_core.interfaces import Batch, Objective
from diffflow_core.tensors import draw_noise, per_sample
from diffflow_score.flow import ScoreFlow

__all__ = ["EDMLoss", "VPLoss", "VELoss"]


class _DSM(Objective):
    """Shared checks, label dropout and noising; subclasses set :attr:`parameterisation` and the loss."""

    parameterisation = ""

    def __init__(self, label_dropout: float = 0.0, flow: Any = None) -> None:
        self.label_dropout = check.in_range("label_dropout", label_dropout, 0, 1, expected="a probability in [0, 1)")
        if flow is not None:
            self._check(flow)

    def _check(self, flow: Any) -> ScoreFlow:
        if not isinstance(flow, ScoreFlow) or flow.parameterisation != self.parameterisation:
            got = getattr(flow, "parameterisation", type(flow).__name__)
            raise ConfigError(f"flow: objective for a 'score' flow with parameterisation "
                              f"'{self.parameterisation}', got {got!r}")
        return flow

    def labels(self, flow: ScoreFlow, batch: Batch, generator: torch.Generator | None) -> Tensor | None:
        """The batch labels with dropout to the null label (conditional flows only)."""
        if not flow.conditional:
            return None
        if batch.y is None:
            raise ConfigError("data: a conditional score flow trains on labelled data, the batch has no labels")
        if not self.label_dropout:
            return batch.y
        drop = draw_noise((len(batch),), generator, batch.x, "uniform") < self.label_dropout
        return torch.where(drop, flow.null_labels(len(batch), batch.y.device), batch.y)


class EDMLoss(_DSM):
    """``dsm-edm``: EDM's weighted denoising loss (SPEC §2.6)."""

    parameterisation = "edm"

    def __init__(self, p_mean: float = -1.2, p_std: float = 1.2, label_dropout: float = 0.0, flow: Any = None) -> None:
        p_std, p_mean = check.positive("p_std", p_std), check.finite("p_mean", p_mean)
        super().__init__(label_dropout, flow)
        self.p_mean, self.p_std = p_mean, p_std

    def loss(self, flow: ScoreFlow, batch: Batch, generator: torch.Generator | None = None) -> Tensor:
        flow = self._check(flow)
        y = batch.x
        sigma = torch.exp(self.p_mean + self.p_std * draw_noise((len(batch),), generator, y))
        noise = draw_noise(y.shape, generator, y)
        labels = self.labels(flow, batch, generator)
        s = per_sample(sigma, y)
        denoised = flow.denoise(y + s * noise, sigma, labels)
        return (flow.loss_weight(sigma) * (denoised - y).flatten(1).pow(2).mean(1)).mean()


class _EpsilonLoss(_DSM):
    """``||eps_hat(x_t, t) - eps||^2`` with ``t`` from the flow's schedule (the std^2-weighted DSM)."""

    def loss(self, flow: ScoreFlow, batch: Batch, generator: torch.Generator | None = None) -> Tensor:
        flow = self._check(flow)
        y = batch.x
        t = flow.schedule.train_times(len(batch), generator, y)
        noise = draw_noise(y.shape, generator, y)
        labels = self.labels(flow, batch, generator)
        alpha, std = per_sample(flow.schedule.alpha(t), y), per_sample(flow.schedule.std(t), y)
        return (flow.epsilon(alpha * y + std * noise, t, labels) - noise).flatten(1).pow(2).mean(1).mean()


class VPLoss(_EpsilonLoss):
    """``dsm-vp``: epsilon MSE with ``t ~ U[eps, 1]`` on the VP schedule."""

    parameterisation = "vp"


class VELoss(_EpsilonLoss):
    """``dsm-ve``: sigma^2-weighted DSM, ``t ~ U[0, 1]`` so sigma is log-uniform on the VE schedule."""

    parameterisation = "ve"
