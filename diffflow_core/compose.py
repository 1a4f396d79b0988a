"""Drift algebra: the ``compose`` flow samples with a weighted sum of the drifts of several flows (issue 23).

Every family is a :class:`~diffflow_core.interfaces.Flow`, so guidance of any kind is one sum of drifts on one
time axis::

    v(x, s) = sum_i w_i(s) A_i[v_i](x, s)

The composite runs on the **first** term's time axis: its grid, its prior and its diffusion (the other terms add
drift only, so they must be ODE flows). Term ``i`` reaches that axis through its time map ``A_i``:

* ``time = "identity"``: ``A[v](x, s) = v(x, s)``; refused when both flows declare noise levels that differ on the
  composite's grid (feeding EDM's sigma in [0, 20] to a flow on t in [0, 1] is a bug, not a composition);
* ``time = "noise"``: the two flows are matched by their noise level. A flow on a Gaussian noise path declares
  :meth:`noise_level`, a :class:`NoiseLevel` with ``x_t = alpha(t) (y + sigma(t) eps)``; term time
  ``tau(s) = sigma_i^{-1}(sigma_0(s))`` and state scale ``a(s) = alpha_i(tau(s)) / alpha_0(s)``, and the term's drift
  is the change of variables ``x_i = a x`` (chain rule in ``s``)::

      A[v](x, s) = (v_i(a x, tau) tau'(s) - a'(s) x) / a(s)                                        (C1)

  so a single mapped term with weight 1 *is* the term's flow written in the composite's coordinates: a rectified
  flow mapped onto an EDM axis has ``tau = 1 / (1 + sigma)``, ``a = tau`` and, at the optimum, gives EDM's PF-ODE
  drift ``(x - D(x; sigma)) / sigma`` (SPEC §2.2 eq 8, §4.1). Flows without a noise level (a discriminator, MMD,
  KDE flows) compose only on the identity map.

Weights are numbers or ``{"kind": "linear", "start": a, "end": b}``, linear in the composite's time from the first
to the last point of its grid. Each term may fix sampling options (``options = {label = 3}``), which is how
classifier-free guidance of any conditional flow is written (SPEC §4.4): terms ``w * cond + (1 - w) * uncond``; with
``w = 1`` it is the conditional flow, and it equals :mod:`diffflow_core.conditioning`'s built-in ``guidance = w``
(``uncond + w (cond - uncond)``, the same sum), which costs one batched pass instead of two.

A term is ``{flow = <component spec>}`` built through the flows registry with the model's context (from Python,
``flow`` may also be a built :class:`Flow`), or ``{checkpoint = "runs/x/checkpoint.pt"}``, the flow of a saved
model (any family; loaded once per path).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import attrs
import torch
from torch import Tensor, nn
from torch.func import jvp

from diffflow_core import validation as check
from diffflow_core.errors import ConfigError
from diffflow_core.interfaces import Flow, SamplingContext, as_time
from diffflow_core.tensors import per_sample

__all__ = ["NoiseLevel", "ComposedFlow", "TimeMap", "Weight", "noise_level_of", "ImpliedDenoiser"]

TIME_MAPS = ("identity", "noise")
_TERM_KEYS = ("flow", "checkpoint", "weight", "time", "options")
#: Interior points of the composite's grid on which two declared noise levels are compared.
_PROBE_STEPS = 8


@attrs.frozen
class NoiseLevel:
    """A Gaussian noise path ``x_t = alpha(t) (y + sigma(t) eps)``: ``sigma`` is the equivalent VE noise level.

    ``time_of`` inverts ``sigma`` (closed forms per schedule); all three act elementwise on tensors and are
    differentiable, so (C1)'s rates come from forward-mode derivatives."""

    alpha: Callable[[Tensor], Tensor]
    sigma: Callable[[Tensor], Tensor]
    time_of: Callable[[Tensor], Tensor]


def noise_level_of(flow: Flow) -> NoiseLevel | None:
    """The :class:`NoiseLevel` ``flow`` declares through a ``noise_level()`` method, or None."""
    declare = getattr(flow, "noise_level", None)
    return declare() if callable(declare) else None


def _with_rate(fn: Callable[[Tensor], Tensor], t: Tensor) -> tuple[Tensor, Tensor]:
    """``(fn(t), fn'(t))`` elementwise, by one forward-mode pass (on a copy: a broadcast time, one element seen
    ``N`` times, cannot carry a tangent)."""
    t = t.contiguous()
    return jvp(fn, (t,), (torch.ones_like(t),))


@attrs.frozen
class TimeMap:
    """How one term reads the composite's time ``s``: ``(tau, tau', a, a')`` of (C1); identity without levels."""

    base: NoiseLevel | None = None
    term: NoiseLevel | None = None

    def __call__(self, s: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        if self.base is None or self.term is None:
            return s, torch.ones_like(s), torch.ones_like(s), torch.zeros_like(s)
        sigma, dsigma = _with_rate(self.base.sigma, s)
        alpha0, dalpha0 = _with_rate(self.base.alpha, s)
        tau = self.term.time_of(sigma)
        if not bool(torch.isfinite(tau).all()):
            raise ConfigError(f"time: composite time {float(s[~torch.isfinite(tau)][0]):.4g} (noise level "
                              f"{float(sigma[~torch.isfinite(tau)][0]):.4g}) maps to no finite time of the term")
        term_sigma, term_dsigma = _with_rate(self.term.sigma, tau)
        alpha, dalpha = _with_rate(self.term.alpha, tau)
        rate = dsigma / term_dsigma
        scale = alpha / alpha0
        return tau, rate, scale, (dalpha * rate * alpha0 - alpha * dalpha0) / alpha0 ** 2

    def pull(self, drift: Callable[[Tensor, Tensor], Tensor], x: Tensor, s: Tensor, affine: bool = True) -> Tensor:
        """(C1): the term's ``drift(x_i, tau)`` written as a velocity of ``x`` in the composite's time ``s``.

        ``affine=False`` pulls a drift that is *added* to a flow already on this axis (a correction, the difference
        of two drifts): the frame's own motion ``-a' x / a`` belongs to that flow, so only ``v tau' / a`` remains."""
        tau, rate, scale, dscale = self(s)
        v = drift(per_sample(scale, x) * x, tau) * per_sample(rate, x)
        if affine:
            v = v - per_sample(dscale, x) * x
        return v / per_sample(scale, x)


@attrs.frozen
class Weight:
    """A term's weight: a constant, or linear in the composite's time from ``start`` (at the grid's first point
    ``t0``) to ``end`` (at its last point ``t1``)."""

    start: float
    end: float
    t0: float = 0.0
    t1: float = 1.0

    @classmethod
    def parse(cls, field: str, value: Any, t0: float, t1: float) -> "Weight":
        def _finite(v: Any) -> bool:
            return check.is_number(v) and math.isfinite(v)

        if _finite(value):
            return cls(float(value), float(value), t0, t1)
        if isinstance(value, Mapping) and value.get("kind") == "linear" and set(value) == {"kind", "start", "end"} \
                and _finite(value["start"]) and _finite(value["end"]):
            return cls(float(value["start"]), float(value["end"]), t0, t1)
        raise ConfigError(f"{field}: expected a finite number or {{kind = \"linear\", start = a, end = b}}, "
                          f"got {value!r}")

    def __call__(self, s: Tensor) -> Tensor:
        if self.start == self.end:
            return torch.full_like(s, self.start)
        u = (s - self.t0) / (self.t1 - self.t0)
        return self.start + (self.end - self.start) * u



class ComposedFlow(Flow):
    """``compose``: ``v(x, s) = sum_i w_i(s) A_i[v_i](x, s)`` on the first term's axis (module docstring, C1).

    ``terms`` is a list of tables ``{flow = spec | checkpoint = path, weight = 1.0, time = "identity" | "noise",
    options = {...}}``; ``event_shape``, ``data`` and ``num_classes`` are the model's context, handed to the terms
    built from specs.
    """

    def __init__(self, terms: Sequence[Mapping[str, Any]] = (), event_shape: tuple[int, ...] | None = None,
                 data: Any = None, num_classes: int | None = None) -> None:
        super().__init__()
        if isinstance(terms, (str, bytes, Mapping)) or not isinstance(terms, Sequence) or not terms:
            raise ConfigError(f"terms: expected a non-empty list of term tables, got {terms!r}")
        context = {"event_shape": tuple(event_shape) if event_shape is not None else None, "data": data,
                   "num_classes": num_classes}
        loaded: dict[str, Flow] = {}
        flows = [self._term_flow(f"terms[{i}]", term, context, loaded) for i, term in enumerate(terms)]
        self.terms = nn.ModuleList(flows)
        base = flows[0]
        self.event_shape = tuple(event_shape) if event_shape is not None else tuple(base.event_shape)
        self.singular_end = base.singular_end
        self.interacting = any(flow.interacting for flow in flows)
        ends = base.time_grid(1)
        t0, t1 = float(ends[0]), float(ends[-1])
        self.weights, self.maps, self.options = [], [], []
        for i, (term, flow) in enumerate(zip(terms, flows)):
            field = f"terms[{i}]"
            if tuple(flow.event_shape) != self.event_shape:
                raise ConfigError(f"{field}: flow {type(flow).__name__} moves particles of shape "
                                  f"{tuple(flow.event_shape)}, expected {self.event_shape} like the first term")
            if i > 0 and flow.is_stochastic:
                raise ConfigError(f"{field}: flow {type(flow).__name__} is stochastic; the composite's noise is the "
                                  "first term's, so later terms must be ODE flows (e.g. mode='ode')")
            self.weights.append(Weight.parse(f"{field}.weight", term.get("weight", 1.0), t0, t1))
            self.maps.append(self._time_map(field, term.get("time", "identity"), base, flow))
            options = term.get("options", {})
            if not isinstance(options, Mapping):
                raise ConfigError(f"{field}.options: expected a table of sampling options, got {options!r}")
            self.options.append(flow.check_sampling_options(dict(options)))

    @staticmethod
    def _term_flow(field: str, term: Any, context: dict[str, Any], loaded: dict[str, Flow]) -> Flow:
        if not isinstance(term, Mapping):
            raise ConfigError(f"{field}: expected a table {{flow = ... or checkpoint = ..., weight = ...}}, "
                              f"got {term!r}")
        unknown = sorted(set(term) - set(_TERM_KEYS))
        if unknown:
            raise ConfigError(f"{field}: unknown keys {unknown}; expected some of {', '.join(_TERM_KEYS)}")
        if ("flow" in term) == ("checkpoint" in term):
            raise ConfigError(f"{field}: expected exactly one of 'flow' (a component spec) or 'checkpoint' "
                              f"(a saved model's path), got keys {sorted(term)}")
        if "checkpoint" in term:
            path = term["checkpoint"]
            if not isinstance(path, str) or not path:
                raise ConfigError(f"{field}.checkpoint: expected a path to a saved model, got {path!r}")
            if path not in loaded:
                from diffflow_core.model import load_reference

                loaded[path] = load_reference(path).flow
            return loaded[path]
        if isinstance(term["flow"], Flow):  # from Python, a built flow is a term as it is
            return term["flow"]
        from diffflow_core.config import ComponentSpec
        from diffflow_core.model import build_component

        spec = ComponentSpec.parse(f"{field}.flow", term["flow"])
        flow = build_component("flows", spec, context)
        if context["event_shape"] is not None:
            flow.event_shape = context["event_shape"]
        return flow

    @staticmethod
    def _time_map(field: str, kind: Any, base: Flow, flow: Flow) -> TimeMap:
        if kind not in TIME_MAPS:
            raise ConfigError(f"{field}.time: expected one of {', '.join(TIME_MAPS)}, got {kind!r}")
        base_level, level = noise_level_of(base), noise_level_of(flow)
        if kind == "noise":
            missing = [type(f).__name__ for f, lv in ((base, base_level), (flow, level)) if lv is None]
            if missing:
                raise ConfigError(f"{field}.time: 'noise' maps noise levels, but flow {missing[0]} declares none "
                                  "(noise_level()); expected time = 'identity'")
            return TimeMap(base_level, level)
        if base_level is not None and level is not None:
            s = base.time_grid(_PROBE_STEPS)[1:-1].float()
            if not (torch.allclose(base_level.sigma(s), level.sigma(s), rtol=1e-5)
                    and torch.allclose(base_level.alpha(s), level.alpha(s), rtol=1e-5)):
                raise ConfigError(f"{field}.time: flow {type(flow).__name__} runs on another noise-level convention "
                                  f"than {type(base).__name__}, so 'identity' mixes two clocks; expected "
                                  "time = 'noise'")
        return TimeMap()

    # -- the flow --------------------------------------------------------------------------------------------
    def term_drift(self, i: int, x: Tensor, t: Tensor, context: SamplingContext | None = None,
                   affine: bool = True) -> Tensor:
        """``A_i[v_i](x, s)``: term ``i``'s drift in the composite's coordinates (C1), under its own options
        (``affine=False``: a correction added to another term's drift, :meth:`TimeMap.pull`)."""
        context = attrs.evolve(context if context is not None else SamplingContext(), options=self.options[i])
        return self.maps[i].pull(lambda y, tau: self.terms[i].evaluate_drift(y, tau, context), x, as_time(t, x),
                                 affine)

    def drift(self, x: Tensor, t: Tensor, context: SamplingContext) -> Tensor:
        """``sum_i w_i(s) A_i[v_i](x, s)``; a term of weight 0 at ``s`` is not evaluated."""
        s = as_time(t, x)
        total = torch.zeros_like(x)
        for i, weight in enumerate(self.weights):
            w = weight(s)
            if bool((w != 0).any()):
                total = total + per_sample(w, x) * self.term_drift(i, x, s, context)
        return total

    def diffusion(self, t: Tensor) -> Tensor | float:
        """The first term's ``g(t)``: the composite's noise is its base flow's."""
        return self.terms[0].diffusion(t)

    @property
    def is_stochastic(self) -> bool:
        return self.terms[0].is_stochastic

    def time_grid(self, steps: int) -> Tensor:
        return self.terms[0].time_grid(steps)

    def prior(self, n: int, generator: torch.Generator | None = None, device: torch.device | str | None = None) -> Tensor:
        return self.terms[0].prior(n, generator, device)

    def prior_log_prob(self, x: Tensor) -> Tensor:
        return self.terms[0].prior_log_prob(x)

    def noise_level(self) -> NoiseLevel | None:
        """The base flow's noise level: a composite is on its first term's axis."""
        return noise_level_of(self.terms[0])


class ImpliedDenoiser(nn.Module):
    """The denoiser ``D(x; sigma)`` a probability-flow drift implies, for any flow with a noise level.

    On the EDM axis (``alpha = 1``, time = sigma) every PF-ODE of a Gaussian noise path is
    ``dx/dsigma = (x - D(x; sigma)) / sigma`` (SPEC §2.2 eq 8), so with the flow's PF-ODE drift mapped by (C1)
    onto that axis, ``D = x - sigma A[v](x, sigma)``. For an EDM flow this is its own denoiser; for a rectified
    flow ``D = x_t + (1 - t) f(x_t, t)`` at ``t = 1 / (1 + sigma)``, ``x_t = t x``, Tweedie's mean of its optimum
    (SPEC §4.1). It calls only the flow's :meth:`~Flow.ode_drift` and :meth:`noise_level`.
    """

    def __init__(self, flow: Flow) -> None:
        super().__init__()
        level = noise_level_of(flow)
        if level is None:
            raise ConfigError(f"teacher: flow {type(flow).__name__} declares no noise level (noise_level()), so it "
                              "implies no denoiser; expected a score, velocity or other noise-path flow")
        self.flow = flow
        self.map = TimeMap(_EDM_AXIS, level)

    def denoise(self, x: Tensor, sigma: Tensor) -> Tensor:
        sigma = as_time(sigma, x)
        return x - per_sample(sigma, x) * self.map.pull(self.flow.ode_drift, x, sigma)


#: EDM's convention: time is sigma, no scaling (SPEC §2.6).
_EDM_AXIS = NoiseLevel(alpha=torch.ones_like, sigma=lambda t: t, time_of=lambda sigma: sigma)
