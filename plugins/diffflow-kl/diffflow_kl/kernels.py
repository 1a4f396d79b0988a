"""Radial kernels and their chunked interactions (memory O(N * chunk), never O(N^2)).

A radial kernel is ``k(x, y) = kappa(||x - y||^2)``; its gradient in the first argument is
``grad_1 k(x, y) = psi(||x - y||^2) (x - y)`` with ``psi = 2 kappa'``. Every interaction the particle flows need
(MMD witness gradients, SPEC §2.1; Stein smoothing, eq 18) is a mean over centres ``y_m`` of ``kappa`` or ``psi``
times something, evaluated for a block of ``chunk`` query rows at a time.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

from diffflow_core import validation as check
from diffflow_core.errors import ConfigError
from diffflow_core.specs import from_spec
from diffflow_core.tensors import draw_device

__all__ = ["RadialKernel", "Gaussian", "IMQ", "Laplace", "Energy", "make_kernel", "sq_dists", "chunk_size",
           "by_chunks", "grad_mean", "smooth_mean", "median_bandwidth"]

#: Default number of pairwise entries held at once (about 32 MiB in float64).
PAIR_BUDGET = 2 ** 22


class RadialKernel:
    """``k(x, y) = kappa(d2)`` with ``d2 = ||x - y||^2``; subclasses give ``kappa`` and ``psi = 2 kappa'``."""

    name = "radial"

    def value(self, d2: Tensor) -> Tensor:
        raise NotImplementedError

    def psi(self, d2: Tensor) -> Tensor:
        raise NotImplementedError

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        """The Gram block ``[len(x), len(y)]`` (for tests and small problems)."""
        return self.value(sq_dists(x, y))


class Gaussian(RadialKernel):
    """``sum_b exp(-d2 / (2 h_b^2))`` over one or several bandwidths ``h_b``."""

    name = "gaussian"

    def __init__(self, bandwidth: float | Sequence[float] = 1.0) -> None:
        values = [bandwidth] if isinstance(bandwidth, (int, float)) else list(bandwidth)
        if not values:
            raise ConfigError("bandwidth: expected one or more positive numbers, got an empty list")
        self.bandwidths = [check.positive("bandwidth", h) for h in values]

    def value(self, d2: Tensor) -> Tensor:
        return sum(torch.exp(-d2 / (2 * h * h)) for h in self.bandwidths)

    def psi(self, d2: Tensor) -> Tensor:
        return sum(-torch.exp(-d2 / (2 * h * h)) / (h * h) for h in self.bandwidths)


class IMQ(RadialKernel):
    """Inverse multiquadric ``(c^2 + d2)^(-1/2)``."""

    name = "imq"

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = check.positive("scale", scale)

    def value(self, d2: Tensor) -> Tensor:
        return torch.rsqrt(self.scale ** 2 + d2)

    def psi(self, d2: Tensor) -> Tensor:
        return -torch.rsqrt(self.scale ** 2 + d2) ** 3


def _safe_norm(d2: Tensor) -> tuple[Tensor, Tensor]:
    """``||x - y||`` and a mask of the pairs at distance 0, where the cone kernels' gradient is set to 0."""
    zero = d2 <= 0
    return torch.sqrt(torch.where(zero, torch.ones_like(d2), d2)), zero


class Laplace(RadialKernel):
    """``exp(-||x - y|| / h)``; its gradient at ``x = y`` is taken as 0 (a subgradient)."""

    name = "laplace"

    def __init__(self, bandwidth: float = 1.0) -> None:
        self.bandwidth = check.positive("bandwidth", bandwidth)

    def value(self, d2: Tensor) -> Tensor:
        return torch.exp(-torch.sqrt(d2.clamp_min(0)) / self.bandwidth)

    def psi(self, d2: Tensor) -> Tensor:
        d, zero = _safe_norm(d2)
        return torch.where(zero, torch.zeros_like(d), -torch.exp(-d / self.bandwidth) / (self.bandwidth * d))


class Energy(RadialKernel):
    """The energy-distance kernel ``-||x - y||`` (conditionally positive definite); gradient 0 at ``x = y``."""

    name = "energy"

    def value(self, d2: Tensor) -> Tensor:
        return -torch.sqrt(d2.clamp_min(0))

    def psi(self, d2: Tensor) -> Tensor:
        d, zero = _safe_norm(d2)
        return torch.where(zero, torch.zeros_like(d), -1.0 / d)


_KERNELS = {k.name: k for k in (Gaussian, IMQ, Laplace, Energy)}


def make_kernel(spec: str | dict | RadialKernel, **params) -> RadialKernel:
    """A kernel from a name (``gaussian``, ``imq``, ``laplace``, ``energy``), ``{"name": ..., **params}`` or itself."""
    return from_spec("kernel", _KERNELS, spec, RadialKernel, **params)


def sq_dists(x: Tensor, y: Tensor) -> Tensor:
    """``||x_i - y_j||^2`` ``[len(x), len(y)]`` for flattened rows (clamped at 0 against round-off)."""
    x, y = x.flatten(1), y.flatten(1)
    d2 = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * x @ y.T
    return d2.clamp_min_(0)


def chunk_size(num_centres: int, chunk: int | None = None) -> int:
    """Query rows per block: ``chunk`` if given, else as many as keep ``rows * num_centres`` within the budget."""
    if chunk is not None:
        return check.positive_int("chunk", chunk)
    return max(1, PAIR_BUDGET // max(1, num_centres))


def by_chunks(fn: Callable[[Tensor], Tensor], x: Tensor, num_centres: int, chunk: int | None = None) -> Tensor:
    """``fn`` applied to row blocks of ``x`` and stacked (``fn`` sees at most ``chunk`` rows at a time).

    Blocks are written into one preallocated output rather than collected and concatenated: many small
    per-block results kept alive between the large freed block temporaries fragment the C heap, and RSS then
    grew with every block at large N (``benchmarks/mmd_scale.py``; measured in docs/benchmarks.md, Speed).
    """
    size = chunk_size(num_centres, chunk)
    if x.shape[0] <= size:
        return fn(x)
    blocks = torch.split(x, size)
    first = fn(blocks[0])
    out = first.new_empty((x.shape[0], *first.shape[1:]))
    out[:size] = first
    for start, block in zip(range(size, x.shape[0], size), blocks[1:]):
        out[start:start + block.shape[0]] = fn(block)
    return out


def grad_mean(kernel: RadialKernel, x: Tensor, y: Tensor, chunk: int | None = None) -> Tensor:
    """``(1/M) sum_m grad_1 k(x_i, y_m)`` ``[N, *shape]``: the gradient of the mean embedding of ``y`` at ``x``."""
    flat_y = y.flatten(1)

    def block(xb: Tensor) -> Tensor:
        psi = kernel.psi(sq_dists(xb, flat_y))
        return (psi.sum(1, keepdim=True) * xb.flatten(1) - psi @ flat_y) / flat_y.shape[0]

    return by_chunks(block, x, flat_y.shape[0], chunk).reshape(x.shape)


def smooth_mean(kernel: RadialKernel, x: Tensor, y: Tensor, values: Tensor, chunk: int | None = None) -> Tensor:
    """``(1/M) sum_m k(x_i, y_m) values_m``: kernel smoothing of ``values`` (given at ``y``) onto ``x``."""
    flat_y, flat_v = y.flatten(1), values.flatten(1)

    def block(xb: Tensor) -> Tensor:
        return kernel.value(sq_dists(xb, flat_y)) @ flat_v / flat_y.shape[0]

    return by_chunks(block, x, flat_y.shape[0], chunk).reshape(x.shape[0], *values.shape[1:])


def median_bandwidth(x: Tensor, max_points: int = 1000, generator: torch.Generator | None = None) -> float:
    """Liu & Wang's median heuristic ``h^2 = med(||x_i - x_j||^2) / (2 log(N + 1))`` for ``exp(-d2/(2h^2))``.

    With ``N`` above ``max_points`` the median is taken over a seeded random subset (the median is a stable
    statistic; the ``log(N + 1)`` uses the full ``N``).
    """
    n = x.shape[0]
    sub = x
    if n > max_points:
        idx = torch.randperm(n, generator=generator, device=draw_device(generator, "cpu"))[:max_points].to(x.device)
        sub = x[idx]
    d2 = sq_dists(sub, sub)
    off = d2[~torch.eye(sub.shape[0], dtype=torch.bool, device=x.device)]
    med = float(off.median()) if off.numel() else 1.0
    return max(med / (2.0 * torch.log(torch.tensor(n + 1.0)).item()), 1e-12) ** 0.5
