"""Logit sources: ``d_t(x) = log q_sigma(t)(x) - log p_t(x)``, the logit of the optimal discriminator
``D_t = sigmoid(d_t) = q_sigma / (q_sigma + p_t)`` (SPEC §1.2). The GAN rows weight the drift by ``D`` or
``1 - D`` and the discriminator form of the DiffFlow drift needs ``grad d_t``.

A learned, noise-conditioned discriminator plugs in by subclassing :class:`LogitSource` and implementing
:meth:`LogitSource.logit`; the gradient then comes from autograd.
"""
from __future__ import annotations

from torch import Tensor
import torch

from diffflow_kl.scores import ScoreSource

__all__ = ["LogitSource", "DensityRatio"]


class LogitSource:
    """``d_t(x)`` ``[N]`` at time ``t`` and smoothing level ``sigma`` (convention ``kind``), and its gradient."""

    def logit(self, x: Tensor, t: Tensor, sigma: Tensor, kind: str = "ve") -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement logit(x, t, sigma, kind)")

    def grad(self, x: Tensor, t: Tensor, sigma: Tensor, kind: str = "ve") -> Tensor:
        """``grad_x d_t(x)`` by autograd (each row's logit depends on its own row only)."""
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self.logit(xg, t, sigma, kind).sum(), xg)
        return g


class DensityRatio(LogitSource):
    """The optimal logit of two laws with known log-densities: ``log q_sigma - log rho`` and, exactly,
    ``grad d = s_{q_sigma} - s_rho`` (e.g. two Gaussian mixtures, or the target against a particle KDE)."""

    def __init__(self, target: ScoreSource, particles: ScoreSource) -> None:
        self.target, self.particles = target, particles

    def logit(self, x: Tensor, t: Tensor, sigma: Tensor, kind: str = "ve") -> Tensor:
        return self.target.log_prob(x, sigma, kind) - self.particles.log_prob(x, sigma, kind)

    def grad(self, x: Tensor, t: Tensor, sigma: Tensor, kind: str = "ve") -> Tensor:
        return self.target.score(x, sigma, kind) - self.particles.score(x, sigma, kind)
