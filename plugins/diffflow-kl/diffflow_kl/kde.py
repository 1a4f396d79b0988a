"""Gaussian kernel density estimates of a sample: bandwidth rules, log-density and score, chunked.

``rho_h(x) = (1/M) sum_m N(x; y_m, h^2 I)``. Its score is ``sum_m w_m(x) (y_m - x) / h^2`` with ``w`` the
softmax over ``m`` of ``-||x - y_m||^2 / (2 h^2)``: a posterior-weighted pull towards the centres. Both are
computed by the fused pair reduction :func:`~diffflow_kl.interactions.softmax_pull`, ``chunk`` query rows at a
time, so memory is O(M * chunk).
"""
from __future__ import annotations

import math

from torch import Tensor

from diffflow_core import validation as check
from diffflow_core.errors import ConfigError
from diffflow_kl.interactions import softmax_pull

__all__ = ["BANDWIDTH_RULES", "bandwidth", "kde_log_density", "kde_score"]

BANDWIDTH_RULES = ("scott", "silverman")


def bandwidth(rule: str | float, sample: Tensor) -> float:
    """The KDE bandwidth ``h`` for ``sample`` ``[M, *shape]``: a fixed number or a rule of thumb.

    Scott: ``h = M^(-1/(D+4)) s``; Silverman: ``h = (4/(D+2))^(1/(D+4)) M^(-1/(D+4)) s``, with ``s`` the root
    mean per-coordinate variance of the sample (the rules are for one isotropic bandwidth).
    """
    if check.is_number(rule):
        return check.positive("bandwidth", rule, expected=f"a positive number or one of {BANDWIDTH_RULES}")
    if rule not in BANDWIDTH_RULES:
        raise ConfigError(f"bandwidth: expected a positive number or one of {BANDWIDTH_RULES}, got {rule!r}")
    flat = sample.flatten(1)
    m, d = flat.shape
    spread = float(flat.var(0).mean().clamp_min(1e-24).sqrt())
    factor = m ** (-1.0 / (d + 4))
    if rule == "silverman":
        factor *= (4.0 / (d + 2)) ** (1.0 / (d + 4))
    return factor * spread


def kde_log_density(x: Tensor, centres: Tensor, h: float | Tensor, chunk: int | None = None) -> Tensor:
    """``log rho_h(x)`` ``[N]`` of the Gaussian KDE with centres ``[M, *shape]`` and bandwidth ``h``."""
    m, d = centres.shape[0], centres[0].numel()
    h2 = float(h) ** 2
    log_sum, _ = softmax_pull(x, centres, 0.5 / h2, chunk, pull=False)
    return log_sum - (math.log(m) + 0.5 * d * math.log(2 * math.pi * h2))


def kde_score(x: Tensor, centres: Tensor, h: float | Tensor, chunk: int | None = None) -> Tensor:
    """``grad log rho_h(x)`` ``[N, *shape]`` of the Gaussian KDE with centres ``[M, *shape]`` and bandwidth ``h``."""
    h2 = float(h) ** 2
    _, pull = softmax_pull(x, centres, 0.5 / h2, chunk)
    return pull / h2
