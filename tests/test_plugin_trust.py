"""Plugin trust (issue 18, items 5-8): what an installed distribution can and cannot do to diffflow.

- A first-party plugin name belongs to its distribution: an impostor declaring it is refused, with and without
  strict mode, and the genuine plugin still loads.
- Plugin code cannot end the program (``SystemExit`` and other non-``KeyboardInterrupt`` ``BaseException``\\ s are
  a failed plugin), nor write into machine-readable stdout.
- Registrations are validated when made; the plugin environment variables reject typos.

Fake distributions are hand-written ``*.dist-info`` folders (``fakeplugins``); the CLI cases run the real command
in a fresh interpreter that finds them through ``PYTHONPATH``.
"""
from __future__ import annotations

import json
import sys
import tomllib
import warnings
from pathlib import Path

import pytest

from diffflow_core import PluginError
from diffflow_core.plugins import FIRST_PARTY_PLUGINS, strict_mode

sys.path.insert(0, str(Path(__file__).parent))
from fakeplugins import diffflow, fake_dist, only  # noqa: E402,F401 - fake_dist is a fixture

ROOT = Path(__file__).resolve().parents[1]

IMPOSTOR = """
from pathlib import Path
from diffflow_core import hookimpl

Path(MARKER).write_text("the impostor ran")

@hookimpl
def register_flows(register):
    register("score", "os:getcwd", "a look-alike score flow")

@hookimpl
def register_smoothers(register):
    register("identity", "os:getcwd", "a look-alike smoother")
"""


def impostor(fake_dist, tmp_path: Path, name: str):
    marker = tmp_path / "impostor-ran"
    dist = fake_dist(name, IMPOSTOR.replace("MARKER", repr(str(marker))), dist="aaa-squatter", version="6.6")
    return dist, marker


def test_first_party_plugin_names_are_the_entry_points_the_first_party_distributions_declare():
    declared = {}
    for pyproject in sorted(ROOT.glob("plugins/*/pyproject.toml")):
        project = tomllib.loads(pyproject.read_text())["project"]
        declared.update({name: project["name"] for name in project["entry-points"]["diffflow"]})
    assert declared == {k: v for k, v in FIRST_PARTY_PLUGINS.items() if k != "core"}
    assert FIRST_PARTY_PLUGINS["core"] == "diffflow-core"


@pytest.mark.parametrize("strict", [False, True], ids=["default", "strict"])
@pytest.mark.parametrize("name, kind, component, owner", [("score", "flows", "score", "diffflow-score"),
                                                          ("core", "smoothers", "identity", "diffflow-core")])
def test_an_impostor_of_a_first_party_plugin_is_refused(fresh_plugins, fake_dist, monkeypatch, tmp_path, strict,
                                                        name, kind, component, owner):
    """An 'aaa-squatter' distribution declaring entry point 'score' comes first on sys.path and used to load
    instead of diffflow-score; now it is never imported, and strict mode does not change that."""
    fake, marker = impostor(fake_dist, tmp_path, name)
    only(monkeypatch, name)
    refused = (rf"plugin '{name}' \(aaa-squatter 6.6\) was refused: the plugin name '{name}' belongs to the "
               f"first-party distribution {owner}; aaa-squatter may not replace it")
    if strict:
        monkeypatch.setenv("DIFFFLOW_STRICT_PLUGINS", "1")
        with pytest.raises(PluginError, match=refused):
            fresh_plugins.registry(kind)
    else:
        with pytest.warns(UserWarning, match=refused):
            registry = fresh_plugins.registry(kind)
        assert registry.entry(component).distribution == owner  # the genuine plugin still loads
        assert fresh_plugins.manager().plugins[name].distribution == owner
    assert not marker.exists() and fake.module not in sys.modules, "the impostor's code must never run"
    listed = [(i.distribution, i.status) for i in fresh_plugins.manager().infos() if i.name == name]
    assert listed == [(owner, "active"), ("aaa-squatter", "refused")]


def test_cli_strict_mode_prints_the_plugin_table_then_fails_naming_both_distributions(fake_dist, tmp_path):
    fake, marker = impostor(fake_dist, tmp_path, "score")
    out = diffflow(["plugins"], fake, cwd=tmp_path, DIFFFLOW_LOAD_PLUGINS="score", DIFFFLOW_STRICT_PLUGINS="1")
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines() == [
        "diffflow: error: plugin 'score' (aaa-squatter 6.6) was refused: the plugin name 'score' belongs to the "
        "first-party distribution diffflow-score; aaa-squatter may not replace it"]
    rows = [line.split()[:4] for line in out.stdout.splitlines() if line.startswith("score ")]
    assert rows == [["score", "diffflow-score", "0.1.0", "active"], ["score", "aaa-squatter", "6.6", "refused"]]
    assert not marker.exists()


EXITS = "import sys\nsys.exit(3)\n"


def test_cli_a_plugin_calling_sys_exit_at_import_is_a_failed_plugin_not_a_silent_exit(fake_dist, tmp_path):
    fake = fake_dist("exiter", EXITS)
    out = diffflow(["plugins"], fake, cwd=tmp_path, DIFFFLOW_LOAD_PLUGINS="exiter")
    assert out.returncode == 0, out.stderr
    assert ["exiter", "diffflow-fake-exiter", "1.2.3", "failed"] in [line.split()[:4] for line in
                                                                      out.stdout.splitlines()]
    assert "exiter: import failed: SystemExit: 3" in out.stdout
    assert "plugin 'exiter' (diffflow-fake-exiter 1.2.3) was not loaded: import failed: SystemExit: 3" in out.stderr


class Halt(BaseException):
    """A ``BaseException`` that is neither ``Exception`` nor ``KeyboardInterrupt``."""


@pytest.mark.parametrize("raised", [SystemExit(5), Halt("stop"), GeneratorExit()],
                         ids=["SystemExit", "BaseException", "GeneratorExit"])
def test_a_hook_raising_any_base_exception_fails_only_its_plugin(fresh_plugins, monkeypatch, raised):
    only(monkeypatch)

    def hook(register):
        register("never", "os:getcwd")
        raise raised

    from diffflow_core import hookimpl

    module = type(sys)("exits_in_hook")
    module.register_flows = hookimpl(hook)
    with pytest.warns(UserWarning, match=f"hook register_flows raised: {type(raised).__name__}"):
        info = fresh_plugins.register_plugin(module, "exits-in-hook")
    assert info.status == "failed" and "never" not in fresh_plugins.registry("flows")


def test_keyboard_interrupt_from_a_plugin_still_interrupts(fresh_plugins, fake_dist, monkeypatch):
    fake_dist("interrupts", "raise KeyboardInterrupt\n")
    only(monkeypatch, "interrupts")
    with pytest.raises(KeyboardInterrupt):
        fresh_plugins.registry("flows")


PRINTS = """
from diffflow_core import hookimpl

print("hello from import")

@hookimpl
def register_flows(register):
    print("hello from the hook")
    register("chatty-flow", "os:getcwd")
"""


@pytest.mark.parametrize("command", [["plugins", "--json"], ["list", "flows", "--json"]])
def test_cli_a_printing_plugin_cannot_break_json_output(fake_dist, tmp_path, command):
    fake = fake_dist("chatty", PRINTS)
    out = diffflow(command, fake, cwd=tmp_path, DIFFFLOW_LOAD_PLUGINS="chatty")
    assert out.returncode == 0, out.stderr
    names = {row["name"] for row in json.loads(out.stdout)}
    assert {"chatty", "chatty-flow"} & names
    assert "hello from import" in out.stderr and "hello from the hook" in out.stderr


INVALID = """
from diffflow_core import hookimpl

@hookimpl
def register_flows(register):
    register("int", 42)
    register("none", None)
    register("list", [1, 2])
    register("no-colon", "os.getcwd")
    register("not-importable", "no_such_module_xyz:Flow")
    register("fine", "os:getcwd")

@hookimpl
def register_presets(register):
    register("int-preset", 5)
    register("str-preset", "edm")
    register("fine-preset", {{"flow": "fine"}})
"""


def test_invalid_registrations_are_reported_and_skipped(fresh_plugins, fake_dist, monkeypatch):
    fake_dist("sloppy", INVALID)
    only(monkeypatch, "sloppy")
    with pytest.warns(UserWarning, match="plugin 'sloppy': flows 'int' from plugin 'sloppy'") as caught:
        flows = fresh_plugins.registry("flows")
    [message] = [str(w.message) for w in caught if "sloppy" in str(w.message)]
    for problem in ["flows 'int' from plugin 'sloppy' (diffflow-fake-sloppy 1.2.3): target 42 (int) is not a class",
                    "flows 'none' ", "target [1, 2] (list)", "target 'os.getcwd' is not a lazy 'module:attr' string",
                    "presets 'int-preset' ", "target 5 (int) is not a mapping",
                    "target 'edm' is not a lazy 'module:attr' string"]:
        assert problem in message
    assert "not-importable" not in message, "outside strict mode a lazy string is only checked for syntax"
    presets = fresh_plugins.registry("presets")
    assert sorted(e.name for e in flows.list() if e.plugin == "sloppy") == ["fine", "not-importable"]
    assert [e.name for e in presets.list() if e.plugin == "sloppy"] == ["fine-preset"]
    info = fresh_plugins.manager().plugins["sloppy"]
    assert info.status == "active" and info.components == 3 and "target 42 (int)" in info.error


def test_strict_mode_makes_invalid_registrations_fatal_and_imports_lazy_targets(fresh_plugins, fake_dist,
                                                                                 monkeypatch):
    fake_dist("sloppy", INVALID)
    only(monkeypatch, "sloppy")
    monkeypatch.setenv("DIFFFLOW_STRICT_PLUGINS", "true")
    with pytest.raises(PluginError) as err:
        fresh_plugins.registry("flows")
    assert "target 42 (int)" in str(err.value)
    assert ("flows 'not-importable' from plugin 'sloppy' (diffflow-fake-sloppy 1.2.3): cannot import target "
            "'no_such_module_xyz:Flow': ModuleNotFoundError") in str(err.value)


def test_programmatic_registration_refuses_invalid_targets_and_taken_plugin_names(fresh_plugins, monkeypatch):
    only(monkeypatch, "solvers")
    with pytest.raises(PluginError, match="presets 'p' from plugin 'user' .*target 5 \\(int\\) is not a mapping"):
        fresh_plugins.register("presets", "p", 5)
    assert "p" not in fresh_plugins.registry("presets")
    with pytest.raises(PluginError, match="plugin name 'solvers' is taken by diffflow-solvers"):
        fresh_plugins.register_plugin(type(sys)("empty"), "solvers")
    assert fresh_plugins.manager().plugins["solvers"].status == "active"


@pytest.mark.parametrize("value, expected", [
    *[(v, True) for v in ("1", "true", "True", "YES", "on", " On ")],
    *[(v, False) for v in ("0", "false", "FALSE", "no", "off", "")]])
def test_strict_mode_accepts_the_usual_boolean_spellings(monkeypatch, value, expected):
    monkeypatch.setenv("DIFFFLOW_STRICT_PLUGINS", value)
    assert strict_mode() is expected


@pytest.mark.parametrize("variable, value, unknown, hint", [
    ("DIFFFLOW_LOAD_PLUGINS", "solver", "solver", "; did you mean 'solvers'?"),
    ("DIFFFLOW_DISABLE_PLUGINS", "kll, score", "kll", "; did you mean 'kl'?"),
    ("DIFFFLOW_LOAD_PLUGINS", "solvers,zzz-nothing", "zzz-nothing", ""),
])
def test_unknown_plugin_names_in_the_selection_variables_are_reported(fresh_plugins, monkeypatch, variable, value,
                                                                      unknown, hint):
    only(monkeypatch, "solvers")
    monkeypatch.setenv(variable, value)
    with pytest.warns(UserWarning) as caught:
        fresh_plugins.registry("solvers")
    messages = [str(w.message) for w in caught]
    expected = f"diffflow: {variable}: unknown plugin {unknown!r}{hint}; installed plugins: core, "
    assert any(m.startswith(expected) for m in messages), messages
    monkeypatch.setenv("DIFFFLOW_STRICT_PLUGINS", "on")
    fresh_plugins.reset()
    with pytest.raises(PluginError, match=f"^{variable}: unknown plugin {unknown!r}"), warnings.catch_warnings():
        warnings.simplefilter("error")
        fresh_plugins.registry("solvers")


def test_cli_a_typo_in_a_plugin_variable_is_an_error_under_strict_mode(tmp_path):
    out = diffflow(["list", "solvers"], cwd=tmp_path, DIFFFLOW_LOAD_PLUGINS="solver", DIFFFLOW_STRICT_PLUGINS="yes")
    assert out.returncode == 2 and out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "diffflow: error: DIFFFLOW_LOAD_PLUGINS: unknown plugin 'solver'; did you mean 'solvers'?"), out.stderr


def test_cli_an_unrecognised_strict_value_is_an_error_naming_the_variable(tmp_path):
    out = diffflow(["plugins"], cwd=tmp_path, DIFFFLOW_STRICT_PLUGINS="maybe")
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip().splitlines() == [
        "diffflow: error: DIFFFLOW_STRICT_PLUGINS: unrecognised value 'maybe'; expected 1/0, true/false, yes/no "
        "or on/off"]
