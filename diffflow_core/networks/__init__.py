"""Supporting networks, chosen by name through the ``networks`` registry.

Every network is built as ``constructor(in_shape=..., out_shape=..., time_conditioned=..., num_classes=..., **params)``
and called as ``net(x, t=None, y=None)``; ``t`` is a noise level or time of shape ``[N]`` (or a scalar).
"""
from __future__ import annotations

from typing import Any

from torch import nn

from diffflow_core.errors import ConfigError

__all__ = ["build_network"]


def build_network(spec: str | dict[str, Any] | nn.Module, *, in_shape: tuple[int, ...],
                  out_shape: tuple[int, ...] | None = None, time_conditioned: bool = True,
                  num_classes: int | None = None) -> nn.Module:
    """Build a network from a registry name or ``{"name": ..., **params}``; a module is returned as is."""
    if isinstance(spec, nn.Module):
        return spec
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, dict) or "name" not in spec:
        raise ConfigError(f"network: expected a name or a table with a 'name' key, got {spec!r}")
    from diffflow_core.plugins import registry

    params = dict(spec)
    name = params.pop("name")
    params.setdefault("in_shape", tuple(in_shape))
    params.setdefault("out_shape", tuple(out_shape) if out_shape is not None else tuple(in_shape))
    params.setdefault("time_conditioned", time_conditioned)
    if num_classes is not None:
        params.setdefault("num_classes", num_classes)
    return registry("networks").create(name, **params)
