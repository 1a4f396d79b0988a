"""Minibatch couplings of flow matching: which source draw each data point is paired with, and the SB path.

Tong et al. 2023, "Improving and generalizing flow-based generative models with minibatch optimal transport"
(TMLR 2024), write the flow-matching objective over a law q(z) of pairs z = (x0, x1). Here the source draw is
``x_1`` (at t = 0) and the data point ``x_2`` (at t = 1), i.e. their (x0, x1). The options:

* ``independent``: q = pi_1 x pi_2, the plain rectified-flow pairing (I-CFM).
* ``ot``: q = the exact squared-Euclidean OT plan between the source and the data minibatch (OT-CFM, their
  eq 17), computed by POT's network simplex ``ot.emd``. Pairs that do not cross make straighter paths.
* ``sinkhorn``: the entropy-regularised plan ``argmin <P, C> - reg H(P)`` (``ot.sinkhorn``), a blurred OT plan.
* ``sb``: SB-CFM, the Schrodinger bridge of Brownian motion with diffusion ``sigma``. Its static coupling is
  the entropic plan with ``reg = 2 sigma^2`` (the Gibbs kernel ``exp(-||x0 - x1||^2 / (2 sigma^2))`` of the
  Brownian transition over unit time), and its path is the Brownian bridge (eq 20)
  ``x(t) = mu_t + sigma_t eps``, ``mu_t = (1 - t) x_1 + t x_2``, ``sigma_t = sigma sqrt(t (1 - t))``.

The cost is ``C_ij = ||x_1^i - x_2^j||^2`` summed over all coordinates (not divided by D), so ``reg`` is in
units of squared distance, as in torchcfm. Index pairs ``(i, j)`` are drawn with replacement with probability
``P_ij / sum(P)``, as torchcfm does, from the generator the objective's loss receives: first a row ``i`` from
the row masses, then a column ``j`` from row i, which is an exact draw from the joint and needs no flattened
``n^2``-category table.

Derivation of the SB target (eq 21). For a Gaussian conditional path ``N(mu_t, sigma_t^2 I)`` the conditional
field that generates it is ``u_t(x | z) = mu_t' + (sigma_t' / sigma_t)(x - mu_t)`` (Lipman et al. 2023,
Thm 3): along ``x(t) = mu_t + sigma_t eps`` with fixed eps, ``dx/dt = mu_t' + sigma_t'
eps``. With ``sigma_t = sigma sqrt(t(1-t))``, ``sigma_t' = sigma (1 - 2t) / (2 sqrt(t(1-t)))`` and
``sigma_t' / sigma_t = (1 - 2t) / (2 t (1 - t))``, so

    u_t = x_2 - x_1 + (1 - 2t) / (2 t (1 - t)) (x(t) - mu_t) = x_2 - x_1 + sigma (1 - 2t) / (2 sqrt(t(1-t))) eps.

It is evaluated in the second form (no division of a vanishing difference). At t = 1/2 the noise term
vanishes and the target is ``x_2 - x_1``; at t -> 0 or 1 it grows like ``t^(-1/2)``, so the objective draws t
from ``[t_min, 1 - t_min]`` with t_min > 0 for this coupling.

Data-parallel training: each rank couples its own minibatch (its source draws against its own shard's batch),
as torchcfm does under DDP; no plan spans ranks. The plan is therefore a minibatch plan of the per-rank batch
size: adding ranks averages more such plans' gradients but does not make any plan closer to the population OT
plan (minibatch OT's bias shrinks only with the per-rank batch, ``train.batch_size``). Each rank pays one
POT solve per step and no communication.
"""
from __future__ import annotations

import warnings
from typing import Any

import attrs
import numpy as np
import torch
from torch import Tensor

from diffflow_core import validation as check
from diffflow_core.errors import ConfigError
from diffflow_core.tensors import draw_device

__all__ = ["COUPLINGS", "MinibatchCoupling", "make_coupling", "squared_cost", "transport_plan", "draw_pairs",
           "brownian_bridge"]

COUPLINGS = ("independent", "ot", "sinkhorn", "sb")
#: torchcfm's defaults: ``OTPlanSampler(reg=0.05)`` and ``SchrodingerBridgeConditionalFlowMatcher(sigma=1.0)``.
DEFAULT_REG, DEFAULT_SIGMA = 0.05, 1.0
#: Sinkhorn iterations allowed per plan; the iteration count grows like max(C) / reg.
SINKHORN_ITERATIONS = 10_000


def squared_cost(x1: Tensor, x2: Tensor) -> Tensor:
    """``C_ij = ||x_1^i - x_2^j||^2`` over all event coordinates, in float64 on the CPU (POT's simplex)."""
    a, b = x1.detach().flatten(1).to("cpu", torch.float64), x2.detach().flatten(1).to("cpu", torch.float64)
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist").pow(2)  # exact: C_ii = 0 for equal rows


def _sinkhorn(a: np.ndarray, b: np.ndarray, cost: np.ndarray, reg: float) -> np.ndarray:
    """The entropic plan: the scaling iteration, or its log-domain form where the scaling one breaks down.

    The scaling form is many times faster, but once ``C / reg`` exceeds about 745 its Gibbs kernel
    ``exp(-C / reg)`` underflows and POT stops early with a plan of the wrong marginals. Such a plan (either
    marginal off by more than 0.1%) is recomputed in the log domain, which is exact there but slower.
    """
    import ot

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.filterwarnings("ignore", message=".*numerical errors.*")
        plan = ot.sinkhorn(a, b, cost, reg, numItermax=SINKHORN_ITERATIONS)
    if np.all(np.isfinite(plan)) and _marginals_close(plan, a, b):
        return plan
    return ot.sinkhorn(a, b, cost, reg, method="sinkhorn_log", numItermax=SINKHORN_ITERATIONS)


def _marginals_close(plan: np.ndarray, a: np.ndarray, b: np.ndarray, rtol: float = 1e-3) -> bool:
    return bool(np.all(np.abs(plan.sum(1) - a) <= rtol * a) and np.all(np.abs(plan.sum(0) - b) <= rtol * b))


def transport_plan(x1: Tensor, x2: Tensor, reg: float | None = None) -> Tensor:
    """The plan ``P [n, m]`` (float64, CPU) between uniform weights on two minibatches for the squared cost.

    ``reg=None``: the exact plan (``ot.emd``; for n = m a permutation matrix / n). Otherwise the Sinkhorn plan
    of ``min <P, C> - reg H(P)``.
    """
    import ot

    cost = squared_cost(x1, x2).numpy()
    a, b = np.full(cost.shape[0], 1.0 / cost.shape[0]), np.full(cost.shape[1], 1.0 / cost.shape[1])
    plan = ot.emd(a, b, cost, numItermax=10_000_000) if reg is None else _sinkhorn(a, b, cost, reg)
    return torch.from_numpy(np.asarray(plan, dtype=np.float64))


def draw_pairs(plan: Tensor, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """``n`` index pairs ``(i, j)`` drawn with replacement with probability ``P_ij / sum(P)`` (CPU tensors)."""
    plan = plan.to(draw_device(generator, "cpu"))
    rows = torch.multinomial(plan.sum(1), n, replacement=True, generator=generator)
    cols = torch.multinomial(plan[rows], 1, generator=generator)[:, 0]
    return rows.cpu(), cols.cpu()


def brownian_bridge(xt: Tensor, velocity: Tensor, t: Tensor, sigma: float, noise: Tensor) -> tuple[Tensor, Tensor]:
    """The SB-CFM path point and target from the mean path ``mu_t = xt`` and its velocity ``mu_t'``.

    ``x(t) = mu_t + sigma sqrt(t(1-t)) eps`` (eq 20) and ``u_t = mu_t' + sigma (1-2t) / (2 sqrt(t(1-t))) eps``
    (eq 21 with ``x(t) - mu_t = sigma_t eps``); ``t`` must lie in (0, 1).
    """
    tt = t.reshape(-1, *([1] * (xt.ndim - 1))).to(xt)
    root = (tt * (1 - tt)).sqrt()
    return xt + sigma * root * noise, velocity + sigma * (1 - 2 * tt) / (2 * root) * noise


@attrs.frozen
class MinibatchCoupling:
    """A non-independent coupling: the plan's regularisation (``None``: exact OT) and the SB path noise sigma
    (``None``: the flow's own deterministic path)."""

    name: str
    reg: float | None
    sigma: float | None

    def pair(self, x1: Tensor, x2: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Index pairs ``(i, j)``, one per row of ``x2``, drawn from the plan between ``x1`` and ``x2``."""
        return draw_pairs(transport_plan(x1, x2, self.reg), x2.shape[0], generator)


def make_coupling(coupling: Any = "independent", reg: Any = None, sigma: Any = None) -> MinibatchCoupling | None:
    """Validate the options; ``None`` for independent pairs. ``reg`` belongs to ``sinkhorn`` (default 0.05),
    ``sigma`` to ``sb`` (default 1.0, whose plan then has ``reg = 2 sigma^2``)."""
    if coupling not in COUPLINGS:
        raise ConfigError(f"coupling: expected one of {', '.join(COUPLINGS)}, got {coupling!r}")
    if reg is not None and coupling != "sinkhorn":
        raise ConfigError(f"reg: only coupling='sinkhorn' takes a regularisation ('sb' uses 2 sigma^2), "
                          f"got reg={reg!r} with coupling={coupling!r}")
    if sigma is not None and coupling != "sb":
        raise ConfigError(f"sigma: only coupling='sb' has path noise, got sigma={sigma!r} with coupling={coupling!r}")
    if coupling == "independent":
        return None
    if coupling == "ot":
        return MinibatchCoupling("ot", None, None)
    if coupling == "sinkhorn":
        return MinibatchCoupling("sinkhorn", check.positive("reg", DEFAULT_REG if reg is None else reg), None)
    sigma = check.positive("sigma", DEFAULT_SIGMA if sigma is None else sigma)
    return MinibatchCoupling("sb", 2 * sigma ** 2, sigma)
