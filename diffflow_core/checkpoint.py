"""Checkpoints: config + component provenance + weights, written atomically, loaded without pickle."""
from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

from diffflow_core.errors import CheckpointError

FORMAT = "diffflow-checkpoint/1"


def provenance(config_dict: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Which plugin, distribution and version provide each named component of a config."""
    from diffflow_core.plugins import registry

    kinds = {"flow": "flows", "objective": "objectives", "smoother": "smoothers", "solver": "solvers", "data": "datasets"}
    out = {}
    for section, kind in kinds.items():
        spec = config_dict.get(section)
        if isinstance(spec, dict) and "name" in spec and spec["name"] in registry(kind):
            entry = registry(kind).entry(spec["name"])
            out[section] = {"name": entry.name, "distribution": entry.distribution, "version": entry.version}
    return out


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def model_payload(model) -> dict[str, Any]:
    """What a model checkpoint holds: format tag, config, providers' versions, event shape, weights."""
    config = model.config.as_dict() if model.config is not None else None
    return {"format": FORMAT, "config": config, "provenance": provenance(config or {}),
            "event_shape": list(model.flow.event_shape),
            "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()}}


def save_model(model, path: str | os.PathLike) -> None:
    atomic_save(model_payload(model), path)


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint dict with ``weights_only=True`` (never executes code); clear errors otherwise."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint: file {str(path)!r} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - corrupt files and pickled code both land here
        raise CheckpointError(f"checkpoint: {path} is corrupt or not a diffflow checkpoint "
                              f"(refusing to unpickle arbitrary objects): {type(exc).__name__}: {exc}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint: {path} is not a diffflow checkpoint (format {FORMAT!r} expected)")
    return payload


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu"):
    from diffflow_core.build import build

    payload = read_checkpoint(path, map_location)
    if payload.get("config") is None:
        raise CheckpointError(f"checkpoint: {path} records no config; rebuild the model and load_state_dict")
    _warn_on_version_mismatch(payload.get("provenance", {}))
    model = build(payload["config"], event_shape=tuple(payload["event_shape"]))
    load_state(model, payload["state_dict"], str(path))
    return model


def load_state(model, state_dict: dict[str, Any], where: str) -> None:
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint: {where} was written by another model: {exc}") from None


def _warn_on_version_mismatch(recorded: dict[str, dict[str, str]]) -> None:
    current = provenance({k: {"name": v["name"]} for k, v in recorded.items()})
    for section, then in recorded.items():
        now = current.get(section)
        if now and (now["distribution"], now["version"]) != (then["distribution"], then["version"]):
            warnings.warn(f"checkpoint {section} '{then['name']}' was written with {then['distribution']} "
                          f"{then['version']}, now provided by {now['distribution']} {now['version']}", stacklevel=3)
