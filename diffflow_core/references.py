"""Saved models that a component refers to by path: a guidance base, a distillation teacher, a Score GAN's data
score, a composed term.

Such a component copies the referenced model's flow into its own module tree, so the enclosing model's weights
hold it. What the weights cannot rebuild is the referenced model's architecture, which lives in that file's
config. :func:`diffflow_core.model.load_reference` records it while the enclosing model is built
(:func:`collecting`, :func:`note`); the enclosing checkpoint stores the record (``references``) and
:meth:`Model.load <diffflow_core.model.Model.load>` replays it (:func:`stored`, :func:`lookup`), so a saved model
loads, samples and resumes after the files it was built from have moved or gone, from any working directory.
"""
from __future__ import annotations

import contextlib
import os
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Iterator

#: What a reference record keeps of the referenced checkpoint: everything but the weights.
RECORD_KEYS = ("config", "event_shape", "data", "references")

_collected: ContextVar[dict[str, dict[str, Any]] | None] = ContextVar("diffflow_references_collected", default=None)
_stored: ContextVar[dict[str, dict[str, Any]]] = ContextVar("diffflow_references_stored", default={})


def record(payload: dict[str, Any]) -> dict[str, Any]:
    """The reference record of a model checkpoint's ``payload``: its config, shape, small data and references."""
    return {key: payload.get(key) for key in RECORD_KEYS}


@contextlib.contextmanager
def collecting() -> Iterator[dict[str, dict[str, Any]]]:
    """Collect the records of the references loaded in this block (one model's build) into the yielded dict."""
    found: dict[str, dict[str, Any]] = {}
    token = _collected.set(found)
    try:
        yield found
    finally:
        _collected.reset(token)


@contextlib.contextmanager
def stored(records: dict[str, dict[str, Any]] | None) -> Iterator[None]:
    """In this block (a checkpoint's rebuild) the references ``records`` names are rebuilt from them, not read
    from their files; a path it does not name is read from its file."""
    token = _stored.set(dict(records or {}))
    try:
        yield
    finally:
        _stored.reset(token)


def recorded_in(checkpoint: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """The reference records a checkpoint file holds: none when there is no file yet (a run that wrote none) or
    it predates them."""
    from diffflow_core.checkpoint import read_checkpoint

    if not Path(checkpoint).is_file():
        return {}
    return read_checkpoint(checkpoint).get("references") or {}


def lookup(path: str) -> dict[str, Any] | None:
    """The record of ``path`` while a checkpoint that recorded it is rebuilt, else None (read the file)."""
    return _stored.get().get(path)


def note(path: str, entry: dict[str, Any]) -> None:
    """Collect the record of a reference loaded for the model being built (nothing outside a build)."""
    found = _collected.get()
    if found is not None:
        found[path] = entry
