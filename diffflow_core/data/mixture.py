"""Isotropic Gaussian mixtures: exact density, score and noise-smoothed score (SPEC §1.1, §2.9).

A mixture ``q = sum_k w_k N(m_k, s_k^2 I)`` stays a mixture under both smoothings of SPEC §1.1, which is why
these targets give every flow and test an exact ground truth:

* VE, ``x = y + sigma eps``:                 component ``k`` becomes ``N(m_k, (s_k^2 + sigma^2) I)``;
* VP, ``x = sqrt(1 - sigma^2) y + sigma eps``: it becomes ``N(sqrt(1 - sigma^2) m_k, ((1 - sigma^2) s_k^2 + sigma^2) I)``.

All closed forms are evaluated in the dtype of ``x`` (pass float64 where precision matters); ``sigma`` may be a
scalar or one value per sample (shape ``[N]`` or ``[N, 1]``).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from diffflow_core import validation as check
from diffflow_core.data.base import Dataset
from diffflow_core.errors import ConfigError

__all__ = ["GaussianMixture", "ring5", "eight_gaussians", "circle_mixture"]

_KINDS = ("ve", "vp")


class GaussianMixture(Dataset):
    """``sum_k w_k N(m_k, s_k^2 I)`` with a fixed seeded train/test split and exact analytic methods.

    ``weights`` [K] (normalised here), ``means`` [K, d], ``stds`` a scalar or [K]. The split draws
    ``n_train`` then ``n_test`` points from one generator seeded with ``seed``.
    """

    name = "gaussian-mixture"

    def __init__(self, weights: Sequence[float] | Tensor, means: Sequence[Sequence[float]] | Tensor,
                 stds: float | Sequence[float] | Tensor, n_train: int = 100_000, n_test: int = 10_000,
                 seed: int = 0, name: str | None = None) -> None:
        means = torch.as_tensor(means, dtype=torch.float64)
        if means.ndim == 1:
            means = means[:, None]
        if means.ndim != 2 or means.shape[0] < 1:
            raise ConfigError(f"means: expected an array [K, d] with K >= 1, got shape {tuple(means.shape)}")
        k = means.shape[0]
        weights = torch.as_tensor(weights, dtype=torch.float64).reshape(-1)
        if weights.shape != (k,) or not bool((weights > 0).all()) or not bool(torch.isfinite(weights).all()):
            raise ConfigError(f"weights: expected {k} positive finite values, got {weights.tolist()}")
        stds = torch.as_tensor(stds, dtype=torch.float64).reshape(-1).expand(k).clone()
        if not bool((stds > 0).all()) or not bool(torch.isfinite(stds).all()):
            raise ConfigError(f"stds: expected positive finite values (a scalar or {k} of them), got {stds.tolist()}")
        if not bool(torch.isfinite(means).all()):
            raise ConfigError("means: expected finite values")
        for field, value in (("n_train", n_train), ("n_test", n_test)):
            check.integer(field, value, 2)
        self.weights = weights / weights.sum()
        self.means = means
        self.stds = stds
        generator = torch.Generator().manual_seed(int(seed))
        train = self.sample(n_train, generator)
        test = self.sample(n_test, generator)
        super().__init__(train, test, name=name, split=f"independent draws (seed {seed})")

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    # -- sampling ------------------------------------------------------------------------------------
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` fresh float32 draws: a component by weight, then its Gaussian."""
        component = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        noise = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return (self.means[component] + self.stds[component, None] * noise).float()

    # -- closed forms --------------------------------------------------------------------------------
    def _smoothed_params(self, x: Tensor, sigma: float | Tensor, kind: str) -> tuple[Tensor, Tensor]:
        """Component means ``[1 or N, K, d]`` and variances ``[1 or N, K]`` of ``q_sigma`` (SPEC §1.1)."""
        if kind not in _KINDS:
            raise ConfigError(f"kind: expected one of {_KINDS}, got {kind!r}")
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ConfigError(f"x: expected shape [N, {self.dim}], got {tuple(x.shape)}")
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        if sigma.numel() == 1:
            sigma = sigma.reshape(1, 1)
        elif sigma.numel() == x.shape[0]:
            sigma = sigma.reshape(-1, 1)
        else:
            raise ConfigError(f"sigma: expected a scalar or {x.shape[0]} values, got shape {tuple(sigma.shape)}")
        means = self.means.to(x)[None]
        var = (self.stds.to(x) ** 2)[None]
        if kind == "ve":
            return means, var + sigma ** 2
        if bool((sigma >= 1).any()) or bool((sigma < 0).any()):
            raise ConfigError("sigma: the VP smoothing needs 0 <= sigma < 1")
        scale = torch.sqrt(1 - sigma ** 2)
        return scale[..., None] * means, scale ** 2 * var + sigma ** 2

    def _component_log_probs(self, x: Tensor, sigma: float | Tensor, kind: str) -> tuple[Tensor, Tensor, Tensor]:
        """``log w_k + log N(x; m_k, v_k I)`` [N, K], the differences ``m_k - x`` and the variances."""
        means, var = self._smoothed_params(x, sigma, kind)
        diff = means - x[:, None, :]
        log_norm = -0.5 * (diff ** 2).sum(-1) / var - 0.5 * self.dim * torch.log(2 * math.pi * var)
        return torch.log(self.weights.to(x))[None] + log_norm, diff, var

    def smoothed_log_prob(self, x: Tensor, sigma: float | Tensor, kind: str = "ve") -> Tensor:
        """``log q_sigma(x)`` [N] for the VE or VP smoothing (SPEC §1.1)."""
        logits, _, _ = self._component_log_probs(x, sigma, kind)
        return torch.logsumexp(logits, dim=1)

    def smoothed_score(self, x: Tensor, sigma: float | Tensor, kind: str = "ve") -> Tensor:
        """``grad log q_sigma(x)`` [N, d] = sum_k r_k(x) (m_k - x) / v_k, r the posterior responsibilities."""
        logits, diff, var = self._component_log_probs(x, sigma, kind)
        resp = torch.softmax(logits, dim=1)
        return ((resp / var)[..., None] * diff).sum(1)

    def denoise(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        """Tweedie's VE denoiser ``E[y | x] = x + sigma^2 s_{q_sigma}(x)`` (SPEC §1.1), the ideal D(x, sigma)."""
        sigma_t = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        sigma_t = sigma_t.reshape(-1, 1) if sigma_t.numel() > 1 else sigma_t
        return x + sigma_t ** 2 * self.smoothed_score(x, sigma, "ve")

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact ``log q(x)`` [N]."""
        return self.smoothed_log_prob(x, 0.0)

    def score(self, x: Tensor) -> Tensor:
        """Exact ``grad log q(x)`` [N, d]."""
        return self.smoothed_score(x, 0.0)

    def nearest_component(self, x: Tensor) -> Tensor:
        """Index of the closest mean for each row of ``x`` (used by mode coverage)."""
        return torch.cdist(x.to(torch.float64), self.means.to(x.device)).argmin(dim=1)


def circle_mixture(num: int, radius: float, std: float, phase: float = 0.0, **split: int) -> GaussianMixture:
    """``num`` equal-weight isotropic Gaussians with centres on a circle, at angles ``phase + 2 pi k / num``."""
    check.integer("num", num, 1)
    angles = phase + 2 * math.pi * torch.arange(num, dtype=torch.float64) / num
    means = radius * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    return GaussianMixture(torch.ones(num), means, std, **split)


def ring5(n_train: int = 100_000, n_test: int = 10_000, seed: int = 0, radius: float = 3.0,
          std: float = 0.5) -> GaussianMixture:
    """GPM's reference toy (SPEC §2.9): 5 equal-weight Gaussians, std 0.5, centres radius 3 at 2 pi k / 5."""
    data = circle_mixture(5, radius, std, n_train=n_train, n_test=n_test, seed=seed)
    data.name = "ring5"
    return data


def eight_gaussians(n_train: int = 100_000, n_test: int = 10_000, seed: int = 0, radius: float = 2 * math.sqrt(2),
                    std: float = 0.5 / math.sqrt(2)) -> GaussianMixture:
    """The classic 8-Gaussians toy: 8 equal-weight Gaussians on a circle (radius 2.83, std 0.354)."""
    data = circle_mixture(8, radius, std, n_train=n_train, n_test=n_test, seed=seed)
    data.name = "8gaussians"
    return data
