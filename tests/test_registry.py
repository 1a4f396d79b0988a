"""``Registry`` on its own: conflict rules, lazy targets, listing, creation and its error messages."""
from __future__ import annotations

import sys

import pytest

from diffflow_core import ConfigError, ConflictError, UnknownComponentError
from diffflow_core.registry import Entry, Registry, check_params


def make(failed: list[str] | None = None) -> Registry:
    return Registry("solvers", lambda: None, lambda: list(failed or []))


def entry(name: str, target, plugin: str = "p", protected: bool = False, dist: str = "dist-p") -> Entry:
    return Entry("solvers", name, target, plugin, dist, "1.0", "", protected)


class Thing:
    def __init__(self, size: int = 1, *, scale: float = 1.0) -> None:
        self.size, self.scale = size, scale


def test_protected_entry_wins_in_either_order():
    reg = make()
    reg.add(entry("x", "os:getcwd", plugin="third"))
    reg.add(entry("x", Thing, plugin="core", protected=True))  # a built-in loaded later still wins
    assert reg.get("x") is Thing
    with pytest.raises(ConflictError, match="solvers 'x' is provided by built-in plugin 'core' .*plugin 'late'"):
        reg.add(entry("x", "os:getcwd", plugin="late"))
    assert reg.get("x") is Thing


def test_three_providers_are_all_named():
    reg = make()
    for plugin in ("a", "b", "c"):
        reg.add(entry("dup", Thing, plugin=plugin, dist=f"dist-{plugin}"))
    with pytest.raises(ConflictError) as err:
        reg.entry("dup")
    assert all(f"'{p}' (dist-{p} 1.0)" in str(err.value) for p in "abc")
    assert reg.names() == ["dup"] and len(reg.list()) == 3 and "dup" not in reg


def test_lazy_target_resolves_dotted_attributes_once():
    reg = make()
    reg.add(entry("path-join", "os.path:join"))
    reg.add(entry("nested", "collections:OrderedDict.fromkeys"))
    import collections
    import os.path

    assert reg.get("path-join") is os.path.join
    assert reg.get("nested") == collections.OrderedDict.fromkeys
    assert reg.entry("path-join").target is os.path.join  # resolved target is cached


def test_missing_lazy_target_fails_when_used_not_when_registered():
    reg = make()
    reg.add(entry("ghost", "no_such_module_xyz:Thing"))
    assert "no_such_module_xyz" not in sys.modules and "ghost" in reg
    with pytest.raises(ModuleNotFoundError):
        reg.get("ghost")


def test_unknown_names_list_everything_and_failures():
    reg = make(failed=["bad (import failed: ImportError: x)"])
    reg.add(entry("heun", Thing))
    reg.add(entry("euler", Thing))
    with pytest.raises(UnknownComponentError) as err:
        reg.get("hune")
    assert str(err.value) == ("unknown solver 'hune'; did you mean 'heun'? Available solvers: euler, heun. "
                              "Plugins that failed to load: bad (import failed: ImportError: x).")
    with pytest.raises(UnknownComponentError, match="^unknown solver 'zzz'. Available solvers: euler, heun. Plugins"):
        reg.get("zzz")


def test_create_checks_parameters_before_constructing():
    reg = make()
    reg.add(entry("thing", Thing))
    reg.add(entry("preset", {"flow": "x"}))
    made = reg.create("thing", size=3, scale=0.5)
    assert (made.size, made.scale) == (3, 0.5)
    with pytest.raises(ConfigError, match=r"^solvers 'thing': unknown parameter 'sise'; did you mean 'size'\?; "
                                          r"accepted parameters: size, scale$"):
        reg.create("thing", sise=3)
    with pytest.raises(ConfigError, match="solvers 'preset' is not constructible"):
        reg.create("preset")


def test_check_params_allows_var_keywords():
    check_params("x", lambda **kw: None, {"anything": 1})
    with pytest.raises(ConfigError, match="accepted parameters: \\(none\\)"):
        check_params("x", lambda: None, {"a": 1})


def test_ensure_loaded_runs_before_every_read():
    calls = []
    reg = Registry("flows", lambda: calls.append(1), lambda: [])
    reg.names(), reg.list(), "x" in reg, list(reg)
    with pytest.raises(UnknownComponentError, match="unknown flow 'x'"):
        reg.get("x")
    assert len(calls) >= 5
    assert entry("a", Thing).describe() == {"kind": "solvers", "name": "a", "plugin": "p", "distribution": "dist-p",
                                            "version": "1.0", "summary": ""}


def test_discard_only_forgets_the_named_plugins_entry():
    reg = make()
    reg.add(entry("x", Thing, plugin="a"))
    assert not reg.discard("x", "b") and "x" in reg
    assert reg.discard("x", "a") and "x" not in reg and not reg.discard("x", "a")
