"""Exceptions with messages that name the field, the value and what was expected."""
from __future__ import annotations

import contextlib
import contextvars
import difflib
from typing import Iterable, Iterator

#: Which interface the user called: "python" (build, fit, sample) or "cli" (the diffflow command). Messages that
#: tell the user what to pass speak its language: a keyword argument in Python, a flag on the command line.
_INTERFACE: contextvars.ContextVar[str] = contextvars.ContextVar("diffflow_interface", default="python")


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


@contextlib.contextmanager
def interface(name: str) -> Iterator[None]:
    """Within the block, messages from :func:`speak` address users of ``name`` ("python" or "cli")."""
    token = _INTERFACE.set(name)
    try:
        yield
    finally:
        _INTERFACE.reset(token)


def speak(python: str, cli: str) -> str:
    """``python`` or ``cli``: the wording for the interface the user called (see :func:`interface`)."""
    return cli if _INTERFACE.get() == "cli" else python


def missing_data(why: str) -> ConfigError:
    """The error for a model built without the data it needs, with the way to pass it in the caller's terms."""
    return ConfigError(f"data: {why}, but no data was given; "
                       + speak("pass data= to build() (a dataset name, a .npy path, an array or a Dataset)",
                               "pass --data NAME or --data FILE.npy"))


def format_bytes(count: float) -> str:
    """A byte count for a message: ``"745.1 GiB"``, ``"3.2 MiB"``, ``"12 bytes"``."""
    for unit, scale in (("EiB", 2 ** 60), ("PiB", 2 ** 50), ("TiB", 2 ** 40), ("GiB", 2 ** 30), ("MiB", 2 ** 20),
                        ("KiB", 2 ** 10)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{int(count)} bytes"
