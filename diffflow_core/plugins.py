"""Plugin discovery, trust and isolation (DESIGN §4).

Plugins are modules named by entry points of group ``diffflow``. Loading is lazy and happens once, on the
first registry access (``import diffflow_core`` scans nothing). Each plugin is imported and its hooks are
called in isolation: a plugin that fails to import (``SystemExit`` included), declares an unknown hook, or whose
hook raises is reported (a warning and status ``failed`` with the error) and contributes nothing; its prints go
to stderr. A registration whose target cannot be a component of its kind is reported and skipped. The plugin
names of the first-party distributions belong to them: another distribution declaring one is refused (status
``refused``), always. ``DIFFFLOW_STRICT_PLUGINS=1`` makes every reported problem fatal, once loading has listed
them all. ``DIFFFLOW_DISABLE_PLUGINS=a,b`` skips plugins and ``DIFFFLOW_LOAD_PLUGINS=a,b`` loads only those (the
kernel's built-ins always load); a name that is not installed is reported.
"""
from __future__ import annotations

import contextlib
import os
import re
import threading
import warnings
from importlib import metadata
from typing import Any, Iterator

import attrs
import pluggy

from diffflow_core import hookspecs
from diffflow_core.errors import ConfigError, ConflictError, PluginError, did_you_mean
from diffflow_core.registry import Entry, Registry, guarded

__all__ = ["PluginInfo", "PluginManager", "isolated", "manager", "registry", "register", "register_plugin", "reset",
           "strict_mode"]

ENTRY_POINT_GROUP = "diffflow"
BUILTIN_PLUGIN = "core"
#: The first-party plugin names and the distributions that own them (the kernel's built-ins load as ``core``).
#: Another distribution declaring one of these names is refused, so it cannot replace the genuine plugin.
FIRST_PARTY_PLUGINS = {BUILTIN_PLUGIN: "diffflow-core", "solvers": "diffflow-solvers", "kl": "diffflow-kl",
                       "mmd": "diffflow-mmd", "score": "diffflow-score", "discriminator": "diffflow-discriminator",
                       "ndm": "diffflow-ndm", "velocity": "diffflow-velocity"}
#: Distributions of the core set: their component names are protected like built-ins.
FIRST_PARTY = frozenset(FIRST_PARTY_PLUGINS.values())
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}


@attrs.define
class PluginInfo:
    """What ``diffflow plugins`` shows for one plugin."""

    name: str
    distribution: str
    version: str
    status: str  # "active", "failed", "disabled", "not allowed", "refused"
    hooks: list[str] = attrs.Factory(list)
    error: str | None = None
    components: int = 0

    def as_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


def strict_mode() -> bool:
    """``DIFFFLOW_STRICT_PLUGINS`` read as a boolean (1/0, true/false, yes/no, on/off, any case; unset is off)."""
    value = os.environ.get("DIFFFLOW_STRICT_PLUGINS", "")
    if value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ConfigError(f"DIFFFLOW_STRICT_PLUGINS: unrecognised value {value!r}; expected 1/0, true/false, "
                      "yes/no or on/off")


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
        self._plugins: dict[str, PluginInfo] = {}
        self.refused: list[PluginInfo] = []  # distributions declaring a plugin name that is not theirs
        self._loaded = False
        self._loading = False
        self._strict = False
        self._problems: list[str] = []  # everything reported while loading; fatal at the end in strict mode
        self._fatal: PluginError | None = None
        self._lock = threading.RLock()

    # -- status --------------------------------------------------------------------------------------
    @property
    def plugins(self) -> dict[str, PluginInfo]:
        """Every plugin by name with its status, loading plugins first (no registry need be touched before).

        Like :meth:`infos` it is readable after a strict-mode failure, which the registries raise.
        """
        with contextlib.suppress(PluginError):
            self.load()
        return self._plugins

    def failed_summaries(self) -> list[str]:
        return [f"{p.name} ({p.error.splitlines()[0] if p.error else 'failed'})"
                for p in self._plugins.values() if p.status == "failed"]

    def infos(self) -> list[PluginInfo]:
        """Every plugin found, refused ones included, loading them first.

        A strict-mode failure does not hide the list (``diffflow plugins`` prints it, then fails): ``load()``
        raises it.
        """
        return sorted([*self.plugins.values(), *self.refused],
                      key=lambda p: (p.name != BUILTIN_PLUGIN, p.name, p.status == "refused"))

    # -- loading -------------------------------------------------------------------------------------
    def load(self) -> None:
        """Discover and load plugins once (safe to call repeatedly, from DDP ranks too).

        In strict mode every problem reported while loading becomes one ``PluginError``, raised now and on every
        later call instead of serving a partial registry.
        """
        if self._fatal is not None:
            raise self._fatal
        if self._loaded:
            return
        strict = strict_mode()  # an unrecognised value fails before anything loads
        with self._lock:  # other threads wait for the loader; the loader itself re-enters (hooks using registries)
            if self._loaded or self._loading:
                return
            self._loading, self._strict = True, strict
            try:
                from diffflow_core import builtins

                self._add_plugin(BUILTIN_PLUGIN, builtins, "diffflow-core", _version("diffflow-core"), protected=True)
                entry_points, names = self._discover()
                allowed, disabled = self._selection(names)
                for ep in entry_points:
                    self._load_entry_point(ep, allowed, disabled)
                if strict and self._problems:
                    self._fatal = PluginError("; ".join(self._problems))
                    raise self._fatal
            finally:
                self._loading = False
                self._loaded = True

    def _discover(self) -> tuple[list[metadata.EntryPoint], set[str]]:
        """The entry point to load for each plugin name, sorted by name, and every declared name.

        A first-party name loads only from the distribution that owns it; any other name from the first
        distribution on ``sys.path`` that declares it, as imports do. Every other declaration is refused.
        """
        declared: dict[str, dict[str, metadata.EntryPoint]] = {}
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            # one distribution found twice on sys.path (an editable install and a copy) counts once: the first
            declared.setdefault(ep.name, {}).setdefault(_normalise(_dist_name(ep)), ep)
        chosen = []
        for name, by_dist in sorted(declared.items()):
            owner = FIRST_PARTY_PLUGINS.get(name)
            winner = by_dist.get(owner) if owner is not None else next(iter(by_dist.values()))
            if winner is not None:
                chosen.append(winner)
            for ep in by_dist.values():
                if ep is not winner:
                    self._refuse(ep, owner, winner)
        return chosen, set(declared) | {BUILTIN_PLUGIN}

    def _refuse(self, ep: metadata.EntryPoint, owner: str | None, winner: metadata.EntryPoint | None) -> None:
        dist, version = _dist_name(ep), _dist_version(ep)
        if owner is not None:
            reason = (f"the plugin name '{ep.name}' belongs to the first-party distribution {owner}; "
                      f"{dist} may not replace it")
        else:
            reason = (f"the plugin name '{ep.name}' is also declared by {_dist_name(winner)}, which comes first "
                      "on sys.path and was loaded")
        self.refused.append(PluginInfo(ep.name, dist, version, "refused", error=reason))
        self._report(f"plugin '{ep.name}' ({dist} {version}) was refused: {reason}")

    def _selection(self, names: set[str]) -> tuple[set[str] | None, set[str]]:
        """``DIFFFLOW_LOAD_PLUGINS`` (None: all) and ``DIFFFLOW_DISABLE_PLUGINS``; names not installed are reported."""
        allowed, disabled = _env_list("DIFFFLOW_LOAD_PLUGINS"), _env_list("DIFFFLOW_DISABLE_PLUGINS") or set()
        for variable, chosen in (("DIFFFLOW_LOAD_PLUGINS", allowed or set()), ("DIFFFLOW_DISABLE_PLUGINS", disabled)):
            for unknown in sorted(chosen - names):
                self._report(f"{variable}: unknown plugin {unknown!r}{did_you_mean(unknown, names)}; "
                             f"installed plugins: {', '.join(sorted(names))}")
        return allowed, disabled

    def _load_entry_point(self, ep: metadata.EntryPoint, allowed: set[str] | None, disabled: set[str]) -> None:
        dist, version = _dist_name(ep), _dist_version(ep)
        if ep.name in disabled:
            self._plugins[ep.name] = PluginInfo(ep.name, dist, version, "disabled")
            return
        if allowed is not None and ep.name not in allowed:
            self._plugins[ep.name] = PluginInfo(ep.name, dist, version, "not allowed")
            return
        module, exc = guarded(ep.load)
        if exc is not None:
            self._fail(PluginInfo(ep.name, dist, version, "failed"), exc, "import failed")
            return
        self._add_plugin(ep.name, module, dist, version, protected=_normalise(dist) in FIRST_PARTY)

    def _add_plugin(self, name: str, module: Any, dist: str, version: str, *, protected: bool) -> None:
        """Validate ``module``'s hooks, call each in isolation, and commit its registrations atomically."""
        info = PluginInfo(name, dist, version, "active")
        self._plugins[name] = info

        def register_hooks() -> None:
            self.pm.register(module, name=name)
            self.pm.check_pending()

        _, exc = guarded(register_hooks)
        if exc is not None:  # unknown hook names, bad hookimpl signatures
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
                    staged.append(Entry(_kind, comp_name, target, name, dist, version,
                                        summary or _first_doc_line(target), protected))

                _, exc = guarded(lambda: impl.function(register=register))
                if exc is not None:
                    self.pm.unregister(module)
                    self._fail(info, exc, f"hook {hook_name} raised")
                    return
        self._commit(info, staged)

    def _commit(self, info: PluginInfo, staged: list[Entry]) -> None:
        """Add a plugin's valid registrations; report the invalid, refused and ambiguous ones (others are kept)."""
        problems = []
        for entry in staged:
            registry_ = self.registries[entry.kind]
            try:
                entry.check(resolve=self._strict)
                displaced = registry_.add(entry)
            except (PluginError, ConflictError) as exc:
                problems.append(str(exc))
                continue
            info.components += 1
            conflict = registry_.conflict(entry.name)
            if conflict is not None:
                problems.append(conflict)
            for other in displaced:
                self._report_displaced(other, entry)
        if problems:
            info.error = "; ".join(problems)
            self._report(f"plugin '{info.name}': {info.error}")

    def _report_displaced(self, displaced: Entry, by: Entry) -> None:
        """A protected component loaded after a third-party one of the same name replaced it: say so."""
        message = (f"{displaced.kind} '{displaced.name}' is provided by built-in plugin '{by.plugin}' "
                   f"({by.distribution} {by.version}); this plugin's registration was dropped")
        info = self._plugins.get(displaced.plugin)
        if info is not None:
            info.error = f"{info.error}; {message}" if info.error else message
            info.components -= 1
        self._report(f"plugin '{displaced.plugin}': {message}")

    def _fail(self, info: PluginInfo, exc: BaseException, what: str) -> None:
        info.status = "failed"
        info.error = f"{what}: {type(exc).__name__}: {exc}"
        self._plugins[info.name] = info
        self._report(f"plugin '{info.name}' ({info.distribution} {info.version}) was not loaded: {info.error}")

    def _report(self, problem: str) -> None:
        """Record a loading problem: a warning now, or (strict mode) part of the error ``load`` raises."""
        self._problems.append(problem)
        if not self._strict:
            warnings.warn(f"diffflow: {problem}", UserWarning, stacklevel=3)

    # -- programmatic registration -------------------------------------------------------------------
    def register_object(self, kind: str, name: str, target: Any, summary: str = "", plugin: str = "user") -> Entry:
        """Register one component without packaging it (notebooks, tests).

        Registering a name again from the same ``plugin`` replaces the earlier object (a re-run notebook cell).
        An invalid target raises ``PluginError`` at once (in strict mode a lazy string is imported now).
        """
        self.load()
        if kind not in self.registries:
            raise PluginError(f"kind: unknown component kind {kind!r}; expected one of {', '.join(hookspecs.KINDS)}")
        entry = Entry(kind, name, target, plugin, "(programmatic)", "-", summary or _first_doc_line(target))
        entry.check(resolve=self._strict)
        replaced = self.registries[kind].discard(name, plugin)
        self.registries[kind].add(entry)
        self._plugins.setdefault(plugin, PluginInfo(plugin, "(programmatic)", "-", "active"))
        self._plugins[plugin].components += 0 if replaced else 1
        return entry

    def register_plugin(self, module: Any, name: str) -> PluginInfo:
        """Register an object holding ``@hookimpl`` functions, as if it came from an entry point.

        Its problems are reported as an installed plugin's are; in strict mode they raise ``PluginError``.
        """
        self.load()
        taken = self._plugins.get(name)
        if taken is not None:
            raise PluginError(f"plugin name {name!r} is taken by {taken.distribution} {taken.version}; "
                              "choose another")
        reported = len(self._problems)
        self._add_plugin(name, module, "(programmatic)", "-", protected=False)
        if self._strict and len(self._problems) > reported:
            raise PluginError("; ".join(self._problems[reported:]))
        return self._plugins[name]


def _dist_name(ep: metadata.EntryPoint) -> str:
    return ep.dist.name if ep.dist is not None else "?"


def _dist_version(ep: metadata.EntryPoint) -> str:
    return ep.dist.version if ep.dist is not None else "?"


def _normalise(dist: str) -> str:
    """A distribution name as PyPI compares them (PEP 503): ``Diffflow_Score`` is ``diffflow-score``."""
    return re.sub(r"[-_.]+", "-", dist).lower()


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


@contextlib.contextmanager
def isolated() -> Iterator[PluginManager]:
    """A fresh process-wide plugin manager for the ``with`` block, the previous one restored afterwards.

    The new manager scans the entry points again on first use, so a test may install or register plugins,
    change ``DIFFFLOW_*`` settings or make loading fail without affecting what runs after it. Yields the manager
    (``registry`` and ``register`` in the block use it).
    """
    global _MANAGER
    saved, _MANAGER = _MANAGER, PluginManager()
    try:
        yield _MANAGER
    finally:
        _MANAGER = saved


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
