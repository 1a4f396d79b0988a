"""DiffFlow rows that mix a learned score with a learned discriminator (SPEC §1.2, §1.4): Diffusion-GAN and TDPM.

Time runs over ``[0, 1]`` with a VE smoothing level ``sigma(t)`` decreasing to 0 and the reverse-SDE
coefficient ``g(t)^2 = |d sigma^2 / dt| = 2 sigma |sigma'|``. In discriminator-logit form (SPEC §1.2) with
``lambda = g`` the drift is ``f + (beta - gamma + g^2/2) s_q + (gamma - g^2/2) grad d``:

* ``diffusion-gan`` (beta = g^2 + w omega(D), gamma = g^2/2 + w omega(D), lambda = g): ``g^2 s_q + w omega(D) grad d``,
  i.e. the reverse SDE of the smoothed data plus the GAN correction ``w grad h`` of the discriminator
  (``omega = D`` for the vanilla loss, ``1 - D`` for the non-saturating one), noise ``g``;
* ``tdpm``: for ``t < t1`` the GAN row at the fixed level ``sigma_trunc`` (drift ``w grad h``, no noise), then
  the reverse SDE ``g^2 s_q`` with noise ``g`` as ``sigma`` falls linearly from ``sigma_trunc`` to 0.

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

__all__ = ["DiffusionGanFlow", "ROWS"]

ROWS = ("diffusion-gan", "tdpm")
_SCORE_MLP = {"name": "mlp", "hidden": 512, "depth": 4, "embedding_dim": 128, "fourier_scale": 2.0}


class DiffusionGanFlow(DiscriminatorFlow):
    """Score + discriminator drift of DiffFlow's ``diffusion-gan`` or ``tdpm`` row (see the module docstring).

    ``eta`` is the GAN weight ``w``; ``sigma_max`` the level at ``t = 0`` (``diffusion-gan``); ``sigma_trunc``
    and ``t1`` the truncation level and the end of the GAN phase (``tdpm``); ``score_network`` the score net.
    """

    def __init__(self, row: str = "diffusion-gan", network: Any = DEFAULT_NETWORK, score_network: Any = _SCORE_MLP,
                 loss: str = "non-saturating", eta: float = 1.0, sigma_max: float = 1.0, sigma_trunc: float = 0.5,
                 t1: float = 0.5, event_shape: tuple[int, ...] = (2,), grid: str | dict[str, Any] = "uniform") -> None:
        if row not in ROWS:
            raise ConfigError(f"row: expected one of {', '.join(ROWS)}, got {row!r}")
        if not 0 < t1 < 1:
            raise ConfigError(f"t1: expected the end of the GAN phase in (0, 1), got {t1!r}")
        if not sigma_trunc > 0:
            raise ConfigError(f"sigma_trunc: expected a positive truncation level, got {sigma_trunc!r}")
        super().__init__(network=network, loss=loss, eta=eta, time_conditioned=True, event_shape=event_shape,
                         grid=grid, sigma_max=sigma_max if row == "diffusion-gan" else sigma_trunc)
        self.row, self.t1, self.sigma_trunc = row, float(t1), float(sigma_trunc)
        self.gan_horizon = self.t1 if row == "tdpm" else 1.0
        from diffflow_core.plugins import registry

        self.score_model = registry("flows").create("score", parameterisation="edm", network=score_network,
                                                    event_shape=self.event_shape)

    def _phase_gan(self, t: Tensor) -> bool:
        return self.row == "diffusion-gan" or float(t) < self.t1

    def sigma(self, t: Tensor) -> Tensor:
        t = torch.as_tensor(t)
        if self.row == "diffusion-gan":
            return self.sigma_max * (1 - t)
        return torch.where(t < self.t1, torch.full_like(t, self.sigma_trunc),
                           self.sigma_trunc * (1 - t) / (1 - self.t1))

    def g2(self, t: Tensor) -> Tensor:
        """``g(t)^2 = 2 sigma |sigma'|`` (0 in TDPM's GAN phase, where sigma is constant)."""
        t = torch.as_tensor(t)
        if self.row == "diffusion-gan":
            return 2 * self.sigma(t) * self.sigma_max
        if float(t) < self.t1:
            return torch.zeros_like(t)
        return 2 * self.sigma(t) * self.sigma_trunc / (1 - self.t1)

    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        out = torch.zeros_like(x)
        if self._phase_gan(t):
            out = out + super().drift(x, t)
        g2 = self.g2(t)
        if float(g2) > 0:
            sigma = self.sigma(t).to(x).expand(x.shape[0])
            out = out + g2.to(x) * self.score_model.score(x, sigma).detach()
        return out

    def diffusion(self, t: Tensor) -> Tensor:
        return self.g2(t).sqrt()
