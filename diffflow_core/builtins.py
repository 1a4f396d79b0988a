"""The kernel's own components, registered through the same hooks as any plugin (protected names).

Targets are lazy ``"module:attr"`` strings so loading the registry imports nothing heavy.
"""
from __future__ import annotations

from diffflow_core.hookspecs import hookimpl


@hookimpl
def register_smoothers(register):
    register("identity", "diffflow_core.smoothers:IdentitySmoother", "Free particles: x <- x + dt * v")
    register("generator", "diffflow_core.smoothers:GeneratorSmoother",
             "Int-PM: particles g_theta(z) moved through the generator NTK (SPEC §2.3)")


@hookimpl
def register_networks(register):
    register("mlp", "diffflow_core.networks.mlp:MLP", "MLP with Fourier/sinusoidal time embedding and labels")


@hookimpl
def register_datasets(register):
    """Datasets (diffflow_core.data)."""


@hookimpl
def register_metrics(register):
    """Sample-quality metrics (diffflow_core.metrics)."""
