"""Score sources: where a flow gets ``s_q`` (the target, possibly noise-smoothed) and ``s_rho`` (the particles).

Every source answers ``score(x, sigma, kind)`` and, where it can, ``log_prob(x, sigma, kind)``: the law smoothed
by Gaussian noise of level ``sigma`` in the VE (``y + sigma eps``) or VP (``sqrt(1 - sigma^2) y + sigma eps``)
convention of SPEC §1.1. Particle sources see the current batch ``x`` itself (a KDE of it, a Gaussian fit) and
ignore ``sigma``. Sources are chosen by name (``make_target`` / ``make_particles``) or passed as objects, so a
score network can replace any of them later.
"""
from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor

from diffflow_core.data import Dataset, load_dataset
from diffflow_core.errors import ConfigError, missing_data
from diffflow_kl.kde import bandwidth, kde_log_density, kde_score

__all__ = ["ScoreSource", "AnalyticSource", "SampleKDE", "ParticleKDE", "GaussianFit", "MatchedTarget",
           "make_target", "make_particles", "has_analytic_score"]

_KINDS = ("ve", "vp")


def _check_kind(kind: str) -> None:
    if kind not in _KINDS:
        raise ConfigError(f"kind: expected one of {_KINDS}, got {kind!r}")


class ScoreSource:
    """The score (and optionally log-density) of a law, smoothed at noise level ``sigma``."""

    #: True when the score is estimated from the particle batch itself (a KDE or moments of the batch).
    interacting: ClassVar[bool] = False

    def score(self, x: Tensor, sigma: float | Tensor = 0.0, kind: str = "ve") -> Tensor:
        raise NotImplementedError

    def log_prob(self, x: Tensor, sigma: float | Tensor = 0.0, kind: str = "ve") -> Tensor:
        raise ConfigError(f"score source {type(self).__name__} has no log-density")

    def bandwidth(self, x: Tensor) -> float:
        """The kernel width this source smooths with (0 for exact sources)."""
        return 0.0


def has_analytic_score(data: Any) -> bool:
    """Whether ``data`` (a Dataset or law) overrides ``smoothed_score`` with a closed form."""
    method = getattr(type(data), "smoothed_score", None)
    return method is not None and method is not Dataset.smoothed_score


class AnalyticSource(ScoreSource):
    """A law with closed-form ``smoothed_score`` / ``smoothed_log_prob`` (e.g. a ``GaussianMixture``)."""

    def __init__(self, law: Any) -> None:
        if not has_analytic_score(law):
            raise ConfigError(f"target: {law!r} has no closed-form smoothed score; use target='kde'")
        self.law = law

    def score(self, x: Tensor, sigma: float | Tensor = 0.0, kind: str = "ve") -> Tensor:
        _check_kind(kind)
        return self.law.smoothed_score(x, sigma, kind) if kind != "ve" else self.law.smoothed_score(x, sigma)

    def log_prob(self, x: Tensor, sigma: float | Tensor = 0.0, kind: str = "ve") -> Tensor:
        _check_kind(kind)
        if not hasattr(self.law, "smoothed_log_prob"):
            raise ConfigError(f"target: {self.law!r} has no closed-form smoothed log-density")
        return self.law.smoothed_log_prob(x, sigma, kind)


class SampleKDE(ScoreSource):
    """A Gaussian KDE of a fixed sample of the target (``points`` rows drawn once with ``seed``).

    Smoothing composes in closed form: VE noise of level ``sigma`` turns bandwidth ``h`` into
    ``sqrt(h^2 + sigma^2)``; VP noise scales the centres by ``sqrt(1 - sigma^2)`` and the variance to
    ``(1 - sigma^2) h^2 + sigma^2``.
    """

    def __init__(self, sample: Tensor, bandwidth_rule: str | float = "scott", points: int = 2000, seed: int = 0,
                 chunk: int | None = None) -> None:
        sample = torch.as_tensor(sample)
        if sample.shape[0] > points:
            idx = torch.randperm(sample.shape[0], generator=torch.Generator().manual_seed(int(seed)))[:points]
            sample = sample[idx]
        self.centres = sample
        self.h = bandwidth(bandwidth_rule, sample)
        self.chunk = chunk

    def _law(self, x: Tensor, sigma: float | Tensor, kind: str) -> tuple[Tensor, Tensor]:
        _check_kind(kind)
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        centres = self.centres.to(x)
        if kind == "ve":
            return centres, torch.sqrt(self.h ** 2 + sigma ** 2)
        scale = torch.sqrt(1 - sigma ** 2)
        return scale * centres, torch.sqrt(scale ** 2 * self.h ** 2 + sigma ** 2)

    def score(self, x: Tensor, sigma: float | Tensor = 0.0, kind: str = "ve") -> Tensor:
        centres, h = self._law(x, sigma, kind)
        return kde_score(x, centres, h, self.chunk)

    def log_prob(self, x: Tensor, sigma: float | Tensor = 0.0, kind: str = "ve") -> Tensor:
        centres, h = self._law(x, sigma, kind)
        return kde_log_density(x, centres, h, self.chunk)

    def bandwidth(self, x: Tensor) -> float:
        return self.h


class ParticleKDE(ScoreSource):
    """``s_rho`` from a Gaussian KDE of the current particle batch (bandwidth by rule or fixed)."""

    interacting = True

    def __init__(self, bandwidth_rule: str | float = "scott", chunk: int | None = None) -> None:
        bandwidth(bandwidth_rule, torch.zeros(2, 1))  # validate the rule before any work
        self.rule = bandwidth_rule
        self.chunk = chunk

    def bandwidth(self, x: Tensor) -> float:
        return bandwidth(self.rule, x)

    def score(self, x: Tensor, sigma: float | Tensor = 0.0, kind: str = "ve") -> Tensor:
        return kde_score(x, x, self.bandwidth(x), self.chunk)

    def log_prob(self, x: Tensor, sigma: float | Tensor = 0.0, kind: str = "ve") -> Tensor:
        return kde_log_density(x, x, self.bandwidth(x), self.chunk)


class GaussianFit(ScoreSource):
    """``s_rho`` of the Gaussian with the batch's mean and per-coordinate variance: exact while rho is Gaussian."""

    interacting = True

    def _moments(self, x: Tensor) -> tuple[Tensor, Tensor]:
        flat = x.flatten(1)
        return flat.mean(0), flat.var(0).clamp_min(1e-12)

    def score(self, x: Tensor, sigma: float | Tensor = 0.0, kind: str = "ve") -> Tensor:
        mean, var = self._moments(x)
        return (-(x.flatten(1) - mean) / var).reshape(x.shape)

    def log_prob(self, x: Tensor, sigma: float | Tensor = 0.0, kind: str = "ve") -> Tensor:
        mean, var = self._moments(x)
        z = (x.flatten(1) - mean) ** 2 / var
        return -0.5 * (z + torch.log(2 * math.pi * var)).sum(1)


class MatchedTarget(ScoreSource):
    """Assume the particles are exactly at the smoothed target, ``rho_t = q_sigma(t)`` (the SDM rows' marginals,
    SPEC §1.8.2): the particle score is the target's. This turns the PF-ODE row ``beta = g^2, gamma = g^2/2``
    into the usual ``f + g^2/2 s_q``."""

    def __init__(self, target: ScoreSource) -> None:
        self.target = target

    def score(self, x: Tensor, sigma: float | Tensor = 0.0, kind: str = "ve") -> Tensor:
        return self.target.score(x, sigma, kind)

    def log_prob(self, x: Tensor, sigma: float | Tensor = 0.0, kind: str = "ve") -> Tensor:
        return self.target.log_prob(x, sigma, kind)


def make_target(spec: Any, data: Dataset | None, bandwidth_rule: str | float = "scott", points: int = 2000,
                chunk: int | None = None) -> ScoreSource | None:
    """The target source: ``"auto"`` (the data's closed form if it has one, else a KDE of ``points`` data
    samples), ``"analytic"``, ``"kde"``, ``None`` (no target term), a law with a closed form, or a source."""
    if spec is None or isinstance(spec, ScoreSource):
        return spec
    if isinstance(spec, str) and spec in ("auto", "analytic", "kde"):
        if data is None:
            raise missing_data(f"target {spec!r} is estimated from data")
        data = load_dataset(data)
        if spec == "analytic" or (spec == "auto" and has_analytic_score(data)):
            return AnalyticSource(data)
        return SampleKDE(data.train, bandwidth_rule, points=points, chunk=chunk)
    if has_analytic_score(spec):
        return AnalyticSource(spec)
    raise ConfigError(f"target: expected 'auto', 'analytic', 'kde', None, a law with a closed-form score or a "
                      f"ScoreSource, got {spec!r}")


def make_particles(spec: Any, target: ScoreSource | None, bandwidth_rule: str | float = "scott",
                   chunk: int | None = None) -> ScoreSource | None:
    """The particle source: ``"kde"``, ``"gaussian"``, ``"target"`` (exact marginals), ``None``, a law or a source."""
    if spec is None or isinstance(spec, ScoreSource):
        return spec
    if spec == "kde":
        return ParticleKDE(bandwidth_rule, chunk)
    if spec == "gaussian":
        return GaussianFit()
    if spec == "target":
        if target is None:
            raise ConfigError("particles: 'target' (rho_t = q_sigma(t)) needs a target score source")
        return MatchedTarget(target)
    if has_analytic_score(spec):
        return AnalyticSource(spec)
    raise ConfigError(f"particles: expected 'kde', 'gaussian', 'target', None, a law with a closed-form score or "
                      f"a ScoreSource, got {spec!r}")
