"""Gaussian kernel density estimates of a sample: bandwidth rules, log-density and score, chunked.

``rho_h(x) = (1/M) sum_m N(x; y_m, h^2 I)``. Its score is ``sum_m w_m(x) (y_m - x) / h^2`` with ``w`` the
softmax over ``m`` of ``-||x - y_m||^2 / (2 h^2)``: a posterior-weighted pull towards the centres. Both are
computed ``chunk`` query rows at a time, so memory is O(M * chunk).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from diffflow_core import validation as check
from diffflow_core.errors import ConfigError
from diffflow_kl.kernels import by_chunks, sq_dists

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
    flat_c = centres.flatten(1)
    m, d = flat_c.shape
    h2 = torch.as_tensor(h, dtype=x.dtype, device=x.device) ** 2
    const = math.log(m) + 0.5 * d * torch.log(2 * math.pi * h2)

    def block(xb: Tensor) -> Tensor:
        return torch.logsumexp(-sq_dists(xb, flat_c) / (2 * h2), dim=1) - const

    return by_chunks(block, x, m, chunk)


def kde_score(x: Tensor, centres: Tensor, h: float | Tensor, chunk: int | None = None) -> Tensor:
    """``grad log rho_h(x)`` ``[N, *shape]`` of the Gaussian KDE with centres ``[M, *shape]`` and bandwidth ``h``."""
    flat_c = centres.flatten(1)
    h2 = torch.as_tensor(h, dtype=x.dtype, device=x.device) ** 2

    def block(xb: Tensor) -> Tensor:
        weights = torch.softmax(-sq_dists(xb, flat_c) / (2 * h2), dim=1)
        return (weights @ flat_c - xb.flatten(1)) / h2

    return by_chunks(block, x, flat_c.shape[0], chunk).reshape(x.shape)
