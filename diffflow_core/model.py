"""A built model: the four parts plus data, training and sampling in one object."""
from __future__ import annotations

import inspect
import math
import os
from typing import Any, Callable

import attrs
import torch
from torch import Tensor, nn

from diffflow_core.config import ModelConfig
from diffflow_core.data import Dataset
from diffflow_core.errors import ConfigError
from diffflow_core.interfaces import Flow, Objective, Smoother, Solver, StepInfo, check_steps, is_count

__all__ = ["Model", "Samples", "build_component", "make_generator"]


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
               solver: str | Solver | None = None, record: bool = False,
               callback: Callable[[StepInfo], None] | None = None, progress: str | None = None,
               **flow_options: Any) -> Samples:
        """Draw ``n`` samples with ``steps`` solver steps (defaults from the config); NFE is reported.

        A generator smoother samples with one network pass (1 NFE); otherwise particles start from the
        flow's prior and are integrated over ``flow.time_grid(steps)``. Extra keyword options go to the
        flow's ``sampling`` context (e.g. ``label=3, guidance=2.0``) when it supports one. ``progress``
        names a progress bar over the solver steps (None: no bar).
        """
        n = n if n is not None else (self.config.sample.n if self.config else 2000)
        steps = steps if steps is not None else (self.config.sample.steps if self.config else None)
        if not is_count(n) or n < 1:
            raise ConfigError(f"n: expected a positive number of samples, got {n!r}")
        n = int(n)
        self.check_sample_memory(n, steps if is_count(steps) else None, record=record)
        generator = make_generator(seed, self.device)
        if hasattr(self.smoother, "sample") and not flow_options:
            return Samples(self.smoother.sample(n, generator), nfe=1)
        if steps is None:
            raise ConfigError("steps: sampling needs an explicit number of solver steps")
        steps = check_steps(steps)
        solver = self._solver(solver)
        times = self.flow.time_grid(steps).to(self.device)
        context = self.flow.sampling(**flow_options) if flow_options else _null_context()
        from diffflow_core.progress import progress_bar, step_callback

        bar = progress_bar(steps, progress, enabled=progress is not None)
        with context:
            x0 = self.flow.prior(n, generator=generator, device=self.device)
            try:
                x = solver.solve(self.flow, x0, times, smoother=self.smoother, generator=generator,
                                 callback=step_callback(bar, callback), record=record)
            finally:
                if bar is not None:
                    bar.close()
        return Samples(x, solver.nfe, solver.trajectory if record else None, times if record else None)

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
            raise ConfigError(f"n={n}, steps={steps}: {n} samples of shape {shape} need at least {_bytes(need)} "
                              f"of memory ({_SOLVER_COPIES} working copies of the particles{recorded}), more than "
                              f"the {_bytes(have)} of {where}; expected fewer samples (--n) or solver steps (--nfe)")

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
            from diffflow_core.data import load_dataset

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
    def load(cls, path: str, map_location: str | torch.device = "cpu") -> "Model":
        from diffflow_core.checkpoint import load_model

        return load_model(path, map_location=map_location)


#: working copies of the particles a solver holds at once (state, drift, a Heun predictor and its drift)
_SOLVER_COPIES = 4


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


def _bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if count < 1024 or unit == "EiB":
            return f"{count:.3g} {unit}"
        count /= 1024
    return f"{count:.3g} EiB"


class _null_context:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None
