"""Exceptions with messages that name the field, the value and what was expected."""
from __future__ import annotations

import difflib
from typing import Iterable


class DiffflowError(Exception):
    """Base class of every diffflow error."""


class ConfigError(DiffflowError, ValueError):
    """A bad parameter or configuration value."""


class UnknownComponentError(DiffflowError, KeyError):
    """An unknown component name; the message lists close matches, the available names and failed plugins."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class ConflictError(DiffflowError):
    """Two providers registered the same name, or a plugin tried to shadow a built-in."""


class PluginError(DiffflowError):
    """A plugin failed to load (raised only in strict mode; otherwise reported)."""


class CheckpointError(DiffflowError):
    """A checkpoint is corrupt, of another model, or unreadable."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """'; did you mean 'x'?' for the closest choice, or ''."""
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.6)
    if not close:
        return ""
    return "; did you mean " + " or ".join(repr(c) for c in close) + "?"
