"""Radial kernels, each given as a short expansion in functions of the squared distance.

A radial kernel is ``k(x, y) = kappa(||x - y||^2)``; its gradient in the first argument is
``grad_1 k(x, y) = psi(||x - y||^2) (x - y)`` with ``psi = 2 kappa'``. Every interaction the particle flows need
(MMD witness gradients, SPEC §2.1; Stein smoothing, eq 18) is a sum over centres of ``kappa`` or ``psi`` times
something. A kernel states ``kappa`` and ``psi`` as combinations of a few functions ``phi_k`` (its terms,
:class:`~diffflow_kl.interactions.Term`), so the fused pair reductions of :mod:`diffflow_kl.interactions`
evaluate each ``phi_k`` once per block of pairs for both (and for all bandwidths of a Gaussian sum).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from diffflow_core import validation as check
from diffflow_core.errors import ConfigError
from diffflow_core.specs import from_spec
from diffflow_core.tensors import draw_device
from diffflow_kl.interactions import LOG2E, Term, exp2_floor

__all__ = ["RadialKernel", "Gaussian", "IMQ", "Laplace", "Energy", "make_kernel", "sq_dists", "median_bandwidth"]


class RadialKernel:
    """``k(x, y) = kappa(d2)`` with ``d2 = ||x - y||^2``; subclasses give :meth:`terms`, the expansion
    ``kappa = sum_k value_k phi_k(d2)`` and ``psi = 2 kappa' = sum_k grad_k phi_k(d2)``."""

    name = "radial"

    def terms(self) -> list[Term]:
        raise NotImplementedError

    def value(self, d2: Tensor) -> Tensor:
        """``kappa(d2)``."""
        return sum(t.value * t.phi(d2, None) for t in self.terms() if t.value)

    def psi(self, d2: Tensor) -> Tensor:
        """``psi(d2) = 2 kappa'(d2)``."""
        return sum(t.grad * t.phi(d2, None) for t in self.terms() if t.grad)

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        """The Gram block ``[len(x), len(y)]`` (for tests and small problems)."""
        return self.value(sq_dists(x, y))


def _exp_of_scaled(factor: float):
    """``phi(f) = exp(factor * f)``, as ``exp2`` of a base-2 exponent clamped at
    :func:`~diffflow_kl.interactions.exp2_floor` (the fast path; see :mod:`diffflow_kl.interactions`)."""
    def phi(f: Tensor, out: Tensor | None) -> Tensor:
        return torch.mul(f, factor * LOG2E, out=out).clamp_min_(exp2_floor(f.dtype)).exp2_()
    return phi


class Gaussian(RadialKernel):
    """``sum_b exp(-d2 / (2 h_b^2))`` over one or several bandwidths ``h_b`` (``psi`` weights each by ``-1/h_b^2``)."""

    name = "gaussian"

    def __init__(self, bandwidth: float | Sequence[float] = 1.0) -> None:
        values = [bandwidth] if isinstance(bandwidth, (int, float)) else list(bandwidth)
        if not values:
            raise ConfigError("bandwidth: expected one or more positive numbers, got an empty list")
        self.bandwidths = [check.positive("bandwidth", h) for h in values]

    def terms(self) -> list[Term]:
        return [Term(_exp_of_scaled(-0.5 / (h * h)), 1.0, -1.0 / (h * h)) for h in self.bandwidths]


class IMQ(RadialKernel):
    """Inverse multiquadric ``r = (c^2 + d2)^(-1/2)``, ``psi = -r^3``."""

    name = "imq"

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = check.positive("scale", scale)

    def _r(self, d2: Tensor, out: Tensor | None) -> Tensor:
        return torch.add(d2, self.scale ** 2, out=out).rsqrt_()

    def terms(self) -> list[Term]:
        return [Term(self._r, 1.0, 0.0), Term(lambda d2, out: self._r(d2, out).pow_(3), 0.0, -1.0)]


def _norm(d2: Tensor, out: Tensor | None) -> Tensor:
    """``||x - y||``; a ``d2`` given without ``out`` (the dense formulas) is clamped at 0 first, a pair block's
    never is negative."""
    return torch.sqrt(d2.clamp_min(0) if out is None else d2, out=out)


def _zero_at_coincidence(ratio: Tensor) -> Tensor:
    """``ratio`` with its ``+inf`` (a division by the distance 0 of coincident points) set to 0, in place:
    the cone kernels' gradient there is taken as 0 (a subgradient)."""
    return ratio.nan_to_num_(nan=math.nan, posinf=0.0)


class Laplace(RadialKernel):
    """``exp(-d / h)`` with ``d = ||x - y||``; ``psi = -exp(-d / h) / (h d)``, taken as 0 at ``d = 0``."""

    name = "laplace"

    def __init__(self, bandwidth: float = 1.0) -> None:
        self.bandwidth = check.positive("bandwidth", bandwidth)

    def terms(self) -> list[Term]:
        decay = _exp_of_scaled(-1.0 / self.bandwidth)

        def decay_of_distance(d2: Tensor, out: Tensor | None) -> Tensor:
            return decay(_norm(d2, out), out)

        def decay_over_distance(d2: Tensor, out: Tensor | None) -> Tensor:
            d = _norm(d2, None)
            return _zero_at_coincidence(decay(d, out).div_(d))

        return [Term(decay_of_distance, 1.0, 0.0), Term(decay_over_distance, 0.0, -1.0 / self.bandwidth)]


class Energy(RadialKernel):
    """The energy-distance kernel ``-||x - y||`` (conditionally positive definite); ``psi = -1/d``, 0 at ``d = 0``."""

    name = "energy"

    def terms(self) -> list[Term]:
        return [Term(_norm, -1.0, 0.0),
                Term(lambda d2, out: _zero_at_coincidence(_norm(d2, out).reciprocal_()), 0.0, -1.0)]


_KERNELS = {k.name: k for k in (Gaussian, IMQ, Laplace, Energy)}


def make_kernel(spec: str | dict | RadialKernel, **params) -> RadialKernel:
    """A kernel from a name (``gaussian``, ``imq``, ``laplace``, ``energy``), ``{"name": ..., **params}`` or itself."""
    return from_spec("kernel", _KERNELS, spec, RadialKernel, **params)


def sq_dists(x: Tensor, y: Tensor) -> Tensor:
    """``||x_i - y_j||^2`` ``[len(x), len(y)]`` for flattened rows (clamped at 0 against round-off)."""
    x, y = x.flatten(1), y.flatten(1)
    d2 = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * x @ y.T
    return d2.clamp_min_(0)


def median_bandwidth(x: Tensor, max_points: int = 1000, generator: torch.Generator | None = None) -> float:
    """Liu & Wang's median heuristic ``h^2 = med(||x_i - x_j||^2) / (2 log(N + 1))`` for ``exp(-d2/(2h^2))``.

    With ``N`` above ``max_points`` the median is taken over a seeded random subset (the median is a stable
    statistic; the ``log(N + 1)`` uses the full ``N``). It is the lower median over the pairs ``i != j``, found by
    numpy's linear-time selection past the diagonal (set to ``-inf``, so it ranks first): it runs every SVGD step,
    where torch's ``median`` of the masked pairs cost more than the step's kernel sums.
    """
    n = x.shape[0]
    sub = x
    if n > max_points:
        idx = torch.randperm(n, generator=generator, device=draw_device(generator, "cpu"))[:max_points].to(x.device)
        sub = x[idx]
    m = sub.shape[0]
    d2 = sq_dists(sub, sub).fill_diagonal_(-math.inf).flatten().cpu().numpy()
    rank = m + (m * (m - 1) - 1) // 2
    med = float(np.partition(d2, rank)[rank]) if m > 1 else 1.0
    return max(med / (2.0 * math.log(n + 1.0)), 1e-12) ** 0.5
