"""Speed options that change how the networks run, not what they compute: ``train.compile`` (``torch.compile``)
and ``train.channels_last`` (the channels-last memory layout of image networks and batches).

Both apply for the duration of one ``fit`` (:func:`accelerated`) and are undone after it, so the model a fit
returns samples, saves and loads as an eager, contiguous one, and its ``state_dict`` keys never change (the
networks are compiled in place: their ``forward`` is replaced on the instance, no wrapper module is inserted).
"""
from __future__ import annotations

import contextlib
import sys
from typing import Callable, Iterator

import torch
from torch import nn

from diffflow_core.config import TrainConfig
from diffflow_core.errors import ConfigError, DiffflowError
from diffflow_core.interfaces import Batch

__all__ = ["accelerated", "channels_last_batch"]


@contextlib.contextmanager
def accelerated(model: nn.Module, config: TrainConfig, event_shape: tuple[int, ...], device: torch.device,
                report: bool = True) -> Iterator[None]:
    """Inside: the model's networks compiled (``config.compile``) and in channels-last layout
    (``config.channels_last``); on exit, eager and contiguous again. Enter it before the optimisers and the EMA
    are made: the layout change replaces the parameters' storage. ``report``: whether this process prints the
    warning of a compiler that cannot run (rank 0 of a ``torchrun`` launch)."""
    undo: list[Callable[[], None]] = []
    try:
        if config.channels_last:
            undo.append(_channels_last(model, event_shape))
        if config.compile:
            undo.append(_compile_networks(model, device, report))
        yield
    finally:
        for step in reversed(undo):
            step()


def channels_last_batch(batch: Batch) -> Batch:
    """An image batch ``[B, C, H, W]`` in channels-last layout (what the networks' convolutions then expect)."""
    return Batch(batch.x.contiguous(memory_format=torch.channels_last), batch.y)


def _channels_last(model: nn.Module, event_shape: tuple[int, ...]) -> Callable[[], None]:
    """Put the model's 4-D parameters and buffers (convolution weights) in channels-last layout, in place (the
    parameter objects stay: optimisers and players keep theirs); returns the undo."""
    if len(event_shape) != 3:
        raise ConfigError(f"train.channels_last: expected image data of shape [C, H, W], got data of shape "
                          f"{list(event_shape)}; set channels_last = false")
    model.to(memory_format=torch.channels_last)
    return lambda: model.to(memory_format=torch.contiguous_format)


def _compile_networks(model: nn.Module, device: torch.device, report: bool) -> Callable[[], None]:
    """``torch.compile`` the ``forward`` of every outermost module of the model that the ``networks`` registry
    builds (the losses call those directly, not the flow's own forward); returns the undo. A compiler that cannot
    run here (no C++ compiler for CPU code, no Triton for GPU code) costs one warning line and eager training."""
    networks = _networks(model)
    if not networks:
        raise ConfigError("train.compile: expected a model with networks of the networks registry to compile, "
                          f"found none in {type(model).__name__}; set compile = false")
    problem = _compiler_problem(device)
    if problem is not None:
        if report:
            print(f"diffflow: warning: train.compile: torch.compile cannot run here ({problem}); training runs "
                  "eagerly", file=sys.stderr)
        return lambda: None
    for network in networks:
        network.forward = torch.compile(network.forward)

    def undo() -> None:
        for network in networks:
            del network.forward  # the instance attribute: the class's forward shows again

    return undo


def _networks(model: nn.Module) -> list[nn.Module]:
    """The outermost submodules of ``model`` whose class the ``networks`` registry holds."""
    from diffflow_core.plugins import registry

    kinds = registry("networks")
    classes = []
    for name in kinds.names():
        try:
            target = kinds.get(name)
        except DiffflowError:  # a plugin's network that cannot load is not in this model
            continue
        if isinstance(target, type):
            classes.append(target)
    found: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        inside = any(name.startswith(prefix + ".") for prefix, _ in found)
        if not inside and isinstance(module, tuple(classes)):
            found.append((name, module))
    return [module for _, module in found]


def _compiler_problem(device: torch.device) -> str | None:
    """None when ``torch.compile`` compiles and runs a one-line function on ``device``, else the reason (the
    exception's type and first line)."""
    try:
        torch.compile(lambda x: x.sin() + 1)(torch.zeros(2, device=device))
    except Exception as exc:  # noqa: BLE001 - any failure of the compiler stack means: run eagerly
        lines = str(exc).strip().splitlines()
        return f"{type(exc).__name__}: {lines[0][:200] if lines else 'no message'}"
    return None
