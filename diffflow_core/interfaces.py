"""The four interfaces every diffflow model is built from (DESIGN.md §1).

A model moves particles ``x`` (a float tensor ``[N, *shape]``) by a **Flow** (a drift ``v(x, t)`` and an
optional diffusion ``g(t)``, i.e. ``dx = v dt + g dW``), possibly through a **Smoother** (identity, a
generator's NTK, a Stein kernel), integrated by a **Solver** over a time grid. An **Objective** fits the
learnable estimators a flow owns (score nets, discriminators, ...) to data.

These classes are the plugin contract: third-party plugins subclass them and nothing else.
"""
from __future__ import annotations

import inspect
import math
from types import MappingProxyType
from typing import Any, Callable, ClassVar, Mapping, Sequence

import attrs
import torch
from torch import Tensor, nn

from diffflow_core import validation as check
from diffflow_core.errors import ConfigError
from diffflow_core.tensors import draw_noise

__all__ = ["Flow", "Objective", "Smoother", "IdentitySmoother", "Solver", "Solution", "SamplingContext", "Evaluator",
           "Player", "Batch", "StepInfo", "check_finite"]

#: Grid size on which :attr:`Flow.is_stochastic` evaluates an undeclared flow's diffusion.
_PROBE_STEPS = 8


@attrs.frozen
class Batch:
    """One training batch: data ``x`` ``[B, *shape]`` and optional integer class labels ``y`` ``[B]``."""

    x: Tensor
    y: Tensor | None = None

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(self.x.to(device), None if self.y is None else self.y.to(device))

    def __len__(self) -> int:
        return self.x.shape[0]


@attrs.frozen
class SamplingContext:
    """What one solve hands down to the flow (DESIGN §1, §7): the random generator every draw of the solve uses,
    the validated sampling options (``label``, ``guidance``, ...) and the index of the current step among
    ``steps``. It is per call and immutable, so a flow keeps no randomness or options as instance state and a
    shared model can sample from two threads."""

    generator: torch.Generator | None = None
    options: Mapping[str, Any] = attrs.field(factory=dict, converter=lambda o: MappingProxyType(dict(o)))
    step: int = 0
    steps: int = 1


class Flow(nn.Module):
    """The drift ``v(x, t)`` of a particle batch and its diffusion coefficient ``g(t)``.

    A flow sees the whole batch, so interacting flows (MMD, KDE scores, SVGD) are natural. It owns the
    learnable estimators it needs, as sub-modules, so ``flow.parameters()`` are what an Objective trains.

    Time conventions are the flow's: :meth:`time_grid` returns the grid a solver integrates over (it may
    decrease, e.g. EDM integrates sigma from sigma_max down to 0) and :meth:`prior` draws the particles at
    ``times[0]``.

    A flow that needs the solve's generator or sampling options declares ``drift(self, x, t, context)``; a plain
    ``drift(self, x, t)`` keeps working. Callers go through :meth:`evaluate_drift`, which passes the
    :class:`SamplingContext` only to drifts that declare it (detected once per class, :attr:`takes_context`).
    """

    #: Shape of one particle (set by ``build`` from the data, or given by the user).
    event_shape: tuple[int, ...] = ()
    #: True when the drift is singular at the last grid point (EDM's sigma = 0): Heun skips its correction there.
    singular_end: ClassVar[bool] = False
    #: True when the drift couples the particles of a batch (KDE scores, MMD witness functions, batch moments).
    #: Such a drift is no vector field on R^d, so the change of variables of SPEC §1.7 gives no density.
    interacting: bool = False
    #: Whether the flow has a non-zero diffusion; ``None`` decides from the values :meth:`diffusion` returns on
    #: the flow's time grid, so an ODE flow that overrides ``diffusion`` to return 0 is an ODE.
    stochastic: ClassVar[bool | None] = None
    #: Names of the sampling options (``Model.sample(**options)``) the flow accepts; see
    #: :meth:`check_sampling_options`.
    sampling_options: ClassVar[tuple[str, ...]] = ()
    #: Whether :meth:`drift` declares a third parameter ``context`` (set for each subclass at class creation).
    takes_context: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.takes_context = "context" in inspect.signature(cls.drift).parameters

    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        """Return ``v(x, t)``, same shape as ``x``; ``t`` is a scalar tensor or shape ``[N]``."""
        raise NotImplementedError(f"{type(self).__name__} must implement drift(x, t)")

    def evaluate_drift(self, x: Tensor, t: Tensor, context: SamplingContext | None = None) -> Tensor:
        """``v(x, t)`` under ``context`` (an empty one when None), whichever signature :meth:`drift` declares."""
        if self.takes_context:
            return self.drift(x, t, context if context is not None else SamplingContext())
        return self.drift(x, t)

    def diffusion(self, t: Tensor) -> Tensor | float:
        """Return ``g(t)`` of ``dx = v dt + g dW``; 0 (the default) makes the flow an ODE."""
        return 0.0

    @property
    def is_stochastic(self) -> bool:
        """Whether :meth:`diffusion` is non-zero somewhere: the :attr:`stochastic` declaration, else the values
        ``diffusion`` returns on :meth:`time_grid`. ODE-only solvers reject stochastic flows."""
        if self.stochastic is not None:
            return self.stochastic
        return any(bool((torch.as_tensor(self.diffusion(t)) != 0).any()) for t in self.time_grid(_PROBE_STEPS))

    def time_grid(self, steps: int, grid: str | Mapping[str, Any] | None = None) -> Tensor:
        """The grid of ``steps + 1`` times for sampling with ``steps`` solver steps: uniform on [0, 1] by
        default, else the registered time grid ``grid`` (a name or ``{"name": ..., **params}``) over [0, 1]
        (:func:`time_grid_over`). A flow whose ``time_grid`` takes no ``grid`` has a fixed grid."""
        check_steps(steps)
        if grid is not None:
            return time_grid_over(grid, steps, 0.0, 1.0, self)
        return torch.linspace(0.0, 1.0, steps + 1)

    def prior(self, n: int, generator: torch.Generator | None = None, device: torch.device | str | None = None) -> Tensor:
        """Initial particles at ``time_grid(.)[0]``: standard normal of :attr:`event_shape` by default, drawn by
        :func:`~diffflow_core.tensors.draw_noise` (a CPU generator seeds particles on a GPU with the numbers it
        gives CPU ones)."""
        device = device if device is not None else _module_device(self)
        return draw_noise((n, *self.event_shape), generator, torch.empty(0, device=device))

    def ode_drift(self, x: Tensor, t: Tensor) -> Tensor:
        """The probability-flow ODE drift (SPEC §1.7, §2.2 eq 8): its flow has the same marginals as this one.

        Defaults to :meth:`drift` for deterministic flows; a stochastic flow that has a PF-ODE (the score
        flow's reverse SDE) overrides it. ``diffflow_core.likelihood.log_prob`` integrates it.
        """
        if self.is_stochastic:
            raise ConfigError(f"flow {type(self).__name__} is stochastic and defines no probability-flow ODE "
                              "(override ode_drift to enable log_prob)")
        return self.evaluate_drift(x, t)

    @property
    def likelihood(self) -> str | None:
        """How a likelihood of this flow's samples is computed: ``"pf-ode"`` when :meth:`ode_drift` is a field on
        R^d whose flow carries the prior to the sample law (SPEC §1.7), ``None`` when there is none (an
        interacting drift, or a stochastic flow without a probability-flow ODE)."""
        if self.interacting or (self.is_stochastic and type(self).ode_drift is Flow.ode_drift):
            return None
        return "pf-ode"

    def prior_log_prob(self, x: Tensor) -> Tensor:
        """``log p(x)`` ``[N]`` of the prior :meth:`prior` draws from (standard normal by default).

        Flows whose prior is not the standard normal (EDM's ``N(0, sigma_max^2 I)``) override it.
        """
        flat = x.flatten(1)
        return -0.5 * (flat.pow(2).sum(1) + flat.shape[1] * math.log(2 * math.pi))

    def check_sampling_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """Validate sampling options (class label, guidance, ...) before any work and return them normalised, as
        :class:`SamplingContext` carries them. Names outside :attr:`sampling_options` are refused."""
        unknown = sorted(set(options) - set(self.sampling_options))
        if unknown:
            accepted = f"expected some of {', '.join(self.sampling_options)}" if self.sampling_options else "none"
            raise ConfigError(f"flow {type(self).__name__} accepts {accepted} as sampling options, got {unknown}")
        return dict(options)

    def forward(self, x: Tensor, t: Tensor, context: SamplingContext | None = None) -> Tensor:
        """nn.Module entry point: :meth:`evaluate_drift`."""
        return self.evaluate_drift(x, t, context)


class Smoother:
    """How a drift moves particles (SPEC §2.3, §2.5): identity, a generator's NTK, or a kernel.

    ``velocity`` is the effective particle velocity ``A[v]``; ``advance`` performs one explicit step of
    size ``dt`` and returns the new particles (for a generator this is an optimiser step on its weights). Both
    hand the solve's :class:`SamplingContext` on to the flow (:meth:`Flow.evaluate_drift`).
    """

    name: ClassVar[str] = "smoother"
    #: True when samples are the solver's solution of the flow from its prior (free particles), so the flow's
    #: probability-flow ODE describes the sample law; a generator's or a kernel's samples are not.
    integrates_flow: ClassVar[bool] = False

    def velocity(self, flow: Flow, x: Tensor, t: Tensor, context: SamplingContext) -> Tensor:
        return flow.evaluate_drift(x, t, context)

    def advance(self, flow: Flow, x: Tensor, t: Tensor, dt: Tensor, context: SamplingContext) -> Tensor:
        return x + dt * self.velocity(flow, x, t, context)


class IdentitySmoother(Smoother):
    """Free particles (a particle model): the velocity is the drift, a step is ``x + dt * v``. The smoother a
    solve uses when given none, so it lives with the contract (``diffflow_core.smoothers`` re-exports it)."""

    name = "identity"
    integrates_flow = True


@attrs.frozen
class Solution:
    """What :meth:`Solver.solve` returns: the final particles ``x``, the number of drift evaluations ``nfe``
    and, with ``record=True``, the ``trajectory`` ``[len(times), *x.shape]`` and its ``times``."""

    x: Tensor
    nfe: int
    trajectory: Tensor | None = None
    times: Tensor | None = None


@attrs.define(eq=False)
class Evaluator:
    """The drift of one solve as a solver's :meth:`Solver.step` sees it: bound to the flow, the smoother and the
    current step's :class:`SamplingContext`, and counting every evaluation. :meth:`Solver.solve` creates one per
    call, so the count (and a multistep solver's :attr:`memory`) never lives on a shared solver."""

    flow: Flow
    smoother: Smoother
    context: SamplingContext
    nfe: int = 0
    #: Per-solve scratch space (a multistep solver's past velocities); discarded when the solve returns.
    memory: dict[str, Any] = attrs.field(factory=dict)

    @property
    def generator(self) -> torch.Generator | None:
        return self.context.generator

    @property
    def last(self) -> bool:
        """Whether the current step is the last of the grid."""
        return self.context.step == self.context.steps - 1

    def velocity(self, x: Tensor, t: Tensor) -> Tensor:
        """One evaluation of the smoothed drift ``A[v](x, t)``."""
        self.nfe += 1
        return self.smoother.velocity(self.flow, x, t, self.context)

    def advance(self, x: Tensor, t: Tensor, dt: Tensor) -> Tensor:
        """One explicit step of size ``dt`` through the smoother (one evaluation)."""
        self.nfe += 1
        return self.smoother.advance(self.flow, x, t, dt, self.context)

    def call(self, estimator: Callable[..., Tensor], *args: Any, **kwargs: Any) -> Tensor:
        """One evaluation of a flow's own estimator that a family sampler calls (a score, an ancestral step)."""
        self.nfe += 1
        return estimator(*args, **kwargs)


class Solver:
    """Integrates a flow over a time grid (DESIGN §1 contract).

    Subclasses declare :attr:`order`, :attr:`evaluations_per_step` (or override :meth:`nfe` when a grid's count
    is not a multiple of its steps), :attr:`stochastic` (whether they handle a non-zero diffusion) and
    :attr:`requires` (what they call on a flow), and implement :meth:`step` through the :class:`Evaluator` they
    are handed. :meth:`solve` refuses a flow the solver does not fit before any work, loops over the grid, counts
    every evaluation, stops on NaN/Inf naming the step and time, and records or reports each step. A solver keeps
    no per-call state, so one instance may serve several solves at once.
    """

    order: ClassVar[int] = 1
    evaluations_per_step: ClassVar[int] = 1
    stochastic: ClassVar[bool] = False
    #: Attributes the solver calls on a flow beyond the contract (e.g. ``("ancestral_step",)``).
    requires: ClassVar[tuple[str, ...]] = ()
    #: Whether the solver chooses its own steps inside each grid interval to meet a tolerance (``rtol``/``atol``,
    #: an embedded Runge-Kutta pair): it still passes through every grid point, but its evaluations are known only
    #: after the solve (``Solution.nfe``), so :meth:`nfe` and :meth:`steps_for` refuse to answer.
    adaptive: bool = False

    def _refuse_budget(self) -> None:
        if self.adaptive:
            raise ConfigError(f"nfe: solver {type(self).__name__} is adaptive, its evaluations follow from rtol/atol "
                              "and are known only after the solve; expected rtol/atol (--set solver.rtol=...) "
                              "instead of an NFE budget")

    def nfe(self, steps: int, flow: Flow) -> int:
        """The number of evaluations a grid of ``steps`` steps costs on ``flow`` (an adaptive solver refuses)."""
        self._refuse_budget()
        return self.evaluations_per_step * steps

    def steps_for(self, nfe: int, flow: Flow) -> int:
        """The most steps whose :meth:`nfe` fits in a budget of ``nfe`` evaluations (0 when not even one); an
        adaptive solver refuses with a ConfigError naming rtol/atol."""
        self._refuse_budget()
        steps = nfe // max(1, self.evaluations_per_step)  # nfe(steps) <= evaluations_per_step * steps
        while self.nfe(steps + 1, flow) <= nfe:
            steps += 1
        while steps > 0 and self.nfe(steps, flow) > nfe:
            steps -= 1
        return steps

    def check(self, flow: Flow) -> None:
        """Refuse, with a one-line ConfigError, a flow this solver cannot integrate."""
        name = type(self).__name__
        if flow.is_stochastic and not self.stochastic:
            raise ConfigError(
                f"solver {name} integrates ODEs only, but flow {type(flow).__name__} has a "
                "non-zero diffusion; use a stochastic solver such as 'euler-maruyama'")
        missing = [attr for attr in self.requires if not hasattr(flow, attr)]
        if missing:
            raise ConfigError(f"solver {name}: needs a flow with {', '.join(self.requires)}; flow "
                              f"{type(flow).__name__} has no {', '.join(missing)}")

    def step(self, drift: Evaluator, x: Tensor, t0: Tensor, t1: Tensor) -> Tensor:
        """Advance ``x`` from ``t0`` to ``t1``, evaluating only through ``drift``."""
        raise NotImplementedError(f"{type(self).__name__} must implement step(drift, x, t0, t1)")

    def solve(self, flow: Flow, x0: Tensor, times: Tensor | Sequence[float], *,
              smoother: Smoother | None = None, context: SamplingContext | None = None,
              generator: torch.Generator | None = None, callback: Callable[[StepInfo], None] | None = None,
              record: bool = False) -> Solution:
        """Integrate ``flow`` from ``times[0]`` to ``times[-1]`` starting at ``x0``.

        ``context`` carries the generator and sampling options (validated by ``flow.check_sampling_options``)
        down to the flow; ``generator`` alone is short for ``SamplingContext(generator)``. With ``record=True`` the solution holds the trajectory and its times.
        """
        if context is not None and generator is not None:
            raise ConfigError("generator: give it inside context, or pass no context")
        times = torch.as_tensor(times, dtype=x0.dtype, device=x0.device)
        if times.ndim != 1 or times.numel() < 2:
            raise ConfigError(f"times: expected a 1-D grid of at least 2 points, got shape {tuple(times.shape)}")
        diffs = times[1:] - times[:-1]
        if not (bool((diffs > 0).all()) or bool((diffs < 0).all())):
            raise ConfigError("times: expected a strictly monotone grid (increasing or decreasing)")
        self.check(flow)
        check_finite(x0, "x0")
        steps = times.numel() - 1
        context = context if context is not None else SamplingContext(generator)
        context = attrs.evolve(context, options=flow.check_sampling_options(context.options), steps=steps)
        drift = Evaluator(flow, smoother if smoother is not None else IdentitySmoother(), context)
        trajectory = [x0.detach().clone()] if record else None
        x = x0
        for i in range(steps):
            t0, t1 = times[i], times[i + 1]
            drift.context = attrs.evolve(context, step=i)
            x = self.step(drift, x, t0, t1)
            check_finite(x, f"particles after step {i + 1}/{steps} (t={float(t1):.6g})")
            if trajectory is not None:
                trajectory.append(x.detach().clone())
            if callback is not None:
                callback(StepInfo(i=i, t=t1, x=x, nfe=drift.nfe))
        return Solution(x, drift.nfe, torch.stack(trajectory) if record else None, times if record else None)


@attrs.frozen
class StepInfo:
    """What a per-step callback receives after step ``i`` (0-based), at time ``t``."""

    i: int
    t: Tensor
    x: Tensor
    nfe: int


@attrs.define
class Player:
    """One optimised party of a training iteration: its parameters and its loss.

    Single-network families have one player; GANs have a discriminator and a generator. ``every`` makes a
    player update only on iterations divisible by it (Score GAN's generator), ``repeats`` several times per
    iteration (several discriminator steps). ``groups`` splits ``parameters`` into optimiser groups with their
    own settings, ``({"params": [...], "lr": ..., "betas": ...}, ...)`` as torch optimisers take them (missing
    settings fall back to the player's, then the training config's): one loss whose single backward trains
    several parties, each at its own learning rate (simultaneous GAN updates).
    """

    name: str
    parameters: list[nn.Parameter]
    loss: Callable[[Batch, torch.Generator | None], Tensor]
    lr: float | None = None
    betas: tuple[float, float] | None = None
    repeats: int = 1
    every: int = 1
    groups: tuple[dict[str, Any], ...] = ()

    def __attrs_post_init__(self) -> None:
        grouped = [p for group in self.groups for p in group["params"]]
        if self.groups and sorted(map(id, grouped)) != sorted(map(id, self.parameters)):
            raise ConfigError(f"groups: player {self.name!r}'s groups must partition its parameters "
                              f"({len(grouped)} grouped, {len(self.parameters)} parameters)")


class Objective:
    """The loss that fits a flow's estimators to data (and, where needed, to current particles).

    Simple objectives implement :meth:`loss`; multi-player ones (GANs) override :meth:`players`.
    """

    def loss(self, flow: Flow, batch: Batch, generator: torch.Generator | None = None) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement loss(flow, batch, generator)")

    def prepare(self, model) -> None:
        """Work that precedes training (a Score GAN's data score is trained first): the trainer runs it as its
        own phase, timed and with its own progress bar, before :meth:`players`. Default: nothing."""

    def players(self, model) -> list[Player]:
        """The parties the trainer optimises; default: one player training all of ``model.flow``."""
        params = [p for p in model.flow.parameters() if p.requires_grad]
        return [Player("model", params, lambda batch, gen: self.loss(model.flow, batch, gen))]

    def unaveraged(self, model) -> list[nn.Parameter]:
        """Trained parameters that sampling never reads (a GAN's discriminator, a Score GAN's generated score):
        the trainer's EMA skips them. Default: none."""
        return []


def check_steps(steps: int) -> int:
    """Step counts are always explicit and positive (no silent single step); returns them as an ``int``."""
    return check.positive_int("steps", steps, expected="a positive integer number of solver steps")


def resolve_grid(grid: str | Mapping[str, Any]) -> tuple[str, Callable[..., Tensor], dict[str, Any]]:
    """A grid spec (a registered name or ``{"name": ..., **params}``) as its name, function and parameters.

    The function's ``space`` attribute says what it places: ``"time"`` (the default) is a time grid called
    ``grid(steps, start=, end=, dtype=, **params)``; ``"sigma"`` gives noise levels, called ``grid(steps,
    sigma_min=, sigma_max=, append_zero=, dtype=, **params)``, which only a flow with a noise schedule can map to
    its time. Unknown parameters are refused here, before any work."""
    from diffflow_core.plugins import registry
    from diffflow_core.registry import check_params

    if isinstance(grid, Mapping):
        if not isinstance(grid.get("name"), str):
            raise ConfigError(f"grid: expected a grid name or a table with a 'name', got {dict(grid)!r}")
        name, params = grid["name"], {k: v for k, v in grid.items() if k != "name"}
    elif isinstance(grid, str):
        name, params = grid, {}
    else:
        raise ConfigError(f"grid: expected a grid name or a table with a 'name', got {grid!r}")
    function = registry("grids").get(name)
    check_params(f"grid '{name}'", function, params)
    return name, function, params


def time_grid_over(grid: str | Mapping[str, Any], steps: int, start: float, end: float, flow: Flow,
                   dtype: torch.dtype = torch.float32) -> Tensor:
    """``steps + 1`` times from ``start`` to ``end`` on the registered time grid ``grid``; a noise-level grid
    is refused in one line, since ``flow`` (named in the message) has no noise schedule to map it by."""
    name, function, params = resolve_grid(grid)
    if getattr(function, "space", "time") != "time":
        raise ConfigError(f"grid: '{name}' places noise levels (sigma), which flow {type(flow).__name__} has no "
                          "noise schedule to map to its time; expected a time grid such as uniform or power")
    return torch.as_tensor(function(steps, start=start, end=end, dtype=dtype, **params))


def check_finite(x: Tensor, what: str) -> None:
    """Raise ``FloatingPointError`` naming ``what`` when ``x`` holds NaN or Inf."""
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise FloatingPointError(f"{what}: {bad} non-finite value(s) (NaN/Inf)")


def _module_device(module: nn.Module) -> torch.device:
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")


def as_time(t: Tensor | float, like: Tensor) -> Tensor:
    """A time as a ``[N]`` tensor matching the batch ``like`` (broadcasting scalars)."""
    t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    return t.expand(like.shape[0]) if t.ndim == 0 else t

