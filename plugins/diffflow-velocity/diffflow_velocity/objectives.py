"""Objectives of the velocity flow (SPEC §4.2): the rectified-flow regression (eq 18) and the path-constrained
loss (eq 19), both on pairs ``(x_1, x_2)`` of the source law and the data, and optional reflow. Flow matching
can pair each minibatch by optimal transport or train the Schrodinger-bridge variant (:mod:`.couplings`).

Per-sample losses are squared norms divided by the dimension D (a mean over coordinates), so the scale does not
grow with the image size. Class-conditional flows train with label dropout: each label is replaced by the null
label with probability ``label_dropout``, which fits the unconditional field used by guidance (SPEC §4.4).
"""
from __future__ import annotations

from typing import Any

import attrs
import torch
from torch import Tensor

from diffflow_core import validation as check
from diffflow_core.errors import ConfigError
from diffflow_core.interfaces import Batch, Objective, SamplingContext
from diffflow_core.tensors import draw_device, draw_noise, per_sample
from diffflow_velocity.couplings import MinibatchCoupling, brownian_bridge, make_coupling
from diffflow_velocity.flow import VelocityFlow

__all__ = ["PathSample", "Coupling", "FlowMatching", "PathConstrained", "WEIGHTS"]


@attrs.frozen
class PathSample:
    """Pairs ``x1 ~ pi_1``, ``x2 ~ pi_2``, times ``t [B]``, the path point ``xt``, its velocity ``target``,
    and labels ``y``."""

    x1: Tensor
    x2: Tensor
    t: Tensor
    xt: Tensor
    target: Tensor
    y: Tensor | None


@attrs.frozen
class Coupling:
    """Fixed pairs ``(x1, x2[, y])`` that replace independent pairing after :meth:`reflow`."""

    x1: Tensor
    x2: Tensor
    y: Tensor | None


def _sq_norm(x: Tensor) -> Tensor:
    """Per-sample mean of squares over the event dimensions, ``||x||^2 / D``."""
    return x.flatten(1).pow(2).mean(1)


class _PathObjective(Objective):
    """Shared pairing, time sampling, label dropout and reflow of the two velocity objectives."""

    def __init__(self, label_dropout: float = 0.0, t_min: float = 0.0, flow: Any = None) -> None:
        if flow is not None and not isinstance(flow, VelocityFlow):
            raise ConfigError(f"flow: the velocity objectives need a 'velocity' flow, got {type(flow).__name__}")
        self.label_dropout = check.in_range("label_dropout", label_dropout, 0, 1,
                                            expected="a probability in [0, 1)")
        self.t_min, self.t_max = check.in_range("t_min", t_min, 0, 1), 1.0
        self.coupling: Coupling | None = None
        self.pairing: MinibatchCoupling | None = None  # how fresh draws are paired (None: independently)

    def path_sample(self, flow: VelocityFlow, batch: Batch, generator: torch.Generator | None = None,
                    t: Tensor | None = None) -> PathSample:
        """Pair the batch with source draws (by :attr:`pairing`) or take reflow pairs, draw
        ``t ~ U[t_min, t_max)`` unless given, and add the bridge noise of an ``sb`` pairing."""
        if not isinstance(flow, VelocityFlow):
            raise ConfigError(f"flow: the velocity objectives need a 'velocity' flow, got {type(flow).__name__}")
        self._check_path(flow)
        n, like = len(batch), batch.x
        if self.coupling is not None:
            index = torch.randint(0, self.coupling.x1.shape[0], (n,), generator=generator,
                                  device=draw_device(generator, "cpu")).to(self.coupling.x1.device)
            x1, x2 = self.coupling.x1[index].to(like), self.coupling.x2[index].to(like)
            y = None if self.coupling.y is None else self.coupling.y[index].to(like.device)
        else:
            x2, y = like, batch.y
            x1 = flow.source.sample(n, generator, like.device, like.dtype)
            if self.pairing is not None:
                rows, cols = self.pairing.pair(x1, x2, generator)
                x1, x2 = x1[rows.to(like.device)], x2[cols.to(like.device)]
                y = None if y is None else y[cols.to(y.device)]
        if flow.conditional:
            if y is None:
                raise ConfigError("data: a conditional velocity flow trains on labelled data (batch has no labels)")
            drop = draw_noise((n,), generator, like, "uniform") < self.label_dropout
            y = torch.where(drop, flow.null_labels(n, like.device), y)
        else:
            y = None
        if t is None:
            t = self.t_min + (self.t_max - self.t_min) * draw_noise((n,), generator, like, "uniform")
        xt, target = flow.interpolate(x1, x2, t)
        if self.pairing is not None and self.pairing.sigma is not None:
            xt, target = brownian_bridge(xt, target, t, self.pairing.sigma, draw_noise(xt.shape, generator, xt))
        return PathSample(x1, x2, t, xt, target, y)

    def _check_path(self, flow: VelocityFlow | None) -> None:
        """A minibatch coupling needs the ``linear`` path: on the ``ve`` path ``x(0) = x_2 + x_1`` is the
        source law (data plus noise) only for independent pairs."""
        if self.pairing is not None and flow is not None and flow.path != "linear":
            raise ConfigError(f"coupling: {self.pairing.name!r} pairs need the 'linear' path (on the "
                              f"{flow.path!r} path x(0) has the source law only for independent pairs)")

    def per_sample(self, flow: VelocityFlow, path: PathSample) -> Tensor:
        raise NotImplementedError

    def loss(self, flow: VelocityFlow, batch: Batch, generator: torch.Generator | None = None) -> Tensor:
        return self.per_sample(flow, self.path_sample(flow, batch, generator)).mean()

    @torch.no_grad()
    def reflow(self, model: Any, n: int, steps: int, *, seed: int = 0, solver: Any = None) -> Coupling:
        """Re-pair by the current model's own couplings: ``x2 = ODE(x1)`` for ``n`` source draws ``x1``.

        Later training regresses on these deterministic pairs, which straightens the paths (rectified flow's
        reflow); a conditional flow draws uniform labels and integrates each under its own label.
        """
        from diffflow_core.model import make_generator

        n = check.positive_int("n", n, expected="a positive number of reflow pairs")
        flow = model.flow
        generator = make_generator(seed, model.device)
        x1 = flow.prior(n, generator=generator, device=model.device)
        y = None
        if flow.conditional:
            y = torch.randint(0, flow.num_classes, (n,), generator=generator,
                              device=draw_device(generator, "cpu")).to(x1.device)
        context = SamplingContext(options={} if y is None else {"label": y})
        x2 = model._solver(solver).solve(flow, x1, flow.time_grid(steps).to(x1), smoother=model.smoother,
                                         context=context).x
        self.coupling = Coupling(x1, x2, y)
        return self.coupling


class FlowMatching(_PathObjective):
    """Rectified-flow regression ``E || f(x(t), t) - dx/dt ||^2`` (SPEC eq 18); its optimum is
    ``f*(x, t) = E[x_2 - x_1 | x(t) = x]`` (SPEC §4.1), the expectation under the pairs' law q.

    ``coupling`` chooses q (Tong et al. 2023, see :mod:`diffflow_velocity.couplings`): ``independent``
    (default), ``ot`` (the exact minibatch OT plan, OT-CFM, their eq 17), ``sinkhorn`` (the entropic plan with
    regularisation ``reg``) or ``sb`` (SB-CFM: the entropic plan with ``reg = 2 sigma^2`` and the Brownian-bridge
    path of eqs 20-21, whose target diverges like ``t^(-1/2)`` at both ends, so t is drawn from
    ``[t_min, 1 - t_min]`` with ``t_min`` defaulting to 1e-3; other couplings default to ``t_min = 0``).
    Under data-parallel training each rank couples its own minibatch (a per-rank plan, as in torchcfm), so the
    plan's size, and with it minibatch OT's bias, is set by the per-rank batch size, not by the number of ranks.
    Reflow pairs, once set, replace the minibatch plan; an ``sb`` coupling still adds its bridge noise to them.
    """

    def __init__(self, label_dropout: float = 0.0, t_min: float | None = None, coupling: str = "independent",
                 reg: float | None = None, sigma: float | None = None, flow: Any = None) -> None:
        pairing = make_coupling(coupling, reg, sigma)
        bridge = pairing is not None and pairing.sigma is not None
        if t_min is None:
            t_min = 1e-3 if bridge else 0.0
        if bridge:
            check.in_range("t_min", t_min, 0, 0.5, low_open=True,
                           expected="0 < t_min < 0.5 (the bridge target of eq 21 is singular at t = 0 and 1, so "
                                    "coupling='sb' draws t from [t_min, 1 - t_min])")
        super().__init__(label_dropout, t_min, flow)
        self.pairing = pairing
        if bridge:
            self.t_max = 1.0 - self.t_min
        self._check_path(flow)

    def per_sample(self, flow: VelocityFlow, path: PathSample) -> Tensor:
        return _sq_norm(flow.field(path.xt, path.t, path.y) - path.target)


WEIGHTS = {
    "inverse": lambda t: 1 / t,            # the paper's choice: a t-weighted RF loss in the one-step form
    "uniform": lambda t: torch.ones_like(t),
    "inverse-square": lambda t: t ** -2,   # the one-step form then equals the plain RF loss
}


class PathConstrained(_PathObjective):
    """Path-constrained loss ``E[lambda(t) || x_theta(t) - x(t) ||^2]`` (SPEC eq 19).

    ``steps=1``: the one-step approximation ``x_theta(t) = x(0) + t f(x(t), t)``, i.e. ``lambda(t) t^2`` times
    the RF residual. ``steps=K>1``: the model itself is integrated by K Euler steps from the path point at
    ``s = max(t - horizon, 0)`` to ``t`` (gradients flow through all of them), and the endpoint error is
    rescaled by ``(t / (t - s))^2`` so that the weighting matches the one-step form.
    """

    def __init__(self, weight: str = "inverse", steps: int = 1, horizon: float = 0.1, label_dropout: float = 0.0,
                 t_min: float = 1e-3, flow: Any = None) -> None:
        if weight not in WEIGHTS:
            raise ConfigError(f"weight: expected one of {', '.join(WEIGHTS)}, got {weight!r}")
        steps = check.positive_int("steps", steps, expected="a positive integer number of Euler steps")
        horizon = check.in_range("horizon", horizon, 0, 1, low_open=True, high_open=False)
        if not t_min > 0:
            raise ConfigError(f"t_min: lambda(t) may be singular at t = 0; expected t_min > 0, got {t_min!r}")
        super().__init__(label_dropout, t_min, flow)
        self.weight, self.steps, self.horizon = weight, steps, float(horizon)

    def per_sample(self, flow: VelocityFlow, path: PathSample) -> Tensor:
        t = path.t
        if self.steps == 1:
            start, _ = flow.interpolate(path.x1, path.x2, torch.zeros_like(t))
            reached = start + per_sample(t, start) * flow.field(path.xt, t, path.y)
            scale = torch.ones_like(t)
        else:
            s = (t - self.horizon).clamp_min(0.0)
            reached, _ = flow.interpolate(path.x1, path.x2, s)
            h = (t - s) / self.steps
            for k in range(self.steps):
                reached = reached + per_sample(h, reached) * flow.field(reached, s + k * h, path.y)
            scale = (t / (t - s)) ** 2
        return WEIGHTS[self.weight](t) * scale * _sq_norm(reached - path.xt)
