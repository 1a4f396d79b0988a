"""The weight schedules ("rows") of the DiffFlow SDE, SPEC §1.2 and the table of §1.4.

A row gives, as functions of the flow's time ``t``: the regularisation drift ``f(x, t)``, the score weights
``beta`` and ``gamma`` (scalars, or ``[N, 1]`` when they depend on ``x`` through the discriminator ``D(x)``),
the noise ``lambda(t)``, the smoothing level ``sigma(t)`` and its convention (VE or VP), the sampling grid and
the prior's standard deviation. The flow's drift is ``f + beta s_{q_sigma} - (gamma - lambda^2/2) s_rho``.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from diffflow_core import validation as check
from diffflow_core.errors import ConfigError
from diffflow_core.interfaces import check_steps
from diffflow_core.specs import from_spec

__all__ = ["Row", "Constant", "Ladder", "VE", "VP", "GAN", "FDiv", "FDIVERGENCES", "make_row"]


class Row:
    """Weights of SPEC eq 1.2 as functions of time; see the module docstring."""

    name = "row"
    kind = "ve"
    #: whether ``weights`` needs ``D(x) = sigmoid(d_t(x))`` (GAN rows) or the logit (f-divergences)
    needs_logit = False
    prior_std = 1.0

    def times(self, steps: int) -> Tensor:
        raise NotImplementedError

    def sigma(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def f(self, x: Tensor, t: Tensor) -> Tensor | None:
        return None

    def weights(self, t: Tensor, logit: Tensor | None) -> tuple[Tensor | float, Tensor | float]:
        raise NotImplementedError

    def lam2(self, t: Tensor) -> Tensor | float:
        """``lambda(t)^2``, the noise variance rate (given squared so SDM rows cancel exactly)."""
        return 0.0

    @property
    def stochastic(self) -> bool:
        return True


class FixedNoise(Row):
    """Rows on a uniform grid over ``t in [0, horizon]`` at one smoothing level ``sigma`` (the target stays
    ``q_sigma``); deterministic unless a subclass adds noise."""

    def __init__(self, sigma: float, horizon: float) -> None:
        self.sigma_value = check.non_negative("sigma", sigma)
        self.horizon = check.positive("horizon", horizon)

    def times(self, steps: int) -> Tensor:
        check_steps(steps)
        return torch.linspace(0.0, self.horizon, steps + 1, dtype=torch.float64)

    def sigma(self, t: Tensor) -> Tensor:
        return torch.full_like(t, self.sigma_value)

    @property
    def stochastic(self) -> bool:
        return False


class Constant(FixedNoise):
    """Constant ``beta, gamma, lambda``, fixed ``sigma`` and linear ``f = -decay x`` on ``t in [0, horizon]``.

    ``(1, 1, 0)`` is the forward-KL flow ``s_q - s_rho`` (SPEC §2.1), ``(1, 1, sqrt 2)`` single-noise Langevin
    (§2.2 eq 4, the first row of §1.4), ``(0, 1, 0)`` the entropy flow ``-s_rho``.
    """

    name = "constant"

    def __init__(self, beta: float = 1.0, gamma: float = 1.0, lam: float = 0.0, sigma: float = 0.0,
                 decay: float = 0.0, horizon: float = 1.0, prior_std: float = 1.0) -> None:
        super().__init__(sigma, horizon)
        self.beta, self.gamma = check.non_negative("beta", beta), check.non_negative("gamma", gamma)
        self.lam_value = check.non_negative("lam", lam)
        self.decay = check.finite("decay", decay)
        self.prior_std = check.positive("prior_std", prior_std)

    def f(self, x: Tensor, t: Tensor) -> Tensor | None:
        return -self.decay * x if self.decay else None

    def weights(self, t: Tensor, logit: Tensor | None) -> tuple[float, float]:
        return self.beta, self.gamma

    def lam2(self, t: Tensor) -> float:
        return self.lam_value ** 2

    @property
    def stochastic(self) -> bool:
        return self.lam_value != 0


class Ladder(Row):
    """Annealed Langevin / NCSN (SPEC §2.2 eq 4, row 2 of §1.4): the time ``t in [0, L]`` indexes a decreasing
    ladder ``sigma_1 > ... > sigma_L``; on level ``i = floor(t)`` the flow is Langevin on ``q_{sigma_i}`` run at
    speed ``c_i = tau sigma_i^2`` (``beta = gamma = c_i``, ``lambda = sqrt(2 c_i)``). An Euler-Maruyama step
    ``dt`` is then Song & Ermon's update ``x + (eps_i/2) s + sqrt(eps_i) z`` with ``eps_i = 2 tau dt sigma_i^2``,
    i.e. ``eps_i`` proportional to ``sigma_i^2``."""

    name = "ladder"

    def __init__(self, sigmas: Sequence[float] | None = None, sigma_max: float = 3.0, sigma_min: float = 0.01,
                 levels: int = 15, tau: float = 10.0) -> None:
        if sigmas is None:
            if not 0 < sigma_min < sigma_max:
                raise ConfigError(f"sigma_min/sigma_max: expected 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
            levels = check.positive_int("levels", levels)
            sigmas = torch.logspace(math.log10(sigma_max), math.log10(sigma_min), levels, dtype=torch.float64)
        sigmas = torch.as_tensor(sigmas, dtype=torch.float64).reshape(-1)
        if sigmas.numel() < 1 or not bool((sigmas > 0).all()) or not bool((sigmas[1:] < sigmas[:-1]).all()):
            raise ConfigError(f"sigmas: expected a strictly decreasing list of positive levels, got {sigmas.tolist()}")
        self.sigmas = sigmas
        self.tau = check.positive("tau", tau)
        self.prior_std = 1.0

    def level(self, t: Tensor) -> Tensor:
        """Ladder index of time ``t`` (a small tolerance keeps grid points on integer boundaries exact)."""
        index = torch.floor(torch.as_tensor(t, dtype=torch.float64) + 1e-6).long()
        return index.clamp(0, self.sigmas.numel() - 1)

    def times(self, steps: int) -> Tensor:
        check_steps(steps)
        return torch.linspace(0.0, float(self.sigmas.numel()), steps + 1, dtype=torch.float64)

    def sigma(self, t: Tensor) -> Tensor:
        t = torch.as_tensor(t)
        return self.sigmas.to(t.device)[self.level(t)].to(t.dtype)

    def _speed(self, t: Tensor) -> Tensor:
        return self.tau * self.sigma(t) ** 2

    def weights(self, t: Tensor, logit: Tensor | None) -> tuple[Tensor, Tensor]:
        c = self._speed(t)
        return c, c

    def lam2(self, t: Tensor) -> Tensor:
        return 2 * self._speed(t)


class VE(Row):
    """The VE reverse SDE (SMLD) as a DiffFlow row: ``f = 0, beta = g^2, gamma = g^2/2, lambda = g`` with
    ``sigma(tau) = sigma_min (sigma_max/sigma_min)^tau``, ``g^2 = d sigma^2 / d tau``, ``tau = 1 - t``
    (SPEC §1.4). The coefficient of ``s_rho`` is ``gamma - lambda^2/2 = 0``: only the target score is needed."""

    name = "ve"
    kind = "ve"

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 20.0, prior_std: float | None = None) -> None:
        if not 0 < sigma_min < sigma_max:
            raise ConfigError(f"sigma_min/sigma_max: expected 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self.prior_std = float(prior_std) if prior_std is not None else self.sigma_max
        self.log_ratio = math.log(self.sigma_max / self.sigma_min)

    def times(self, steps: int) -> Tensor:
        check_steps(steps)
        return torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)

    def sigma(self, t: Tensor) -> Tensor:
        return self.sigma_min * torch.exp(self.log_ratio * (1 - t))

    def g2(self, t: Tensor) -> Tensor:
        return 2 * self.sigma(t) ** 2 * self.log_ratio

    def weights(self, t: Tensor, logit: Tensor | None) -> tuple[Tensor, Tensor]:
        g2 = self.g2(t)
        return g2, g2 / 2

    def lam2(self, t: Tensor) -> Tensor:
        return self.g2(t)


class VP(Row):
    """The VP reverse SDE (DDPM) as a DiffFlow row: ``f = b(tau) x / 2, beta = b, gamma = b/2, lambda = sqrt(b)``
    with linear ``b(tau) = b_min + tau (b_max - b_min)``, ``sigma^2(tau) = 1 - exp(-int_0^tau b)`` and
    ``tau = 1 - t`` for ``t in [0, 1 - eps]`` (SPEC §1.1, §1.4; smoothing in the VP convention)."""

    name = "vp"
    kind = "vp"

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, eps: float = 1e-3) -> None:
        if not 0 <= beta_min < beta_max:
            raise ConfigError(f"beta_min/beta_max: expected 0 <= beta_min < beta_max, got {beta_min}, {beta_max}")
        if not 0 < eps < 1:
            raise ConfigError(f"eps: expected a number in (0, 1), got {eps!r}")
        self.beta_min, self.beta_max, self.eps = float(beta_min), float(beta_max), float(eps)

    def times(self, steps: int) -> Tensor:
        check_steps(steps)
        return torch.linspace(0.0, 1.0 - self.eps, steps + 1, dtype=torch.float64)

    def b(self, t: Tensor) -> Tensor:
        return self.beta_min + (1 - t) * (self.beta_max - self.beta_min)

    def sigma(self, t: Tensor) -> Tensor:
        tau = 1 - t
        integral = self.beta_min * tau + 0.5 * (self.beta_max - self.beta_min) * tau ** 2
        return torch.sqrt(-torch.expm1(-integral))

    def f(self, x: Tensor, t: Tensor) -> Tensor:
        return 0.5 * self.b(t) * x

    def weights(self, t: Tensor, logit: Tensor | None) -> tuple[Tensor, Tensor]:
        b = self.b(t)
        return b, b / 2

    def lam2(self, t: Tensor) -> Tensor:
        return self.b(t)


class GAN(FixedNoise):
    """The GAN rows of SPEC §1.4: ``beta = gamma = rate * D(x)`` (vanilla, the generator minimises
    ``log(1 - D)``) or ``rate * (1 - D(x))`` (non-saturating), ``lambda = 0``, fixed ``sigma``, with
    ``D = sigmoid(d_t)`` the optimal discriminator of ``q_sigma`` against the particles."""

    name = "gan"
    needs_logit = True

    def __init__(self, loss: str = "vanilla", sigma: float = 0.0, rate: float = 1.0, horizon: float = 1.0) -> None:
        if loss not in ("vanilla", "ns"):
            raise ConfigError(f"loss: expected 'vanilla' or 'ns', got {loss!r}")
        super().__init__(sigma, horizon)
        self.loss = loss
        self.rate = check.positive("rate", rate)

    def weights(self, t: Tensor, logit: Tensor | None) -> tuple[Tensor, Tensor]:
        d = torch.sigmoid(logit) if self.loss == "vanilla" else torch.sigmoid(-logit)
        w = self.rate * d[:, None]
        return w, w


#: ``r f''(r)`` for ``r = rho / q`` written with the logit ``d = log q - log rho = -log r`` (SPEC §2.1 table):
#: the f-divergence flow is ``-grad f'(r) = r f''(r) (s_q - s_rho)``.
FDIVERGENCES = {
    "kl": lambda d: torch.ones_like(d),                # f = r log r
    "reverse-kl": lambda d: torch.exp(d),              # f = -log r: velocity grad(q/rho)
    "chi2": lambda d: 2 * torch.exp(-d),               # f = (r - 1)^2
    "js": lambda d: torch.sigmoid(d),                  # f = r log r - (1 + r) log((1 + r)/2): 1/(1 + r)
}


class FDiv(FixedNoise):
    """Wasserstein gradient flow of ``D_f(rho || q)`` (SPEC §2.1): ``beta = gamma = r f''(r)``, ``lambda = 0``,
    with the density ratio ``r = exp(-d)`` from the logit source (a KDE of the particles over the target)."""

    name = "fdiv"
    needs_logit = True

    def __init__(self, divergence: str = "kl", sigma: float = 0.0, horizon: float = 1.0, max_logit: float = 10.0) -> None:
        if divergence not in FDIVERGENCES:
            raise ConfigError(f"divergence: expected one of {sorted(FDIVERGENCES)}, got {divergence!r}")
        super().__init__(sigma, horizon)
        self.divergence = divergence
        self.max_logit = check.positive("max_logit", max_logit)

    def weights(self, t: Tensor, logit: Tensor | None) -> tuple[Tensor, Tensor]:
        w = FDIVERGENCES[self.divergence](logit.clamp(-self.max_logit, self.max_logit))[:, None]
        return w, w


_ROWS = {r.name: r for r in (Constant, Ladder, VE, VP, GAN, FDiv)}


def make_row(spec: str | dict | Row, **params) -> Row:
    """A row from a name (``constant``, ``ladder``, ``ve``, ``vp``, ``gan``, ``fdiv``), a dict or itself."""
    return from_spec("row", _ROWS, spec, Row, **params)
