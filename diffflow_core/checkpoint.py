"""Checkpoints: config + component provenance + weights, written atomically, verified and loaded without pickle.

Integrity: ``torch.save`` writes a zip whose every record carries a CRC-32 of its bytes, but ``torch.load``
never checks them (16 flipped bytes in a weight tensor load silently). :func:`read_checkpoint` therefore
reads every record once with :mod:`zipfile` and compares its CRC-32 before ``torch.load`` sees the file;
files without CRCs (saved with ``torch.utils.serialization.config.save.compute_crc32 = False``) still load.
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import warnings
import zipfile
from pathlib import Path
from typing import IO, Any, Iterator

import numpy as np
import torch
from torch import nn

from diffflow_core.errors import CheckpointError, ConfigError

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


#: ``atomic_file``'s temporary files, ``<target>.<pid>.<8 hex digits>.tmp``, and the ``mkstemp`` names of older
#: versions (``checkpoint.pt<8 characters>.tmp``, no pid): see :func:`temp_files`.
_TEMP = re.compile(r"(?P<target>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp")
_OLD_TEMP = re.compile(r"checkpoint\.pt[a-z0-9_]{8}\.tmp")


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "wb", **options: Any) -> Iterator[IO]:
    """Write ``path`` through a temporary file beside it, flushed to disk and then renamed over ``path``: a
    reader (or a run killed at any instant) sees the old file or the new one, never part of one.

    The temporary name holds the writer's pid (``<name>.<pid>.<random>.tmp``), so a cleanup can tell a live
    writer's file from one a killed run left (:func:`temp_files`). The file is created like any other (mode
    0666 less the umask), so a checkpoint gets the permissions of the rest of its run folder. ``mode`` ("wb"
    or "w") and ``options`` (e.g. ``newline=""``) are those of :func:`open`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, mode.replace("w", "x"), **options) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` through :func:`atomic_file`: never a half-written checkpoint."""
    with atomic_file(path) as f:
        try:
            torch.save(obj, f)
        except RuntimeError as exc:  # torch's zip writer reports a failed write as "unexpected pos"
            if "unexpected pos" not in str(exc):
                raise
            raise OSError(errno.ENOSPC, "no space left on the device while writing it (the previous "
                          "checkpoint is kept)", str(path)) from None


def temp_files(folder: str | os.PathLike) -> list[tuple[Path, int | None]]:
    """The temporary files of :func:`atomic_file` in ``folder`` with their writer's pid (None for the names
    older versions used, which carry none); a file of a writer that is no longer running is a leftover."""
    found = []
    for path in sorted(Path(folder).glob("*.tmp")):
        match = _TEMP.fullmatch(path.name)
        if match:
            found.append((path, int(match["pid"])))
        elif _OLD_TEMP.fullmatch(path.name):
            found.append((path, None))
    return found


def model_payload(model) -> dict[str, Any]:
    """What a model checkpoint holds: format tag, config, providers' versions, event shape, weights, small array
    data (``Dataset.state``) and the records of the saved models it refers to (:mod:`diffflow_core.references`),
    so that the model samples and evaluates without its data file and without the files it was built from."""
    config = _storable(model.config.as_dict(), "") if model.config is not None else None
    return {"format": FORMAT, "config": config, "provenance": provenance(config or {}),
            "event_shape": list(model.flow.event_shape),
            "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "data": model.data.state() if model.data is not None else None,
            "references": model.references}


def _storable(value: Any, where: str) -> Any:
    """``value`` with NumPy scalars as Python numbers; a ConfigError names any part a checkpoint cannot hold.

    Checkpoints load with ``weights_only=True``, which rebuilds plain values only: an object in the config
    (a network given as an ``nn.Module`` instance) would save, then make the file unloadable.
    """
    if isinstance(value, dict):
        return {k: _storable(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_storable(v, f"{where}[{i}]") for i, v in enumerate(value))
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    what = f"{type(value).__module__}.{type(value).__qualname__}"
    todo = ("register the network (the 'networks' registry, see docs/plugins.md) and give it by name, e.g. "
            "network = {name = 'mine', ...}, or save model.state_dict() and rebuild the model in code"
            if isinstance(value, nn.Module) else "give it as a name or plain values (numbers, strings, lists, tables)")
    raise ConfigError(f"{where}: a {what} object cannot be saved in a checkpoint (only names and plain values "
                      f"can be rebuilt on load); {todo}")


def save_model(model, path: str | os.PathLike) -> None:
    atomic_save(model_payload(model), path)


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint dict with ``weights_only=True`` (never executes code); clear errors otherwise."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint: file {str(path)!r} does not exist")
    _verify_crcs(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - corrupt files and pickled code both land here
        raise CheckpointError(f"checkpoint: {path} is corrupt or not a diffflow checkpoint "
                              f"(refusing to unpickle arbitrary objects): {type(exc).__name__}: {exc}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint: {path} is not a diffflow checkpoint (format {FORMAT!r} expected)")
    return payload


def _verify_crcs(path: Path) -> None:
    """Raise a CheckpointError naming ``path`` and the damaged record unless every record of the zip matches
    the CRC-32 stored with it. Not a zip (a legacy torch file, a foreign file): left to ``torch.load``."""
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            if not any(info.CRC for info in archive.infolist()):
                return  # saved without CRCs: nothing to compare
            damaged = archive.testzip()
    except Exception as exc:  # noqa: BLE001 - a damaged zip directory fails in many ways
        raise CheckpointError(f"checkpoint: {path} is corrupt (its zip structure is damaged: "
                              f"{type(exc).__name__}: {exc})") from None
    if damaged is not None:
        raise CheckpointError(f"checkpoint: {path} is corrupt: record {damaged!r} does not match the CRC-32 "
                              "written with it (the file changed after it was saved); restore it from a copy")


def read_model_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint :meth:`Model.load <diffflow_core.model.Model.load>` can rebuild: it records a config and
    every component it names is provided now (a provider of another version is a warning)."""
    payload = read_checkpoint(path, map_location)
    if payload.get("config") is None:
        raise CheckpointError(f"checkpoint: {path} records no config; rebuild the model and load_state_dict")
    _check_providers(payload.get("provenance", {}), path)
    _warn_on_version_mismatch(payload.get("provenance", {}))
    return payload


def load_state(model, state_dict: dict[str, Any], where: str) -> None:
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint: {where} was written by another model: {exc}") from None


def _check_providers(recorded: dict[str, dict[str, str]], path: str | os.PathLike) -> None:
    """Every component the checkpoint was written with is registered now; else name what to install."""
    current = provenance({k: {"name": v["name"]} for k, v in recorded.items()})
    missing = [f"{section} '{then['name']}' from {then['distribution']} {then['version']}"
               for section, then in recorded.items() if section not in current]
    if missing:
        needed = sorted({recorded[s]["distribution"] for s in recorded if s not in current})
        raise CheckpointError(f"checkpoint: {path} needs {', '.join(missing)}, which no installed plugin provides; "
                              f"install {', '.join(needed)} (see 'diffflow plugins')")


def _warn_on_version_mismatch(recorded: dict[str, dict[str, str]]) -> None:
    current = provenance({k: {"name": v["name"]} for k, v in recorded.items()})
    for section, then in recorded.items():
        now = current.get(section)
        if now and (now["distribution"], now["version"]) != (then["distribution"], then["version"]):
            warnings.warn(f"checkpoint {section} '{then['name']}' was written with {then['distribution']} "
                          f"{then['version']}, now provided by {now['distribution']} {now['version']}", stacklevel=3)
