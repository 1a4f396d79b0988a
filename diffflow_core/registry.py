"""Named registries of components, one per kind, filled by plugins through their hooks."""
from __future__ import annotations

import importlib
import inspect
from typing import Any, Callable, Iterator

import attrs

from diffflow_core.errors import ConfigError, ConflictError, UnknownComponentError, did_you_mean

__all__ = ["Entry", "Registry"]


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
        """The component itself, importing a lazy ``"module:attr"`` target on first use."""
        if isinstance(self.target, str):
            module_name, _, attr = self.target.partition(":")
            obj = importlib.import_module(module_name)
            for part in attr.split("."):
                obj = getattr(obj, part)
            self.target = obj
        return self.target

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

    def entry(self, name: str) -> Entry:
        """The entry named ``name``; unknown or ambiguous names raise with what is available."""
        self._ensure_loaded()
        if name in self._ambiguous:
            providers = ", ".join(f"'{e.plugin}' ({e.distribution} {e.version})" for e in self._ambiguous[name])
            raise ConflictError(
                f"{self.kind} '{name}' is registered by several plugins: {providers}; disable one with "
                "DIFFFLOW_DISABLE_PLUGINS")
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
