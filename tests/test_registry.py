"""``Registry`` on its own: conflict rules, lazy targets, listing, creation and its error messages."""
from __future__ import annotations

import sys
import threading

import pytest

from diffflow_core import ConfigError, ConflictError, PluginError, UnknownComponentError
from diffflow_core.registry import Entry, Registry, check_params, guarded


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


def test_missing_lazy_target_fails_when_used_naming_component_target_and_provider():
    reg = make()
    reg.add(entry("ghost", "no_such_module_xyz:Thing"))
    assert "no_such_module_xyz" not in sys.modules and "ghost" in reg
    with pytest.raises(PluginError, match=r"^solvers 'ghost' from plugin 'p' \(dist-p 1.0\): cannot import target "
                                          r"'no_such_module_xyz:Thing': ModuleNotFoundError"):
        reg.get("ghost")


@pytest.mark.parametrize("kind, target, problem", [
    ("solvers", 42, "target 42 (int) is not a class or a callable factory or a lazy 'module:attr' string"),
    ("solvers", None, "target None (NoneType) is not a class"),
    ("solvers", [Thing], "is not a class or a callable factory"),
    ("solvers", {"a": 1}, "target {'a': 1} (dict) is not a class"),
    ("solvers", "Thing", "target 'Thing' is not a lazy 'module:attr' string"),
    ("solvers", "os:", "target 'os:' is not a lazy"),
    ("solvers", "os path:join", "is not a lazy"),
    ("presets", 5, "target 5 (int) is not a mapping (a model config) or a lazy 'module:attr' string"),
    ("presets", "edm", "target 'edm' is not a lazy 'module:attr' string"),
    ("presets", Thing, "is not a mapping"),
])
def test_invalid_targets_are_refused_at_registration(kind, target, problem):
    bad = Entry(kind, "bad", target, "p", "dist-p", "1.0")
    with pytest.raises(PluginError, match=f"^{kind} 'bad' from plugin 'p' \\(dist-p 1.0\\): "):
        bad.check(resolve=False)
    with pytest.raises(PluginError) as err:
        bad.check(resolve=True)
    assert problem in str(err.value)


@pytest.mark.parametrize("name", ["", "  ", 42, None])
def test_a_name_must_be_a_non_empty_string(name):
    with pytest.raises(PluginError, match="the name must be a non-empty string"):
        entry(name, Thing).check(resolve=False)


def test_valid_targets_pass_and_lazy_ones_are_imported_only_when_resolving():
    for kind, target in [("solvers", Thing), ("solvers", len), ("grids", lambda steps: steps), ("presets", {}),
                         ("presets", "collections:OrderedDict.fromkeys"), ("solvers", "no_such_module_xyz:Thing")]:
        Entry(kind, "ok", target, "p", "dist-p", "1.0").check(resolve=False)
    assert "no_such_module_xyz" not in sys.modules
    with pytest.raises(PluginError, match="cannot import target 'no_such_module_xyz:Thing'"):
        entry("ghost", "no_such_module_xyz:Thing").check(resolve=True)
    resolved = Entry("presets", "od", "collections:OrderedDict", "p", "dist-p", "1.0")
    with pytest.raises(PluginError, match=r"target 'collections:OrderedDict' is <class 'collections.OrderedDict'> "
                                          r"\(type\), not a mapping"):
        resolved.check(resolve=True)


def test_a_lazy_preset_that_is_not_a_mapping_fails_when_used_not_as_a_traceback_later():
    """``diffflow presets badpreset`` used to print ``5``: the resolved object is checked for its kind."""
    reg = Registry("presets", lambda: None, lambda: [])
    reg.add(Entry("presets", "five", "math:pi", "p", "dist-p", "1.0"))
    with pytest.raises(PluginError, match=r"presets 'five' .*target 'math:pi' is 3.14.* \(float\), not a mapping"):
        reg.get("five")
    assert isinstance(reg.entry("five").target, str), "a refused object is not cached as the component"


def test_guarded_catches_every_exit_but_keyboard_interrupt_and_routes_prints_to_stderr(capsys):
    assert guarded(lambda: 7) == (7, None)
    for exc in (SystemExit(3), GeneratorExit(), ValueError("v")):
        def fail(exc=exc):
            raise exc
        assert guarded(fail) == (None, exc)
    with pytest.raises(KeyboardInterrupt):
        guarded(lambda: (_ for _ in ()).throw(KeyboardInterrupt()))
    stdout = sys.stdout
    guarded(lambda: print("from a plugin"))
    assert sys.stdout is stdout
    assert capsys.readouterr() == ("", "from a plugin\n")


def test_redirection_survives_overlapping_threads():
    """Two threads in plugin code at once must leave stdout as it was (redirect_stdout alone does not)."""
    stdout, inside, release = sys.stdout, threading.Barrier(2), threading.Event()

    def hold():
        inside.wait()
        release.wait(5)

    second = threading.Thread(target=guarded, args=(hold,))

    def enter_first_and_leave_first():
        second.start()
        inside.wait()  # the second thread is inside too

    guarded(enter_first_and_leave_first)
    release.set()
    second.join()
    assert sys.stdout is stdout


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
