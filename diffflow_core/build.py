"""``build()``: a Model from a config dict, a TOML file, or a preset plus overrides."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from diffflow_core.config import ComponentSpec, ModelConfig, load_config
from diffflow_core.data import Dataset, load_dataset
from diffflow_core.errors import ConfigError
from diffflow_core.model import Model, build_component

__all__ = ["build"]


def build(config: str | Path | dict[str, Any] | ModelConfig | None = None, *, preset: str | None = None,
          data: Any = None, event_shape: tuple[int, ...] | None = None, device: str | torch.device | None = None,
          **overrides: Any) -> Model:
    """Build a :class:`Model` by component names.

    ``config`` is a TOML path, a dict or a :class:`ModelConfig`; ``preset`` names a registered recipe that
    ``config`` and ``overrides`` (section=value keyword arguments) are merged onto. ``data`` (a name, an array,
    a path or a Dataset) overrides the config's data; components receive ``event_shape``, ``data`` and
    ``num_classes`` when their constructors accept them. Components are built under ``train.seed`` (in a
    forked random state: the caller's is untouched), so the same config gives the same initial weights;
    the model is then moved to ``device`` (default: where it was built, the CPU).
    """
    if isinstance(config, ModelConfig) and not (preset or overrides):
        cfg = config
    else:  # a ModelConfig with overrides is merged like a dict, never silently ignoring them
        source = config.as_dict() if isinstance(config, ModelConfig) else config
        cfg = load_config(source, preset=preset, overrides=overrides)
    dataset: Dataset | None = None
    if data is not None:
        dataset = load_dataset(data)
        if dataset.path is not None:  # a file, by absolute path: the config rebuilds from any working directory
            if cfg.data is None or cfg.data.name != dataset.path:  # (a checkpoint's stored data keep their params)
                cfg.data = ComponentSpec(dataset.path)
        elif isinstance(data, str):
            cfg.data = ComponentSpec(data)
        elif type(dataset) is Dataset:  # in-memory data have no name to record (checkpoints store small data)
            cfg.data = None
    elif cfg.data is not None:
        dataset = load_dataset(cfg.data.name, **cfg.data.params)
        if dataset.path is not None:
            cfg.data.name = dataset.path
    if event_shape is not None and dataset is not None and tuple(event_shape) != dataset.event_shape:
        raise ConfigError(f"event_shape: {tuple(event_shape)} does not match the data '{dataset.name}', whose rows "
                          f"have shape {dataset.event_shape}; omit event_shape or give data of that shape")
    shape = tuple(event_shape) if event_shape is not None else (dataset.event_shape if dataset else None)
    context: dict[str, Any] = {"event_shape": shape, "data": dataset,
                               "num_classes": dataset.num_classes if dataset is not None else None}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed)
        flow = build_component("flows", cfg.flow, context)
        if shape is not None:
            flow.event_shape = shape
        context["flow"] = flow
        objective = build_component("objectives", cfg.objective, context) if cfg.objective else None
        smoother = build_component("smoothers", cfg.smoother, context)
        solver = build_component("solvers", cfg.solver, context)
    model = Model(flow, objective, smoother, solver, config=cfg, data=dataset)
    return model.to(device) if device is not None else model
