"""diffflow: generative particle models as one thing — particles moved by a drift, optionally smoothed by
a generator, integrated by a solver. Every concrete part is a plugin found through entry points.

Importing this package scans no plugins; registries load them once, on first use.
"""
import importlib

from diffflow_core.config import load_config
from diffflow_core.errors import (CheckpointError, ConfigError, ConflictError, DiffflowError, PluginError,
                                  UnknownComponentError)
from diffflow_core.hookspecs import hookimpl
from diffflow_core.plugins import register, register_plugin, registry

__version__ = "0.1.0"

#: Exports that need torch, imported on first access (PEP 562): a plugin's hook module does
#: ``from diffflow_core import hookimpl`` and must stay cheap to import (``diffflow plugins``, entry-point scans).
_LAZY = {**dict.fromkeys(["Batch", "Evaluator", "Flow", "Objective", "Player", "SamplingContext", "Smoother",
                          "Solution", "Solver", "StepInfo"], "diffflow_core.interfaces"),
         "Model": "diffflow_core.model", "build": "diffflow_core.model",
         "Dataset": "diffflow_core.data", "SampledDataset": "diffflow_core.data"}

__all__ = ["Flow", "Objective", "Smoother", "Solver", "Solution", "SamplingContext", "Evaluator", "Player", "Batch",
           "StepInfo", "hookimpl", "registry",
           "register", "register_plugin", "build", "load_config", "Model", "Dataset", "SampledDataset",
           "DiffflowError", "ConfigError", "ConflictError", "PluginError", "UnknownComponentError", "CheckpointError"]


def __getattr__(name: str):
    """Import a lazy export on first access and keep it on the package."""
    if name not in _LAZY:
        raise AttributeError(f"module 'diffflow_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
