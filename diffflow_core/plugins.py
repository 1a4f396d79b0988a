"""Plugin discovery and isolation (DESIGN §4).

Plugins are modules named by entry points of group ``diffflow``. Loading is lazy and happens once, on the
first registry access (``import diffflow_core`` scans nothing). Each plugin is imported and its hooks are
called in isolation: a plugin that fails to import, declares an unknown hook, or whose hook raises is reported
(a warning and status ``failed`` with the error) and contributes nothing; ``DIFFFLOW_STRICT_PLUGINS=1``
makes any such failure fatal. ``DIFFFLOW_DISABLE_PLUGINS=a,b`` skips plugins and ``DIFFFLOW_LOAD_PLUGINS=a,b``
loads only those (the kernel's built-ins always load).
"""
from __future__ import annotations

import os
import threading
import traceback
import warnings
from importlib import metadata
from typing import Any

import attrs
import pluggy

from diffflow_core import hookspecs
from diffflow_core.errors import ConflictError, PluginError
from diffflow_core.registry import Entry, Registry

__all__ = ["PluginInfo", "PluginManager", "manager", "registry", "register", "register_plugin", "reset"]

ENTRY_POINT_GROUP = "diffflow"
#: Distributions of the core set: their names are protected like built-ins.
FIRST_PARTY = frozenset({"diffflow-core", "diffflow-solvers", "diffflow-kl", "diffflow-mmd", "diffflow-score",
                         "diffflow-discriminator", "diffflow-ndm", "diffflow-velocity"})
BUILTIN_PLUGIN = "core"


@attrs.define
class PluginInfo:
    """What ``diffflow plugins`` shows for one plugin."""

    name: str
    distribution: str
    version: str
    status: str  # "active", "failed", "disabled", "not allowed"
    hooks: list[str] = attrs.Factory(list)
    error: str | None = None
    components: int = 0

    def as_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


def _env_list(name: str) -> set[str] | None:
    value = os.environ.get(name)
    if value is None:
        return None
    return {item.strip() for item in value.split(",") if item.strip()}


class PluginManager:
    """Owns the registries and fills them from plugins once."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.registries = {kind: Registry(kind, self.load, self.failed_summaries) for kind in hookspecs.KINDS}
        self.plugins: dict[str, PluginInfo] = {}
        self._loaded = False
        self._loading = False
        self._fatal: PluginError | None = None
        self._lock = threading.RLock()

    # -- status --------------------------------------------------------------------------------------
    def failed_summaries(self) -> list[str]:
        return [f"{p.name} ({p.error.splitlines()[0] if p.error else 'failed'})"
                for p in self.plugins.values() if p.status == "failed"]

    def infos(self) -> list[PluginInfo]:
        self.load()
        return sorted(self.plugins.values(), key=lambda p: (p.name != BUILTIN_PLUGIN, p.name))

    # -- loading -------------------------------------------------------------------------------------
    def load(self) -> None:
        """Discover and load plugins once (safe to call repeatedly, from DDP ranks too)."""
        if self._fatal is not None:  # strict mode keeps failing instead of serving a partial registry
            raise self._fatal
        if self._loaded:
            return
        with self._lock:  # other threads wait for the loader; the loader itself re-enters (hooks using registries)
            if self._loaded or self._loading:
                return
            self._loading = True
            try:
                from diffflow_core import builtins

                self._add_plugin(BUILTIN_PLUGIN, builtins, "diffflow-core", _version("diffflow-core"), protected=True)
                for ep in self._entry_points():
                    self._load_entry_point(ep)
            except PluginError as exc:
                self._fatal = exc
                raise
            finally:
                self._loading = False
                self._loaded = True

    def _entry_points(self) -> list[metadata.EntryPoint]:
        seen: dict[str, metadata.EntryPoint] = {}
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            first = seen.setdefault(ep.name, ep)  # the first distribution on sys.path wins, like imports
            if first is not ep and _dist_name(first) != _dist_name(ep):
                warnings.warn(f"diffflow plugin name '{ep.name}' is declared by {_dist_name(first)} and "
                              f"{_dist_name(ep)}; loading the first on sys.path ({_dist_name(first)})", stacklevel=4)
        return sorted(seen.values(), key=lambda ep: ep.name)

    def _load_entry_point(self, ep: metadata.EntryPoint) -> None:
        dist = ep.dist.name if ep.dist is not None else "?"
        version = ep.dist.version if ep.dist is not None else "?"
        allowed, disabled = _env_list("DIFFFLOW_LOAD_PLUGINS"), _env_list("DIFFFLOW_DISABLE_PLUGINS") or set()
        if ep.name in disabled:
            self.plugins[ep.name] = PluginInfo(ep.name, dist, version, "disabled")
            return
        if allowed is not None and ep.name not in allowed:
            self.plugins[ep.name] = PluginInfo(ep.name, dist, version, "not allowed")
            return
        try:
            module = ep.load()
        except Exception as exc:  # noqa: BLE001 - isolation is the point
            self._fail(PluginInfo(ep.name, dist, version, "failed"), exc, "import failed")
            return
        self._add_plugin(ep.name, module, dist, version, protected=_normalise(dist) in FIRST_PARTY)

    def _add_plugin(self, name: str, module: Any, dist: str, version: str, *, protected: bool) -> None:
        """Validate ``module``'s hooks, call each in isolation, and commit its registrations atomically."""
        info = PluginInfo(name, dist, version, "active")
        self.plugins[name] = info
        try:
            self.pm.register(module, name=name)
            self.pm.check_pending()
        except Exception as exc:  # unknown hook names, bad hookimpl signatures
            if self.pm.is_registered(module):
                self.pm.unregister(module)
            self._fail(info, exc, "invalid hooks")
            return
        staged: list[Entry] = []
        for kind in hookspecs.KINDS:
            hook_name = f"register_{kind}"
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                if impl.plugin is not module:
                    continue
                info.hooks.append(hook_name)

                def register(comp_name: str, target: Any, summary: str = "", *, _kind: str = kind) -> None:
                    staged.append(Entry(_kind, str(comp_name), target, name, dist, version,
                                        summary or _first_doc_line(target), protected))

                try:
                    impl.function(register=register)
                except Exception as exc:  # noqa: BLE001
                    self.pm.unregister(module)
                    self._fail(info, exc, f"hook {hook_name} raised")
                    return
        conflicts = []
        for entry in staged:
            try:
                displaced = self.registries[entry.kind].add(entry)
                info.components += 1
            except ConflictError as exc:
                conflicts.append(str(exc))
                continue
            for other in displaced:
                self._report_displaced(other, entry)
        if conflicts:
            info.error = "; ".join(conflicts)
            warnings.warn(f"diffflow plugin '{name}': {info.error}", stacklevel=3)
            if os.environ.get("DIFFFLOW_STRICT_PLUGINS") == "1":
                raise PluginError(f"plugin '{name}': {info.error}")

    def _report_displaced(self, displaced: Entry, by: Entry) -> None:
        """A protected component loaded after a third-party one of the same name replaced it: say so."""
        message = (f"{displaced.kind} '{displaced.name}' is provided by built-in plugin '{by.plugin}' "
                   f"({by.distribution} {by.version}); this plugin's registration was dropped")
        info = self.plugins.get(displaced.plugin)
        if info is not None:
            info.error = f"{info.error}; {message}" if info.error else message
            info.components -= 1
        warnings.warn(f"diffflow plugin '{displaced.plugin}': {message}", stacklevel=4)
        if os.environ.get("DIFFFLOW_STRICT_PLUGINS") == "1":
            raise PluginError(f"plugin '{displaced.plugin}': {message}")

    def _fail(self, info: PluginInfo, exc: BaseException, what: str) -> None:
        info.status = "failed"
        info.error = f"{what}: {type(exc).__name__}: {exc}"
        self.plugins[info.name] = info
        if os.environ.get("DIFFFLOW_STRICT_PLUGINS") == "1":
            raise PluginError(f"plugin '{info.name}' ({info.distribution}) {info.error}") from exc
        warnings.warn(f"diffflow plugin '{info.name}' ({info.distribution} {info.version}) was not loaded: "
                      f"{info.error}\n{''.join(traceback.format_exception_only(type(exc), exc)).strip()}",
                      stacklevel=3)

    # -- programmatic registration -------------------------------------------------------------------
    def register_object(self, kind: str, name: str, target: Any, summary: str = "", plugin: str = "user") -> Entry:
        """Register one component without packaging it (notebooks, tests).

        Registering a name again from the same ``plugin`` replaces the earlier object (a re-run notebook cell).
        """
        self.load()
        if kind not in self.registries:
            raise PluginError(f"kind: unknown component kind {kind!r}; expected one of {', '.join(hookspecs.KINDS)}")
        entry = Entry(kind, name, target, plugin, "(programmatic)", "-", summary or _first_doc_line(target))
        replaced = self.registries[kind].discard(name, plugin)
        self.registries[kind].add(entry)
        self.plugins.setdefault(plugin, PluginInfo(plugin, "(programmatic)", "-", "active"))
        self.plugins[plugin].components += 0 if replaced else 1
        return entry

    def register_plugin(self, module: Any, name: str) -> PluginInfo:
        """Register an object holding ``@hookimpl`` functions, as if it came from an entry point."""
        self.load()
        self._add_plugin(name, module, "(programmatic)", "-", protected=False)
        return self.plugins[name]


def _dist_name(ep: metadata.EntryPoint) -> str:
    return ep.dist.name if ep.dist is not None else "?"


def _normalise(dist: str) -> str:
    return dist.lower().replace("_", "-")


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "0+unknown"


def _first_doc_line(target: Any) -> str:
    if isinstance(target, str):
        return ""
    if isinstance(target, dict):
        return str(target.get("summary", ""))
    doc = getattr(target, "__doc__", None) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


_MANAGER: PluginManager | None = None


def manager() -> PluginManager:
    """The process-wide plugin manager (created on first use)."""
    global _MANAGER
    if _MANAGER is None:
        _MANAGER = PluginManager()
    return _MANAGER


def reset() -> None:
    """Forget every loaded plugin and registration (tests; a new scan happens on next use)."""
    global _MANAGER
    _MANAGER = None


def registry(kind: str) -> Registry:
    """The registry of ``kind`` (one of ``hookspecs.KINDS``), loading plugins on first use."""
    mgr = manager()
    if kind not in mgr.registries:
        raise PluginError(f"kind: unknown component kind {kind!r}; expected one of {', '.join(hookspecs.KINDS)}")
    mgr.load()
    return mgr.registries[kind]


def register(kind: str, name: str, target: Any, summary: str = "") -> Entry:
    """Programmatically register ``target`` as component ``name`` of ``kind``."""
    return manager().register_object(kind, name, target, summary)


def register_plugin(module: Any, name: str) -> PluginInfo:
    return manager().register_plugin(module, name)
