"""``build()``: a Model from a config dict, a TOML file, or a preset plus overrides."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from diffflow_core.config import ComponentSpec, ModelConfig, load_config
from diffflow_core.data import Dataset, load_dataset
from diffflow_core.model import Model, build_component

__all__ = ["build"]


def build(config: str | Path | dict[str, Any] | ModelConfig | None = None, *, preset: str | None = None,
          data: Any = None, event_shape: tuple[int, ...] | None = None, **overrides: Any) -> Model:
    """Build a :class:`Model` by component names.

    ``config`` is a TOML path, a dict or a :class:`ModelConfig`; ``preset`` names a registered recipe that
    ``config`` and ``overrides`` (section=value keyword arguments) are merged onto. ``data`` (a name, an array,
    a path or a Dataset) overrides the config's data; components receive ``event_shape``, ``data`` and
    ``num_classes`` when their constructors accept them.
    """
    if isinstance(config, ModelConfig) and not (preset or overrides):
        cfg = config
    else:  # a ModelConfig with overrides is merged like a dict, never silently ignoring them
        source = config.as_dict() if isinstance(config, ModelConfig) else config
        cfg = load_config(source, preset=preset, overrides=overrides)
    dataset: Dataset | None = None
    if data is not None:
        dataset = load_dataset(data)
        if not isinstance(data, Dataset) and isinstance(data, str):
            cfg.data = ComponentSpec(data)
    elif cfg.data is not None:
        dataset = load_dataset(cfg.data.name, **cfg.data.params)
    shape = tuple(event_shape) if event_shape is not None else (dataset.event_shape if dataset else None)
    context: dict[str, Any] = {"event_shape": shape, "data": dataset,
                               "num_classes": dataset.num_classes if dataset is not None else None}
    flow = build_component("flows", cfg.flow, context)
    if shape is not None:
        flow.event_shape = shape
    context["flow"] = flow
    objective = build_component("objectives", cfg.objective, context) if cfg.objective else None
    smoother = build_component("smoothers", cfg.smoother, context)
    solver = build_component("solvers", cfg.solver, context)
    return Model(flow, objective, smoother, solver, config=cfg, data=dataset)
