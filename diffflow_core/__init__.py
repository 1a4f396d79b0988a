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


def __getattr__(name):  # build/Model pull in the config machinery only when used
    if name == "build":
        from diffflow_core.build import build

        return build
    if name == "load_config":
        from diffflow_core.config import load_config

        return load_config
    if name == "Model":
        from diffflow_core.model import Model

        return Model
    raise AttributeError(f"module 'diffflow_core' has no attribute {name!r}")
