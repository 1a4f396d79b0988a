"""Hook specifications: one hook per component kind, each receiving a ``register`` callback.

A plugin module implements any of these with ``@diffflow_core.hookimpl`` and calls
``register(name, target, summary=...)``; ``target`` is a class/function (a mapping for presets) or a lazy
``"module:attr"`` string (imported only when the component is used, which keeps plugin import cheap). Targets
are checked when registered: a wrong type or a malformed string is reported and skipped, and in strict mode
lazy strings are imported at once, so that a registration that could only fail later fails at load.
"""
from __future__ import annotations

import pluggy

PROJECT = "diffflow"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

#: Component kinds, each with its hook ``register_<kind>``.
KINDS = ("flows", "objectives", "smoothers", "solvers", "grids", "networks", "datasets", "presets", "metrics")


@hookspec
def register_flows(register):
    """Register Flow classes (drifts)."""


@hookspec
def register_objectives(register):
    """Register Objective classes (losses)."""


@hookspec
def register_smoothers(register):
    """Register Smoother classes (identity, generator, stein, ...)."""


@hookspec
def register_solvers(register):
    """Register Solver classes."""


@hookspec
def register_grids(register):
    """Register time-grid functions ``grid(steps, **params) -> Tensor``."""


@hookspec
def register_networks(register):
    """Register network constructors (MLP, U-Net, DCGAN bodies, ...)."""


@hookspec
def register_datasets(register):
    """Register dataset constructors."""


@hookspec
def register_presets(register):
    """Register presets: named model configs (dicts) users start from and override."""


@hookspec
def register_metrics(register):
    """Register sample-quality metrics ``metric(samples, reference, **params) -> result``."""
