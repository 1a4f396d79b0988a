"""Exact likelihood through the probability-flow ODE (SPEC §1.7).

Along a trajectory of ``dx/dt = v(x, t)`` (the flow's :meth:`~diffflow_core.Flow.ode_drift`) the density
obeys ``d log p_t(x_t) / dt = -div v(x_t, t)``. Integrating the augmented state ``(x, l)`` with
``dl/dt = div v`` from the data end of the flow's grid to its prior end gives

    log p_data(x) = log p_prior(x_T) + l(T).

The divergence is exact (one autograd pass per dimension) in low dimension and Hutchinson's unbiased
estimate ``E[eps^T (dv/dx) eps]`` with seeded Rademacher ``eps`` (fixed along the solve) above it.
"""
from __future__ import annotations

import math
from typing import Any

import attrs
import torch
from torch import Tensor

from diffflow_core import validation as check
from diffflow_core.errors import ConfigError
from diffflow_core.interfaces import Flow, Solver, check_steps
from diffflow_core.tensors import draw_noise

__all__ = ["LogProb", "log_prob", "divergence"]

#: Dimensions up to which the divergence is computed exactly by default.
EXACT_MAX_DIM = 16


@attrs.frozen
class LogProb:
    """Per-sample log-likelihood in nats ``[N]``, bits per dimension ``[N]``, and the solver's NFE."""

    nats: Tensor
    bpd: Tensor
    nfe: int

    @property
    def mean_nll(self) -> float:
        """The average negative log-likelihood in nats (a test NLL)."""
        return float(-self.nats.mean())


def divergence(v: Tensor, x: Tensor, eps: Tensor | None) -> Tensor:
    """``div v`` ``[N]`` of ``v = f(x)`` built with autograd: exact when ``eps`` is None, else ``eps^T J eps``.

    The exact trace takes one backward pass per dimension (a loop over dimensions, never over samples).
    """
    if eps is not None:
        (vjp,) = torch.autograd.grad(v, x, eps, create_graph=False)
        return (vjp * eps).flatten(1).sum(1)
    flat_v = v.flatten(1)
    total = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    for i in range(flat_v.shape[1]):
        (grad,) = torch.autograd.grad(flat_v[:, i].sum(), x, retain_graph=i < flat_v.shape[1] - 1)
        total = total + grad.flatten(1)[:, i]
    return total


def _solver(solver: str | Solver, rtol: float | None, atol: float | None) -> Solver:
    """The likelihood's solver: a registered name (created with ``rtol``/``atol`` when adaptive) or an instance;
    a tolerance for a fixed-step solver is refused, as it would be silently ignored."""
    from diffflow_core.plugins import registry

    tolerances = {key: value for key, value in (("rtol", rtol), ("atol", atol)) if value is not None}
    if not isinstance(solver, str):
        if tolerances:
            raise ConfigError(f"rtol/atol: expected them on the solver instance ({type(solver).__name__}(rtol=...)) "
                              "when one is given, got separate rtol/atol")
        return solver
    created = registry("solvers").create(solver)
    if not tolerances:
        return created
    if not created.adaptive:
        raise ConfigError(f"rtol/atol: solver {solver!r} takes the grid's fixed steps; expected an adaptive solver "
                          "such as 'dopri5' or 'bosh3' for a tolerance")
    return registry("solvers").create(solver, **tolerances)


class _Augmented(Flow):
    """The flow on ``[x, l]`` (flattened, ``[N, D + 1]``): ``dx/dt = v``, ``dl/dt = div v``."""

    def __init__(self, flow: Flow, event_shape: tuple[int, ...], eps: Tensor | None) -> None:
        super().__init__()
        self.flow, self.shape, self.eps = flow, event_shape, eps

    def drift(self, state: Tensor, t: Tensor) -> Tensor:
        with torch.enable_grad():
            x = state[:, :-1].detach().reshape(state.shape[0], *self.shape).requires_grad_(True)
            v = self.flow.ode_drift(x, t)
            div = divergence(v, x, self.eps)
        return torch.cat([v.detach().flatten(1), div.detach()[:, None]], dim=1)


def log_prob(model_or_flow: Any, x: Tensor, *, steps: int = 256, solver: str | Solver = "heun",
             rtol: float | None = None, atol: float | None = None, exact: bool | None = None,
             dequantize: float | None = None, seed: int = 0, progress: bool = False) -> LogProb:
    """``log p(x)`` of a model's (or flow's) probability-flow ODE, in nats and bits per dimension.

    ``steps`` solver steps run over the flow's own grid reversed (data end -> prior end); a singular data
    end (EDM's sigma = 0) is dropped from a grid of ``steps + 1`` steps, so the solve starts at the
    last regular point (sigma_min). An adaptive solver (``solver="dopri5"`` or ``"bosh3"``, ``Solver.adaptive``)
    integrates between the two ends of that grid instead, choosing its own steps to meet ``rtol``/``atol``
    (given to a solver named here; a solver instance carries its own), and ``nfe`` reports the evaluations it
    made; the Hutchinson noise is fixed along the solve, so its error control sees one smooth ODE. ``exact`` chooses the exact trace (default when the dimension is
    <= 16) or Hutchinson's estimator. ``dequantize=delta`` treats ``x`` as
    discrete with bin width ``delta``: uniform noise in ``[0, delta)`` is added and the result is the
    variational lower bound ``log p(x + u) + D log delta`` on the discrete log-probability. ``progress`` shows
    a "likelihood" bar over the solver steps.
    """
    flow: Flow = getattr(model_or_flow, "flow", model_or_flow)
    if not isinstance(flow, Flow):
        raise ConfigError(f"model_or_flow: expected a Model or a Flow, got {type(model_or_flow).__name__}")
    check_steps(steps)
    if not isinstance(x, Tensor) or x.ndim < 2:
        raise ConfigError(f"x: expected a tensor [N, *shape], got {getattr(x, 'shape', type(x).__name__)}")
    if flow.event_shape and tuple(x.shape[1:]) != tuple(flow.event_shape):
        raise ConfigError(f"x: expected particles of shape {tuple(flow.event_shape)}, got {tuple(x.shape[1:])}")
    if flow.likelihood is None:
        why = ("its drift couples the particles of a batch" if flow.interacting else
               "it is stochastic and defines no probability-flow ODE (override ode_drift to enable log_prob)")
        raise ConfigError(f"flow {type(flow).__name__} has no likelihood: {why}")
    smoother = getattr(model_or_flow, "smoother", None)
    if smoother is not None and not smoother.integrates_flow:
        raise ConfigError(f"smoother {type(smoother).__name__}: samples come from the smoother, not from the "
                          "flow's probability-flow ODE, so the flow's likelihood is not the model's")
    if dequantize is not None:
        check.positive("dequantize", dequantize, expected="a positive bin width")
    solver = _solver(solver, rtol, atol)
    dims = math.prod(x.shape[1:])
    exact = dims <= EXACT_MAX_DIM if exact is None else bool(exact)
    param = next(flow.parameters(), None)
    device = param.device if param is not None else x.device
    x = x.to(device)
    generator = torch.Generator().manual_seed(seed)  # a CPU stream: the same estimate on every device
    if dequantize is not None:
        x = x + dequantize * draw_noise(x.shape, generator, x, "uniform")
    eps = None if exact else draw_noise(x.shape, generator, x, "sign")
    times = flow.time_grid(steps + 1)[:-1] if flow.singular_end else flow.time_grid(steps)
    times = times.to(device=device, dtype=x.dtype).flip(0)
    if solver.adaptive:  # the controller picks the steps: no interior grid point to pass through
        times = times[[0, -1]]
    state = torch.cat([x.detach().flatten(1), x.new_zeros(x.shape[0], 1)], dim=1)
    from diffflow_core.progress import solve_progress

    try:
        with solve_progress(times.numel() - 1, "likelihood" if progress else None) as on_step, torch.no_grad():
            solution = solver.solve(_Augmented(flow, tuple(x.shape[1:]), eps), state, times, callback=on_step)
    except FloatingPointError as exc:
        raise FloatingPointError(f"likelihood solve (probability-flow ODE from the data to the prior): {exc}") \
            from None
    z = solution.x[:, :-1].reshape(x.shape)
    nats = flow.prior_log_prob(z) + solution.x[:, -1]
    if dequantize is not None:
        nats = nats + dims * math.log(dequantize)
    return LogProb(nats=nats, bpd=-nats / (dims * math.log(2)), nfe=solution.nfe)
