"""A built model: the four parts plus data, training and sampling in one object."""
from __future__ import annotations

import functools
import inspect
import math
import os
from typing import Any, Callable

import attrs
import torch
from torch import Tensor, nn

from diffflow_core.config import ComponentSpec, ModelConfig, load_config
from diffflow_core import references, validation as check
from diffflow_core.data import Dataset, load_dataset
from diffflow_core.errors import ConfigError, format_bytes
from diffflow_core.interfaces import (Flow, Objective, SamplingContext, Smoother, Solver, StepInfo, check_steps)

__all__ = ["Model", "Samples", "build", "build_component", "make_generator", "sample_batch"]


@attrs.frozen
class Samples:
    """Samples in model space, the number of drift evaluations spent, and the optional trajectory."""

    x: Tensor
    nfe: int
    trajectory: Tensor | None = None
    times: Tensor | None = None


def make_generator(seed: int | torch.Generator | None, device: torch.device | str = "cpu") -> torch.Generator | None:
    """A ``torch.Generator`` from a seed (or ``None``): the same seed gives the same draws."""
    if seed is None or isinstance(seed, torch.Generator):
        return seed
    return torch.Generator(device=device).manual_seed(int(seed))


#: Values per particle tensor of one CPU solve (:func:`sample_batch`): 64 MNIST images, 21 CIFAR-10 images.
CPU_SAMPLE_VALUES = 2**16


def sample_batch(n: int, event_shape: tuple[int, ...] | None, device: torch.device | str) -> int:
    """The automatic particles per solve: all ``n`` off the CPU; on the CPU at most ``CPU_SAMPLE_VALUES`` values
    per particle tensor, so that a network's activations stay small enough for the allocator to reuse
    (docs/benchmarks/engine.md measures it)."""
    if torch.device(device).type != "cpu":
        return n
    return max(1, min(n, CPU_SAMPLE_VALUES // max(1, math.prod(event_shape or ()))))


def build_component(kind: str, spec: Any, context: dict[str, Any]) -> Any:
    """Create component ``spec`` of ``kind``, passing context values (``event_shape``, ``data``, ...) it accepts."""
    from diffflow_core.plugins import registry

    params = dict(spec.params)
    target = registry(kind).get(spec.name)
    try:
        signature = inspect.signature(target)
        accepted = signature.parameters
        takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in accepted.values())
    except (TypeError, ValueError):
        accepted, takes_kwargs = {}, False
    for key, value in context.items():
        if key not in params and (key in accepted or takes_kwargs) and value is not None:
            params[key] = value
    return registry(kind).create(spec.name, **params)


class Model(nn.Module):
    """Flow + objective + smoother + solver, trained on data and sampled at an explicit number of steps."""

    def __init__(self, flow: Flow, objective: Objective | None = None, smoother: Smoother | None = None,
                 solver: Solver | None = None, config: ModelConfig | None = None, data: Dataset | None = None) -> None:
        super().__init__()
        from diffflow_core.smoothers import IdentitySmoother

        self.flow = flow
        self.objective = objective
        self.smoother = smoother if smoother is not None else IdentitySmoother()
        if isinstance(self.smoother, nn.Module):
            self.add_module("smoother_module", self.smoother)
        if solver is None:
            from diffflow_core.plugins import registry

            solver = registry("solvers").create("euler")
        self.solver = solver
        self.config = config
        self.data = data
        #: The saved models its components refer to by path, as :mod:`diffflow_core.references` records them.
        self.references: dict[str, dict[str, Any]] = {}

    @classmethod
    def from_config(cls, config: ModelConfig, *, data: Any = None,
                    event_shape: tuple[int, ...] | None = None) -> "Model":
        """Create every component ``config`` names and assemble them (:func:`build` and :meth:`load` end here).

        ``data`` (a name, an array, a path or a Dataset) replaces the config's data and is recorded in
        ``config.data`` when it has a name or a path; components receive ``event_shape``, ``data`` and
        ``num_classes`` when their constructors accept them. Components are built under ``train.seed`` (in a
        forked random state: the caller's is untouched), so the same config gives the same initial weights.
        """
        dataset: Dataset | None = None
        if data is not None:
            dataset = load_dataset(data)
            if dataset.path is not None:  # a file, by absolute path: the config rebuilds from any working directory
                if config.data is None or config.data.name != dataset.path:  # (stored data keep their params)
                    config.data = ComponentSpec(dataset.path)
            elif isinstance(data, str):
                config.data = ComponentSpec(data)
            elif type(dataset) is Dataset:  # in-memory data have no name to record (checkpoints store small data)
                config.data = None
        elif config.data is not None:
            dataset = load_dataset(config.data.name, **config.data.params)
            if dataset.path is not None:
                config.data.name = dataset.path
        if event_shape is not None and dataset is not None and tuple(event_shape) != dataset.event_shape:
            raise ConfigError(f"event_shape: {tuple(event_shape)} does not match the data '{dataset.name}', whose "
                              f"rows have shape {dataset.event_shape}; omit event_shape or give data of that shape")
        shape = tuple(event_shape) if event_shape is not None else (dataset.event_shape if dataset else None)
        context: dict[str, Any] = {"event_shape": shape, "data": dataset,
                                   "num_classes": dataset.num_classes if dataset is not None else None}
        with torch.random.fork_rng(devices=[]), references.collecting() as referenced:
            torch.manual_seed(config.train.seed)
            flow = build_component("flows", config.flow, context)
            if shape is not None:
                flow.event_shape = shape
            context["flow"] = flow
            objective = build_component("objectives", config.objective, context) if config.objective else None
            smoother = build_component("smoothers", config.smoother, context)
            solver = build_component("solvers", config.solver, context)
        model = cls(flow, objective, smoother, solver, config=config, data=dataset)
        model.references = referenced
        return model

    @property
    def device(self) -> torch.device:
        """Where the model lives: its first parameter's device, else its first buffer's (an MMD flow holds only
        its target samples), else the device of the last :meth:`to` (a KDE flow holds no tensor), else the CPU."""
        for tensor in self.parameters():
            return tensor.device
        for tensor in self.buffers():
            return tensor.device
        return self.__dict__.get("_device", torch.device("cpu"))

    def to(self, *args: Any, **kwargs: Any) -> "Model":
        device = torch._C._nn._parse_to(*args, **kwargs)[0]
        if device is not None:
            self.__dict__["_device"] = torch.device(device)
        return super().to(*args, **kwargs)

    # -- sampling ------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int | None = None, steps: int | None = None, *, seed: int | torch.Generator | None = 0,
               solver: str | Solver | None = None, grid: str | dict[str, Any] | None = None, record: bool = False,
               callback: Callable[[StepInfo], None] | None = None, progress: str | None = None,
               batch: int | None = None, **flow_options: Any) -> Samples:
        """Draw ``n`` samples with ``steps`` solver steps (defaults from the config); NFE is reported.

        A generator smoother samples with one network pass (1 NFE); otherwise particles start from the
        flow's prior and are integrated over ``flow.time_grid(steps)``, or ``flow.time_grid(steps, grid=grid)`` for
        a registered grid by name (``grid="exponential"``) or ``{"name": ..., **params}``. Extra keyword options
        (e.g. ``label=3, guidance=2.0``) are validated by ``flow.check_sampling_options`` and reach the flow in the
        solve's :class:`SamplingContext`, with ``seed``'s generator. ``progress`` names a progress bar over the solver
        steps (None: no bar).

        ``batch`` particles are solved together (default ``sample.batch``, else :func:`sample_batch`'s choice):
        the prior is drawn for all ``n`` first, then solved ``batch`` at a time, so a deterministic solve gives the
        same samples at any ``batch``; recorded trajectories (at the grid's times, for every solver) are joined.
        Large image batches are slow on a CPU (each activation a fresh mapping of pages:
        docs/benchmarks/engine.md), not on a GPU. An interacting flow, a generator or kernel smoother and a step
        ``callback`` need all particles in one solve; an explicit smaller ``batch`` with them is refused. The
        reported ``nfe`` is the largest of the chunks' (they differ only under an adaptive solver).
        """
        n = n if n is not None else (self.config.sample.n if self.config else 2000)
        steps = steps if steps is not None else (self.config.sample.steps if self.config else None)
        n = check.positive_int("n", n, expected="a positive number of samples")
        self.check_sample_memory(n, steps if check.is_integer(steps) else None, record=record)
        batch = self.solve_batch(n, batch, observed=callback is not None)
        generator = make_generator(seed, self.device)
        if hasattr(self.smoother, "sample") and not flow_options:
            return Samples(self.smoother.sample(n, generator), nfe=1)
        if steps is None:
            raise ConfigError("steps: sampling needs an explicit number of solver steps")
        steps = check_steps(steps)
        solver = self._solver(solver)
        times = self.times(steps, grid).to(self.device)
        from diffflow_core.progress import solve_progress

        x0 = self.flow.prior(n, generator=generator, device=self.device)
        chunks = range(0, n, batch)
        with solve_progress(steps * len(chunks), progress, callback) as on_step:  # solve checks flow and options
            solutions = [solver.solve(self.flow, x0[i:i + batch], times, smoother=self.smoother,
                                      context=SamplingContext(generator, flow_options), callback=on_step,
                                      record=record) for i in chunks]
        if len(solutions) == 1:
            (solution,) = solutions
            return Samples(solution.x, solution.nfe, solution.trajectory, solution.times)
        trajectory = torch.cat([s.trajectory for s in solutions], dim=1) if record else None
        return Samples(torch.cat([s.x for s in solutions]), max(s.nfe for s in solutions), trajectory,
                       solutions[0].times)

    def solve_batch(self, n: int, batch: int | None = None, observed: bool = False) -> int:
        """The particles per solve of :meth:`sample`: ``batch``, else ``sample.batch``, else :func:`sample_batch`;
        all ``n`` where the particles move together (an interacting flow, a generator or kernel smoother) or are
        ``observed`` together (a step callback), where an explicit smaller ``batch`` is refused (``diffflow run``
        asks before training)."""
        field = "batch"
        if batch is None and self.config is not None and self.config.sample.batch is not None:
            batch, field = self.config.sample.batch, "sample.batch"
        if self.flow.interacting:
            why = f"flow {type(self.flow).__name__}'s drift couples the particles of a batch"
        elif not self.smoother.integrates_flow:
            why = f"smoother {type(self.smoother).__name__} moves all particles together"
        else:
            why = "a step callback sees all particles at once" if observed else ""
        if batch is None:
            return n if why else sample_batch(n, self.flow.event_shape, self.device)
        batch = check.positive_int(field, batch, expected="a positive number of particles per solve")
        if batch < n and why:
            raise ConfigError(f"{field}={batch}: {why}; expected no {field} (all {n} particles in one solve)")
        return min(batch, n)

    def times(self, steps: int, grid: str | dict[str, Any] | None = None) -> Tensor:
        """The flow's sampling grid of ``steps`` steps, on the registered ``grid`` when given; a flow whose
        ``time_grid`` takes no ``grid`` is refused in one line."""
        if grid is None:
            return self.flow.time_grid(steps)
        if "grid" not in inspect.signature(self.flow.time_grid).parameters:
            raise ConfigError(f"grid: flow {type(self.flow).__name__} samples on its own fixed time grid; "
                              "expected no grid")
        return self.flow.time_grid(steps, grid=grid)

    def check_sample_memory(self, n: int, steps: int | None = None, record: bool = False) -> None:
        """Refuse (a one-line ConfigError) a draw whose particles alone cannot fit in this machine's memory:
        ``n * prod(event_shape)`` float32 values times the solver's working copies, plus one copy per time
        point when the trajectory is recorded; compared with the device's total memory (RAM, or the GPU's)."""
        shape = tuple(self.flow.event_shape or getattr(self.data, "event_shape", ()) or ())
        copies = _SOLVER_COPIES + ((steps + 1) if record and steps else 0)
        need = int(n) * math.prod(shape) * 4 * copies + ((steps + 1) * 4 if steps else 0)  # + the time grid
        have, where = _device_memory(self.device)
        if have and need > have:
            recorded = f" and a recorded trajectory of {steps + 1} time points" if record and steps else ""
            raise ConfigError(f"n={n}, steps={steps}: {n} samples of shape {shape} need at least {format_bytes(need)} "
                              f"of memory ({_SOLVER_COPIES} working copies of the particles{recorded}), more than "
                              f"the {format_bytes(have)} of {where}; expected fewer samples (--n) or solver steps (--nfe)")

    def _solver(self, solver: str | Solver | None) -> Solver:
        if solver is None:
            return self.solver
        if isinstance(solver, Solver):
            return solver
        from diffflow_core.plugins import registry

        return registry("solvers").create(solver)

    # -- training ------------------------------------------------------------------------------------
    def fit(self, data: Any = None, **train_overrides: Any):
        """Train the flow's estimators on ``data`` (default: the config's) with the shared training engine."""
        from diffflow_core.training import Trainer

        if data is not None:
            self.data = load_dataset(data)
        if self.data is None:
            raise ConfigError("data: fit() needs data (a dataset name, a .npy path, an array or a tensor)")
        if self.objective is None:
            raise ConfigError(f"objective: flow '{type(self.flow).__name__}' has nothing to train "
                              "(the config names no objective)")
        return Trainer(self, **train_overrides).fit(self.data)

    # -- likelihood ----------------------------------------------------------------------------------
    def log_prob(self, x: Tensor, **options: Any):
        """``log p(x)`` through the flow's probability-flow ODE; see :func:`diffflow_core.likelihood.log_prob`."""
        from diffflow_core.likelihood import log_prob

        return log_prob(self, x, **options)

    # -- persistence ---------------------------------------------------------------------------------
    def save(self, path: str) -> None:
        from diffflow_core.checkpoint import save_model

        save_model(self, path)

    @classmethod
    def rebuild(cls, payload: dict[str, Any]) -> "Model":
        """The model a checkpoint's ``payload`` (or a reference record) describes, with fresh weights: its config
        built with its small array data, if stored, and the saved models it refers to rebuilt from its records."""
        stored = payload.get("data")  # small array data travel with the model (Dataset.state)
        with references.stored(payload.get("references")):
            return cls.from_config(load_config(payload["config"]), event_shape=tuple(payload["event_shape"]),
                                   data=Dataset.from_state(stored) if stored is not None else None)

    @classmethod
    def load(cls, path: str, map_location: str | torch.device = "cpu") -> "Model":
        """The model a checkpoint holds, on the device ``map_location`` names: rebuilt from the stored config on
        the CPU (with the stored small data, if any), the weights copied in, then moved."""
        from diffflow_core.checkpoint import load_state, read_model_checkpoint

        payload = read_model_checkpoint(path, map_location)
        model = cls.rebuild(payload)
        load_state(model, payload["state_dict"], str(path))
        if isinstance(map_location, (str, torch.device)):
            model.to(map_location)
        return model


def load_reference(path: str) -> Model:
    """The saved model at ``path`` for a component that refers to it (:mod:`diffflow_core.references`): with its
    weights from the file, or, while a checkpoint that recorded ``path`` is rebuilt, its architecture alone from
    the record (the weights then come from that checkpoint). The record is collected for the model being built."""
    from diffflow_core.checkpoint import load_state, read_model_checkpoint

    entry = references.lookup(path)
    if entry is not None:
        model = Model.rebuild(entry)
    else:
        payload = read_model_checkpoint(path)
        model = Model.rebuild(payload)
        load_state(model, payload["state_dict"], str(path))
        entry = references.record(payload)
    references.note(path, entry)
    return model


def build(config: str | os.PathLike | dict[str, Any] | ModelConfig | None = None, *, preset: str | None = None,
          data: Any = None, event_shape: tuple[int, ...] | None = None, device: str | torch.device | None = None,
          **overrides: Any) -> Model:
    """Build a :class:`Model` by component names.

    ``config`` is a TOML path, a dict or a :class:`ModelConfig`; ``preset`` names a registered recipe that
    ``config`` and ``overrides`` (section=value keyword arguments) are merged onto; :meth:`Model.from_config`
    then creates the components (``data``, a name, an array, a path or a Dataset, overrides the config's data;
    the same config gives the same initial weights). The model is moved to ``device`` (default: where it was
    built, the CPU).
    """
    if isinstance(config, ModelConfig) and not (preset or overrides):
        cfg = config
    else:  # a ModelConfig with overrides is merged like a dict, never silently ignoring them
        source = config.as_dict() if isinstance(config, ModelConfig) else config
        cfg = load_config(source, preset=preset, overrides=overrides)
    model = Model.from_config(cfg, data=data, event_shape=event_shape)
    return model.to(device) if device is not None else model


#: working copies of the particles a solver holds at once (state, drift, a Heun predictor and its drift)
_SOLVER_COPIES = 4


@functools.lru_cache(maxsize=None)
def _device_memory(device: torch.device) -> tuple[int, str]:
    """Total memory of ``device`` in bytes and its name (0 when unknown)."""
    if device.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(device)[1]), f"GPU memory on {device}"
        except (RuntimeError, AssertionError):
            return 0, str(device)
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")), "RAM on this machine"
    except (ValueError, OSError, AttributeError):
        return 0, "RAM"
