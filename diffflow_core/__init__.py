"""diffflow: generative particle models as one thing — particles moved by a drift, optionally smoothed by
a generator, integrated by a solver. Every concrete part is a plugin found through entry points.

Importing this package scans no plugins; registries load them once, on first use.
"""
from diffflow_core.errors import (CheckpointError, ConfigError, ConflictError, DiffflowError, PluginError,
                                  UnknownComponentError)
from diffflow_core.hookspecs import hookimpl
from diffflow_core.interfaces import Batch, Flow, Objective, Player, Smoother, Solver, StepInfo
from diffflow_core.plugins import register, register_plugin, registry

__version__ = "0.1.0"

__all__ = ["Flow", "Objective", "Smoother", "Solver", "Player", "Batch", "StepInfo", "hookimpl", "registry",
           "register", "register_plugin", "build", "load_config", "Model", "DiffflowError", "ConfigError",
           "ConflictError", "PluginError", "UnknownComponentError", "CheckpointError"]


# Imported eagerly (cheap: no plugin scan) because a lazily imported submodule ``diffflow_core.build`` would
# replace the function ``diffflow_core.build`` on the package once anything imported the submodule.
from diffflow_core.build import build  # noqa: E402
from diffflow_core.config import load_config  # noqa: E402
from diffflow_core.model import Model  # noqa: E402
