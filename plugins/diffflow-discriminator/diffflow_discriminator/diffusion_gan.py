"""DiffFlow rows that mix a learned score with a learned discriminator (SPEC §1.2, §1.4): Diffusion-GAN and TDPM.

Time runs over ``[0, 1]`` with a VE smoothing level ``sigma(t)`` decreasing to 0 and the reverse-SDE
coefficient ``g(t)^2 = |d sigma^2 / dt| = 2 sigma |sigma'|``. In discriminator-logit form (SPEC §1.2) with
``lambda = g`` the drift is ``f + (beta - gamma + g^2/2) s_q + (gamma - g^2/2) grad d``:

* ``diffusion-gan`` (beta = g^2 + w omega(D), gamma = g^2/2 + w omega(D), lambda = g): ``g^2 s_q + w omega(D) grad d``,
  i.e. the reverse SDE of the smoothed data plus the GAN correction ``w grad h`` of the discriminator
  (``omega = D`` for the vanilla loss, ``1 - D`` for the non-saturating one), noise ``g``;
* ``tdpm``: for ``t < t1`` the GAN row at the fixed level ``sigma_trunc`` (drift ``w grad h``, no noise), then
  the reverse SDE ``g^2 s_q`` with noise ``g`` as ``sigma`` falls linearly from ``sigma_trunc`` to 0.

``churn`` slides either row between its deterministic (GAN) and stochastic (SDM) forms at fixed marginals
(SPEC §1.3): with ``lambda^2 = kappa g^2`` the drift is
``((1 + kappa) g^2 / 2) s_q + ((1 - kappa) g^2 / 2) grad d + w omega(D) grad d`` and the noise ``sqrt(kappa) g``,
so ``beta`` and ``gamma`` (hence every marginal ``p_t``) do not depend on ``kappa``: ``kappa = 1`` is the rows
above, ``kappa = 0`` the noiseless flow in which the discriminator carries half the SDM drift (its probability
flow ODE in discriminator form), and the named schedule ``"slide"`` (``kappa(t) = t``) goes from the GAN end at
``t = 0`` to the SDM end at ``t = 1``, like TDPM but without changing the marginals. ``kappa < 1`` reads the
logit ``f`` as ``d = log q_sigma - log p_t``, the optimum of the vanilla and non-saturating losses.

``s_q = s_{q_sigma}`` comes from an EDM ``score`` flow (``diffflow-score``) trained jointly with the
discriminator by the ``gan`` objective (player ``score``, ``dsm-edm`` on the data). The drift takes a scalar
``t`` (solvers and the training simulation integrate one time per step).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from diffflow_core.errors import ConfigError
from diffflow_discriminator.flow import DEFAULT_NETWORK, DiscriminatorFlow
from diffflow_score.presets import GPM_SCORE_MLP

__all__ = ["DiffusionGanFlow", "ROWS"]

ROWS = ("diffusion-gan", "tdpm")
CHURN_SCHEDULES = ("slide",)


def _logit(f: Tensor) -> Tensor:
    """The potential ``f`` of the ``(1 - kappa) g^2 / 2`` term on its own."""
    return f


class DiffusionGanFlow(DiscriminatorFlow):
    """Score + discriminator drift of DiffFlow's ``diffusion-gan`` or ``tdpm`` row (see the module docstring).

    ``eta`` is the GAN weight ``w``; ``sigma_max`` the level at ``t = 0`` (``diffusion-gan``); ``sigma_trunc``
    and ``t1`` the truncation level and the end of the GAN phase (``tdpm``); ``score_network`` the score net; ``churn``
    the share ``kappa`` in ``[0, 1]`` of the SDM noise (a number, or ``"slide"`` for ``kappa(t) = t``).
    """

    def __init__(self, row: str = "diffusion-gan", network: Any = DEFAULT_NETWORK, score_network: Any = GPM_SCORE_MLP,
                 loss: str = "non-saturating", eta: float = 1.0, sigma_max: float = 1.0, sigma_trunc: float = 0.5,
                 t1: float = 0.5, event_shape: tuple[int, ...] = (2,), grid: str | dict[str, Any] = "uniform",
                 churn: float | str = 1.0) -> None:
        if row not in ROWS:
            raise ConfigError(f"row: expected one of {', '.join(ROWS)}, got {row!r}")
        if churn not in CHURN_SCHEDULES and (isinstance(churn, (bool, str)) or not 0 <= churn <= 1):
            raise ConfigError(f"churn: expected a number in [0, 1] or one of {', '.join(CHURN_SCHEDULES)}, "
                              f"got {churn!r}")
        if not 0 < t1 < 1:
            raise ConfigError(f"t1: expected the end of the GAN phase in (0, 1), got {t1!r}")
        if not sigma_trunc > 0:
            raise ConfigError(f"sigma_trunc: expected a positive truncation level, got {sigma_trunc!r}")
        super().__init__(network=network, loss=loss, eta=eta, time_conditioned=True, event_shape=event_shape,
                         grid=grid, sigma_max=sigma_max if row == "diffusion-gan" else sigma_trunc)
        self.row, self.t1, self.sigma_trunc = row, float(t1), float(sigma_trunc)
        self.churn = churn if isinstance(churn, str) else float(churn)
        self.gan_horizon = self.t1 if row == "tdpm" else 1.0
        from diffflow_core.plugins import registry

        self.score_model = registry("flows").create("score", parameterisation="edm", network=score_network,
                                                    event_shape=self.event_shape)

    def _phase_gan(self, t: Tensor | float) -> bool:
        return self.row == "diffusion-gan" or float(t) < self.t1

    def sigma(self, t: Tensor | float) -> Tensor | float:
        """``sigma(t)``: a tensor at tensor times (the data smoothing), a float at a float time (the drift's
        per-step coefficient, with no tensor op)."""
        if self.row == "diffusion-gan":
            return self.sigma_max * (1 - t)
        ramp = self.sigma_trunc * (1 - t) / (1 - self.t1)
        if isinstance(t, Tensor):
            return torch.where(t < self.t1, torch.full_like(t, self.sigma_trunc), ramp)
        return self.sigma_trunc if t < self.t1 else ramp

    def g2(self, t: Tensor | float) -> float:
        """``g(t)^2 = 2 sigma |sigma'|`` at one time (0 in TDPM's GAN phase, where sigma is constant)."""
        t = float(t)
        if self.row == "diffusion-gan":
            slope = self.sigma_max
        else:
            slope = 0.0 if t < self.t1 else self.sigma_trunc / (1 - self.t1)
        return 2 * self.sigma(t) * slope

    def kappa(self, t: Tensor | float) -> float:
        """The noise share ``kappa(t)``: ``lambda(t)^2 = kappa(t) g(t)^2``."""
        return float(t) if self.churn == "slide" else self.churn

    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        """``((1 + kappa) g^2 / 2) s_q + [w h(f) + ((1 - kappa) g^2 / 2) f]`` differentiated in ``x``
        (SPEC §1.2 discriminator form; one input gradient for both discriminator terms).

        Called once per simulation step, so the scalar coefficients are Python floats and a discriminator term
        of weight 0 stays out of the autograd graph (at ``kappa = 1``, the published rows, the weight ``w``
        scales the gradient instead of the potential)."""
        g2, kappa = self.g2(t), self.kappa(t)
        w_gan = self.eta if self._phase_gan(t) else 0.0
        w_logit = g2 * (1 - kappa) / 2
        if w_gan and w_logit:
            out = self.potential_gradient(x, t, lambda f: w_gan * self.loss.potential(f) + w_logit * f)
        elif w_gan or w_logit:  # one term: its weight scales the gradient
            out = self.potential_gradient(x, t, self.loss.potential if w_gan else _logit).mul_(w_gan or w_logit)
        else:
            out = torch.zeros_like(x)
        if g2 > 0:
            score = self.score_model.score(x, x.new_full(x.shape[:1], self.sigma(float(t))))
            out = out.add_(score.detach(), alpha=g2 * (1 + kappa) / 2)
        return out

    def diffusion(self, t: Tensor | float) -> float:
        """``lambda(t) = sqrt(kappa(t)) g(t)`` as a float: solvers draw no noise where it is 0."""
        return (self.kappa(t) * self.g2(t)) ** 0.5
