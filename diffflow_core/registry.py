"""Named registries of components, one per kind, filled by plugins through their hooks."""
from __future__ import annotations

import importlib
import inspect
import sys
import threading
from collections.abc import Mapping
from typing import Any, Callable, Iterator, TypeVar

import attrs

from diffflow_core.errors import ConfigError, ConflictError, PluginError, UnknownComponentError, did_you_mean

__all__ = ["Entry", "Registry", "guarded"]

T = TypeVar("T")


class _StdoutToStderr:
    """Route ``sys.stdout`` to stderr while any thread runs plugin code.

    Re-entrant and thread-safe by counting: ``contextlib.redirect_stdout`` used by two threads at once can restore
    the other's redirection and leave stdout pointing at stderr for good.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._saved: Any = None

    def __enter__(self) -> None:
        with self._lock:
            if self._depth == 0:
                self._saved, sys.stdout = sys.stdout, sys.stderr
            self._depth += 1

    def __exit__(self, *exc_info: Any) -> None:
        with self._lock:
            self._depth -= 1
            if self._depth == 0:
                sys.stdout, self._saved = self._saved, None


_PLUGIN_OUTPUT = _StdoutToStderr()


def guarded(call: Callable[[], T]) -> tuple[T | None, BaseException | None]:
    """Run plugin code (an import, a hook, a lazy target): return ``(result, None)`` or ``(None, what it raised)``.

    Anything but ``KeyboardInterrupt`` is caught, ``SystemExit`` included: a plugin that exits at import must be
    reported as failed, not end every diffflow command silently. Its prints go to stderr, so that ``--json``
    output on stdout stays machine-readable.
    """
    with _PLUGIN_OUTPUT:
        try:
            return call(), None
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - isolation is the point
            return None, exc


def _is_lazy_path(target: str) -> bool:
    """Whether ``target`` has the syntax ``"pkg.module:Attr.attr"`` (dotted identifiers on both sides)."""
    module, colon, attr = target.partition(":")
    return bool(colon) and all(part.isidentifier() for part in (*module.split("."), *attr.split(".")))


@attrs.define
class Entry:
    """One registered component and where it came from (provenance)."""

    kind: str
    name: str
    target: Any = attrs.field(repr=False)
    plugin: str
    distribution: str
    version: str
    summary: str = ""
    protected: bool = False  # built-in or first-party: never shadowed

    def load(self) -> Any:
        """The component itself, importing a lazy ``"module:attr"`` target on first use.

        A target that cannot be imported, or that resolves to something this kind cannot hold (a preset that is
        not a mapping), raises ``PluginError`` naming the component, its target and its provider.
        """
        if isinstance(self.target, str):
            self._check_syntax()
            obj, exc = guarded(self._resolve)
            if exc is not None:
                raise self._error(f"cannot import target {self.target!r}: {type(exc).__name__}: {exc}") from exc
            self._check_kind(obj, lazy=True)
            self.target = obj
        return self.target

    def check(self, resolve: bool) -> None:
        """Raise ``PluginError`` unless this registration can work: a non-empty string name, and a target of the
        right kind (a mapping for presets, a class or callable factory for every other kind) or a lazy
        ``"module:attr"`` string, which ``resolve`` imports now (strict mode) instead of when first used."""
        if not isinstance(self.name, str) or not self.name.strip():
            raise self._error(f"the name must be a non-empty string, got {_shown(self.name)}")
        if not isinstance(self.target, str):
            self._check_kind(self.target, lazy=False)
        elif resolve:
            self.load()
        else:
            self._check_syntax()

    def _resolve(self) -> Any:
        module_name, _, attr = self.target.partition(":")
        obj = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj

    def _check_syntax(self) -> None:
        if not _is_lazy_path(self.target):
            raise self._error(f"target {self.target!r} is not a lazy 'module:attr' string")

    def _check_kind(self, obj: Any, lazy: bool) -> None:
        presets = self.kind == "presets"
        if isinstance(obj, Mapping) if presets else callable(obj):
            return
        expected = "a mapping (a model config)" if presets else "a class or a callable factory"
        if lazy:
            raise self._error(f"target {self.target!r} is {_shown(obj)}, not {expected}")
        raise self._error(f"target {_shown(obj)} is not {expected} or a lazy 'module:attr' string")

    def _error(self, problem: str) -> PluginError:
        return PluginError(f"{self.kind} {self.name!r} from plugin '{self.plugin}' "
                           f"({self.distribution} {self.version}): {problem}")

    def describe(self) -> dict[str, str]:
        return {"kind": self.kind, "name": self.name, "plugin": self.plugin, "distribution": self.distribution,
                "version": self.version, "summary": self.summary}


class Registry:
    """Components of one kind: ``list()``, ``get(name)``, ``create(name, **params)``, ``entry(name)``."""

    def __init__(self, kind: str, ensure_loaded: Callable[[], None], failed_plugins: Callable[[], list[str]]):
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        self._ambiguous: dict[str, list[Entry]] = {}
        self._ensure_loaded = ensure_loaded
        self._failed_plugins = failed_plugins

    # -- filling -------------------------------------------------------------------------------------
    def add(self, entry: Entry) -> list[Entry]:
        """Add ``entry``; a protected name is never shadowed, and two unprotected providers make it ambiguous.

        Returns the unprotected entries a protected one displaced, so the caller can report them.
        """
        existing = self._entries.get(entry.name)
        if existing is None and entry.name not in self._ambiguous:
            self._entries[entry.name] = entry
            return []
        if existing is not None and existing.protected:
            raise ConflictError(
                f"{self.kind} '{entry.name}' is provided by built-in plugin '{existing.plugin}' "
                f"({existing.distribution} {existing.version}); plugin '{entry.plugin}' "
                f"({entry.distribution} {entry.version}) may not shadow it: choose another name")
        if entry.protected:
            displaced = [existing] if existing is not None else self._ambiguous.pop(entry.name)
            self._entries[entry.name] = entry
            return displaced
        providers = self._ambiguous.setdefault(entry.name, [existing] if existing else [])
        providers.append(entry)
        self._entries.pop(entry.name, None)
        return []

    def discard(self, name: str, plugin: str) -> bool:
        """Forget ``name`` if ``plugin`` provides it (re-registration replaces); return whether it did."""
        entry = self._entries.get(name)
        if entry is None or entry.plugin != plugin:
            return False
        del self._entries[name]
        return True

    # -- reading -------------------------------------------------------------------------------------
    def names(self) -> list[str]:
        self._ensure_loaded()
        return sorted(set(self._entries) | set(self._ambiguous))

    def list(self) -> list[Entry]:
        """Every entry, ambiguous names once per provider, sorted by name."""
        self._ensure_loaded()
        entries = list(self._entries.values()) + [e for es in self._ambiguous.values() for e in es]
        return sorted(entries, key=lambda e: (e.name, e.plugin))

    def __contains__(self, name: str) -> bool:
        self._ensure_loaded()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def conflict(self, name: str) -> str | None:
        """Why ``name`` is ambiguous (every provider, and the fix), or None when it is not."""
        if name not in self._ambiguous:
            return None
        providers = ", ".join(f"'{e.plugin}' ({e.distribution} {e.version})" for e in self._ambiguous[name])
        return (f"{self.kind} '{name}' is registered by several plugins: {providers}; disable one with "
                "DIFFFLOW_DISABLE_PLUGINS")

    def entry(self, name: str) -> Entry:
        """The entry named ``name``; unknown or ambiguous names raise with what is available."""
        self._ensure_loaded()
        conflict = self.conflict(name)
        if conflict is not None:
            raise ConflictError(conflict)
        try:
            return self._entries[name]
        except KeyError:
            available = ", ".join(self.names()) or "(none)"
            message = f"unknown {self.kind[:-1] if self.kind.endswith('s') else self.kind} {name!r}"
            message += did_you_mean(str(name), self.names())
            message += (" " if message.endswith("?") else ". ") + f"Available {self.kind}: {available}."
            failed = self._failed_plugins()
            if failed:
                message += " Plugins that failed to load: " + "; ".join(failed) + "."
            raise UnknownComponentError(message) from None

    def get(self, name: str) -> Any:
        """The registered object (class, function or preset dict)."""
        return self.entry(name).load()

    def create(self, name: str, **params: Any) -> Any:
        """Instantiate component ``name`` with ``params``; unknown parameters raise naming the field."""
        target = self.get(name)
        if not callable(target):
            raise ConfigError(f"{self.kind} '{name}' is not constructible (got {type(target).__name__})")
        check_params(f"{self.kind} '{name}'", target, params)
        return target(**params)


def _shown(value: Any) -> str:
    """``value`` for an error message: its repr (shortened) and its type."""
    text = repr(value)
    return f"{text if len(text) <= 60 else text[:57] + '...'} ({type(value).__name__})"


def check_params(what: str, target: Callable, params: dict[str, Any]) -> None:
    """Reject parameters ``target`` does not accept, with a did-you-mean and the accepted names."""
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return
    accepted = [n for n, p in signature.parameters.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
        return
    for key in params:
        if key not in accepted:
            raise ConfigError(f"{what}: unknown parameter {key!r}{did_you_mean(key, accepted)}; "
                              f"accepted parameters: {', '.join(accepted) or '(none)'}")
