"""Translation between distributions with velocity fields that share a latent (SPEC §4.3).

``shared-latent`` (the default; DDIB-like and exact up to ODE error): integrate the source field backwards
from ``t = 1`` to the latent at ``t = 0``, then the target field forwards to ``t = 1``. Both fields must start
from the same source law (here: Gaussian noise), so a point keeps its latent code and changes only its class.

``difference`` (the paper's form): ``x_c2 = x_c1 + int_0^1 [f(x, t, c2) - f(x, t, c1)] dt``. Caveat: the fields
are trained only on path points ``x(t)`` of their own law at time ``t``, whereas this integral evaluates them
at points near the data end at every ``t`` (off their training support). It is therefore only formally
valid: even for two Gaussians of identity covariance it shifts the mean by
``(m2 - m1) int_0^1 (1 - t) / ((1 - t)^2 + t^2) dt`` = (pi/4) (m2 - m1) instead of ``m2 - m1``. It is offered
for comparison, not as the recommended route.

An end point (``source`` or ``target``) is a class label of a conditional flow, ``None`` for the flow's
unconditional (null-label) field, or another velocity flow that shares the same latent law.
"""
from __future__ import annotations

from typing import Any

import attrs
import torch
from torch import Tensor

from diffflow_core import validation as check
from diffflow_core.errors import ConfigError
from diffflow_core.interfaces import Flow, Solver, check_steps
from diffflow_velocity.flow import VelocityFlow

__all__ = ["Translation", "translate", "METHODS"]

METHODS = ("shared-latent", "difference")


@attrs.frozen
class Translation:
    """Translated particles, the shared latent (``None`` for the difference form) and the NFE spent."""

    x: Tensor
    latent: Tensor | None
    nfe: int


class _EndField(Flow):
    """The field of one end point: a flow under a fixed label and guidance weight, or a whole other flow."""

    def __init__(self, flow: VelocityFlow, label: Any, guidance: float) -> None:
        super().__init__()
        self.flow, self.label, self.guidance = flow, label, guidance

    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        if self.label is None:
            return self.flow.field(x, t)
        labels = torch.full((x.shape[0],), self.label, dtype=torch.long, device=x.device)
        return self.flow.guided_field(x, t, labels, self.guidance)


class _Difference(Flow):
    """``dx/dt = f_target(x, t) - f_source(x, t)`` (the vector-field-difference form)."""

    def __init__(self, source: _EndField, target: _EndField) -> None:
        super().__init__()
        self.source, self.target = source, target

    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        return self.target.drift(x, t) - self.source.drift(x, t)


def _end(flow: VelocityFlow | None, end: Any, name: str, guidance: float) -> _EndField:
    if isinstance(end, VelocityFlow):
        return _EndField(end, None, guidance)
    if flow is None:
        raise ConfigError(f"{name}: a label needs the conditional flow it belongs to (pass flow=...), got {end!r}")
    if end is not None:
        if not flow.conditional:
            raise ConfigError(f"{name}: labels need a conditional velocity flow, got label {end!r}")
        end = check.integer(name, end, 0, flow.num_classes - 1, expected=f"a class index in [0, {flow.num_classes})")
    return _EndField(flow, end, guidance)


@torch.no_grad()
def translate(x: Tensor, source: Any, target: Any, *, flow: Any = None, steps: int = 20,
              solver: str | Solver = "heun", method: str = "shared-latent", guidance: float = 1.0) -> Translation:
    """Translate ``x`` (drawn from the ``source`` law) to the ``target`` law (SPEC §4.3).

    ``flow`` is a velocity flow or a Model holding one (needed when the ends are labels); ``steps`` solver
    steps are spent on each leg, over uniform grids on [0, 1]. ``guidance`` applies classifier-free guidance
    (SPEC §4.4) to labelled ends; each leg is still an ODE, so the cycle ``c1 -> c2 -> c1`` stays invertible.
    """
    from diffflow_core.plugins import registry

    flow = getattr(flow, "flow", flow)
    if flow is not None and not isinstance(flow, VelocityFlow):
        raise ConfigError(f"flow: expected a velocity flow or a Model holding one, got {type(flow).__name__}")
    if method not in METHODS:
        raise ConfigError(f"method: expected one of {', '.join(METHODS)}, got {method!r}")
    check_steps(steps)
    guidance = check.finite("guidance", guidance)
    src, dst = _end(flow, source, "source", guidance), _end(flow, target, "target", guidance)
    solver = registry("solvers").create(solver) if isinstance(solver, str) else solver
    times = torch.linspace(0.0, 1.0, steps + 1, dtype=x.dtype, device=x.device)
    if method == "difference":
        difference = solver.solve(_Difference(src, dst), x, times)
        return Translation(difference.x, None, difference.nfe)
    latent = solver.solve(src, x, times.flip(0))
    out = solver.solve(dst, latent.x, times)
    return Translation(out.x, latent.x, latent.nfe + out.nfe)
