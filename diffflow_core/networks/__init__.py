"""Supporting networks, chosen by name through the ``networks`` registry.

Every network is built as ``constructor(in_shape=..., out_shape=..., time_conditioned=..., num_classes=..., **params)``
and called as ``net(x, t=None, y=None)``; ``t`` is a noise level or time of shape ``[N]`` (or a scalar).
A constructor may declare ``EXAMPLE``, the constructor arguments of its natural input (e.g.
``{"in_shape": (3, 32, 32)}``), at which :func:`profile` (``diffflow list networks``) measures it; without one
its own defaults are used.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

import torch
from torch import nn

from diffflow_core.errors import ConfigError

__all__ = ["build_network", "profile"]


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


def profile(constructor: Callable[..., nn.Module]) -> dict[str, Any]:
    """Parameter count and forward cost of a network at its ``EXAMPLE`` arguments (or its defaults).

    ``forward_flops`` is one forward pass of a batch of one sample of shape ``input`` (with ``t``, without
    labels) as torch's ``FlopCounterMode`` counts it: convolutions, matrix products and attention, 2 FLOPs per
    multiply-add (so MACs are half of it); normalisations and activations are not counted. The network is
    built and run on the meta device: shapes only, no memory for weights and no arithmetic, so even a large
    network is cheap to measure.
    """
    from torch.utils.flop_counter import FlopCounterMode

    params = dict(getattr(constructor, "EXAMPLE", {}))
    if "in_shape" not in params:
        default = inspect.signature(constructor).parameters.get("in_shape")
        if default is None or default.default is inspect.Parameter.empty:
            raise ConfigError("in_shape: no example input to measure at; declare EXAMPLE = {'in_shape': (C, H, W), "
                              "...} on the network's constructor, or give in_shape a default")
        params["in_shape"] = default.default
    in_shape = tuple(params["in_shape"])
    with torch.device("meta"):
        net = constructor(**params).eval()
        x, t = torch.zeros(1, *in_shape), torch.zeros(1)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(x, t)
    return {"input": list(in_shape), "parameters": sum(p.numel() for p in net.parameters()),
            "forward_flops": counter.get_total_flops()}
