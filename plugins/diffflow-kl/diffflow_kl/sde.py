"""The DiffFlow SDE (SPEC §1.2-1.4) and the particle flows that are its rows (SPEC §2.1-2.2).

``dx = [f + beta s_{q_sigma(t)} - (gamma - lambda^2/2) s_{rho_t}] dt + lambda dW``       (SPEC eq 1.2)

or, in discriminator form, ``f + (beta - gamma + lambda^2/2) s_{q_sigma} + (gamma - lambda^2/2) grad d_t``.
For ``lambda`` independent of ``x`` the marginals depend on ``f``, ``beta`` and ``gamma`` only (§1.3), which
the tests check. The weights come from a :mod:`row <diffflow_kl.rows>`, the scores from
:mod:`score sources <diffflow_kl.scores>`, the discriminator logit from a :mod:`logit source <diffflow_kl.logits>`.
The forward-KL flow, Langevin, annealed Langevin, the entropy flow and the f-divergence flows are factories
below that fix the row.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from diffflow_core import validation as check
from diffflow_core.errors import ConfigError
from diffflow_core.interfaces import Flow
from diffflow_core.tensors import per_sample
from diffflow_kl.logits import DensityRatio, LogitSource
from diffflow_kl.rows import Constant, FDiv, Ladder, Row, make_row
from diffflow_kl.scores import ScoreSource, make_particles, make_target

__all__ = ["DiffFlow", "kl", "langevin", "annealed_langevin", "entropy", "fdiv"]

_FORMS = ("score", "discriminator")


def _is_zero(w: Tensor | float) -> bool:
    if isinstance(w, Tensor):
        return bool((w.abs() <= 1e-12).all())
    return abs(w) <= 1e-12


def _per_row(w: Tensor | float, x: Tensor) -> Tensor | float:
    """Broadcast a weight (scalar or one per particle) against ``x`` ``[N, *shape]``."""
    if isinstance(w, Tensor) and w.ndim >= 1 and w.numel() > 1:
        return per_sample(w, x)
    return w


class DiffFlow(Flow):
    """The DiffFlow SDE over pluggable score/logit sources (SPEC eq 1.2).

    Parameters: ``row`` (name, dict or :class:`~diffflow_kl.rows.Row`: ``constant``, ``ladder``, ``ve``, ``vp``,
    ``gan``, ``fdiv``); ``target`` (``auto``/``analytic``/``kde``/a source: ``s_q``); ``particles``
    (``kde``/``gaussian``/``target``/a source: ``s_rho``); ``logit`` (``density`` = the optimal logit of the
    target and particle sources, or a :class:`~diffflow_kl.logits.LogitSource`, e.g. a learned discriminator);
    ``form`` (``score`` or ``discriminator``); ``bandwidth`` (the KDE rule or a fixed width); ``smooth_target``
    (smooth ``q`` by the particle KDE's kernel too, ``sigma_eff^2 = sigma^2 + h^2``: the KDE flow then compares
    like with like instead of over-concentrating); ``noise_scale`` (multiplies ``lambda``; the marginals do
    not change, §1.3); ``target_points`` (data samples of a KDE target); ``chunk`` (rows per interaction block).
    """

    def __init__(self, row: str | dict | Row = "constant", data: Any = None, target: Any = "auto",
                 particles: Any = "kde", logit: str | LogitSource = "density", form: str = "score",
                 bandwidth: str | float = "scott", smooth_target: bool = False, noise_scale: float = 1.0,
                 target_points: int = 2000, chunk: int | None = None, event_shape: tuple[int, ...] = (2,)) -> None:
        super().__init__()
        if form not in _FORMS:
            raise ConfigError(f"form: expected one of {_FORMS}, got {form!r}")
        noise_scale = check.non_negative("noise_scale", noise_scale)
        self.row = make_row(row)
        self.form = form
        self.noise_scale = float(noise_scale)
        self.smooth_target = bool(smooth_target)
        self.event_shape = tuple(event_shape)
        self.target: ScoreSource | None = make_target(target, data, bandwidth, target_points, chunk)
        self.particles: ScoreSource | None = make_particles(particles, self.target, bandwidth, chunk)
        if self.smooth_target and self.particles is None:
            raise ConfigError("smooth_target: smoothing the target by the KDE kernel needs a particle source")
        needs_logit = self.row.needs_logit or form == "discriminator"
        if logit == "density":
            self.logit = (DensityRatio(self._need(self.target, "target"), self._need(self.particles, "particles"))
                          if needs_logit else None)
        elif isinstance(logit, LogitSource):
            self.logit = logit
        else:
            raise ConfigError(f"logit: expected 'density' or a LogitSource, got {logit!r}")

    def _need(self, source: ScoreSource | None, field: str) -> ScoreSource:
        if source is None:
            raise ConfigError(f"{field}: row '{self.row.name}' with form '{self.form}' needs a {field} score source")
        return source

    # -- pieces of the drift -------------------------------------------------------------------------
    def _time(self, t: Tensor, x: Tensor) -> Tensor:
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        if t.ndim > 0:
            if not bool((t == t.reshape(-1)[0]).all()):
                raise ConfigError("t: the DiffFlow drift needs one time for the whole particle batch")
            t = t.reshape(-1)[0]
        return t

    def smoothing(self, x: Tensor, t: Tensor) -> Tensor:
        """The target's noise level: ``sigma(t)``, widened by the particle KDE bandwidth with ``smooth_target``."""
        sigma = self.row.sigma(t)
        if self.smooth_target:
            sigma = torch.sqrt(sigma ** 2 + self.particles.bandwidth(x) ** 2)
        return sigma

    def target_score(self, x: Tensor, t: Tensor) -> Tensor:
        """``s_{q_sigma}(x)`` at the flow's smoothing level for time ``t``."""
        t = self._time(t, x)
        return self._need(self.target, "target").score(x, self.smoothing(x, t), self.row.kind)

    def _lam2(self, t: Tensor) -> Tensor | float:
        return self.noise_scale ** 2 * self.row.lam2(t)

    def _terms(self, x: Tensor, t: Tensor, lam2: Tensor | float) -> tuple[Tensor | None, Tensor | float, Tensor | float]:
        """``(f, beta, c)`` with ``c = gamma - lambda^2/2`` the coefficient of ``-s_rho``, plus the logit if used."""
        logit = None
        if self.row.needs_logit:
            logit = self.logit.logit(x, t, self.smoothing(x, t), self.row.kind)
        beta, gamma = self.row.weights(t, logit)
        return self.row.f(x, t), _per_row(beta, x), _per_row(gamma - lam2 / 2, x)

    def _drift(self, x: Tensor, t: Tensor, lam2: Tensor | float) -> Tensor:
        t = self._time(t, x)
        f, beta, c = self._terms(x, t, lam2)
        out = f if f is not None else torch.zeros_like(x)
        sigma = self.smoothing(x, t)
        kind = self.row.kind
        if self.form == "score":
            if not _is_zero(beta):
                out = out + beta * self._need(self.target, "target").score(x, sigma, kind)
            if not _is_zero(c):
                out = out - c * self._need(self.particles, "particles").score(x, sigma, kind)
            return out
        if not _is_zero(beta - c):
            out = out + (beta - c) * self._need(self.target, "target").score(x, sigma, kind)
        if not _is_zero(c):
            out = out + c * self.logit.grad(x, t, sigma, kind)
        return out

    # -- the Flow contract ---------------------------------------------------------------------------
    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        return self._drift(x, t, self._lam2(self._time(t, x)))

    def ode_drift(self, x: Tensor, t: Tensor) -> Tensor:
        """The lambda = 0 member of the family: the DiffFlow ODE with the same marginals (SPEC §1.3)."""
        return self._drift(x, t, 0.0)

    def diffusion(self, t: Tensor) -> Tensor | float:
        lam2 = self._lam2(torch.as_tensor(t, dtype=torch.float64) if not isinstance(t, Tensor) else t)
        return torch.sqrt(lam2) if isinstance(lam2, Tensor) else math.sqrt(lam2)

    @property
    def is_stochastic(self) -> bool:
        return self.row.stochastic and self.noise_scale != 0

    @property
    def interacting(self) -> bool:
        """A KDE or moment fit of the particle batch couples the particles (the logit is built from the same)."""
        return any(source is not None and source.interacting for source in (self.target, self.particles))

    @property
    def likelihood(self) -> str | None:
        """The lambda = 0 ODE of :meth:`ode_drift` needs the particle score ``s_rho``: none without a source."""
        return super().likelihood if self.particles is not None else None

    def stein_parts(self, x: Tensor, t: Tensor) -> tuple[Tensor, float] | None:
        """``(a, c)`` with drift ``= a - c s_rho`` and a constant ``c``, for the Stein smoother's
        integration-by-parts form (SPEC eq 18, no ``s_rho`` needed); ``None`` when ``c`` depends on ``x``."""
        t = self._time(t, x)
        if self.row.needs_logit or self.form != "score":
            return None
        f, beta, c = self._terms(x, t, self._lam2(t))
        if isinstance(c, Tensor) and c.numel() > 1:
            return None
        a = f if f is not None else torch.zeros_like(x)
        if not _is_zero(beta):
            a = a + beta * self.target_score(x, t)
        return a, float(c)

    def time_grid(self, steps: int) -> Tensor:
        return self.row.times(steps)

    def prior(self, n: int, generator: torch.Generator | None = None, device: torch.device | str | None = None) -> Tensor:
        return self.row.prior_std * super().prior(n, generator, device)

    def prior_log_prob(self, x: Tensor) -> Tensor:
        s = self.row.prior_std
        return super().prior_log_prob(x / s) - x[0].numel() * math.log(s)


def kl(data: Any = None, target: Any = "auto", particles: Any = "kde", bandwidth: str | float = "scott",
       smooth_target: bool = True, sigma: float = 0.0, horizon: float = 3.0, target_points: int = 2000,
       chunk: int | None = None, event_shape: tuple[int, ...] = (2,)) -> DiffFlow:
    """Forward-KL Wasserstein gradient flow ``v = s_q - s_rho`` (SPEC §2.1 first row; eq 6 with ``sigma``)."""
    return DiffFlow(Constant(1.0, 1.0, 0.0, sigma, horizon=horizon), data, target, particles,
                    bandwidth=bandwidth, smooth_target=smooth_target, target_points=target_points, chunk=chunk,
                    event_shape=event_shape)


def langevin(data: Any = None, target: Any = "auto", sigma: float = 0.0, horizon: float = 10.0,
             target_points: int = 2000, chunk: int | None = None, event_shape: tuple[int, ...] = (2,)) -> DiffFlow:
    """Langevin ``dx = s_{q_sigma} dt + sqrt(2) dW`` (SPEC §2.2 eq 4; §1.4 row 1): needs the target score only."""
    return DiffFlow(Constant(1.0, 1.0, math.sqrt(2.0), sigma, horizon=horizon), data, target, None,
                    target_points=target_points, chunk=chunk, event_shape=event_shape)


def annealed_langevin(data: Any = None, target: Any = "auto", sigma_max: float = 3.0, sigma_min: float = 0.01,
                      levels: int = 15, tau: float = 10.0, sigmas: list[float] | None = None,
                      target_points: int = 2000, chunk: int | None = None,
                      event_shape: tuple[int, ...] = (2,)) -> DiffFlow:
    """Annealed Langevin / NCSN over a decreasing sigma ladder (SPEC §2.2 eq 4, §1.4 row 2); see ``Ladder``."""
    return DiffFlow(Ladder(sigmas, sigma_max, sigma_min, levels, tau), data, target, None,
                    target_points=target_points, chunk=chunk, event_shape=event_shape)


def entropy(bandwidth: str | float = "scott", horizon: float = 1.0, chunk: int | None = None,
            event_shape: tuple[int, ...] = (2,)) -> DiffFlow:
    """Negative-entropy flow ``v = -s_rho`` (SPEC §2.1 last row): the particles spread like the heat equation."""
    return DiffFlow(Constant(0.0, 1.0, 0.0, horizon=horizon), None, None, "kde", bandwidth=bandwidth,
                    chunk=chunk, event_shape=event_shape)


def fdiv(divergence: str = "kl", data: Any = None, target: Any = "auto", bandwidth: str | float = "scott",
         smooth_target: bool = True, sigma: float = 0.0, horizon: float = 3.0, max_logit: float = 10.0,
         target_points: int = 2000, chunk: int | None = None, event_shape: tuple[int, ...] = (2,)) -> DiffFlow:
    """Wasserstein flow of ``D_f(rho || q)`` for ``kl``, ``reverse-kl``, ``chi2``, ``js`` (SPEC §2.1 table) via
    the KDE density ratio; see ``rows.FDiv``."""
    return DiffFlow(FDiv(divergence, sigma, horizon, max_logit), data, target, "kde", bandwidth=bandwidth,
                    smooth_target=smooth_target, target_points=target_points, chunk=chunk, event_shape=event_shape)
