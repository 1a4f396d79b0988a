"""``diffflow plugins [--json]`` and ``diffflow list [KIND] [--json]``, called through ``cli.main``."""
from __future__ import annotations

import json
import types
import warnings

import pytest

from diffflow_core import hookimpl
from diffflow_core.cli import main
from diffflow_core.hookspecs import KINDS


@pytest.fixture
def plugins(fresh_plugins, monkeypatch):
    """The built-ins, the solvers, and one programmatic plugin whose hook raises."""
    monkeypatch.setenv("DIFFFLOW_LOAD_PLUGINS", "solvers")

    def broken(register):
        raise RuntimeError("kaput")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fresh_plugins.register_plugin(types.SimpleNamespace(register_flows=hookimpl(broken)), "broken")
    return fresh_plugins


def run(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out


def test_plugins_table_shows_status_hooks_and_errors(plugins, capsys):
    code, out = run(capsys, "plugins")
    lines = out.splitlines()
    assert code == 0
    assert lines[0].split() == ["plugin", "distribution", "version", "status", "components", "hooks"]
    assert lines[1].split()[:4] == ["core", "diffflow-core", lines[1].split()[2], "active"]  # built-ins first
    solvers = next(line for line in lines if line.startswith("solvers "))
    assert solvers.split()[1:] == ["diffflow-solvers", solvers.split()[2], "active", "13", "solvers,grids"]
    assert next(line for line in lines if line.startswith("broken ")).split()[3] == "failed"
    assert "broken: hook register_flows raised: RuntimeError: kaput" in out


def test_plugins_json(plugins, capsys):
    code, out = run(capsys, "plugins", "--json")
    rows = {row["name"]: row for row in json.loads(out)}
    assert code == 0 and set(rows) >= {"core", "solvers", "broken"}
    assert set(rows["solvers"]) == {"name", "distribution", "version", "status", "hooks", "error", "components"}
    assert rows["solvers"]["hooks"] == ["register_solvers", "register_grids"] and rows["solvers"]["error"] is None
    assert rows["broken"]["status"] == "failed" and "kaput" in rows["broken"]["error"]
    others = [row for name, row in rows.items() if name not in {"core", "solvers", "broken"}]
    assert all(row["status"] == "not allowed" for row in others)


def test_list_one_kind(plugins, capsys):
    code, out = run(capsys, "list", "solvers")
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["kind", "name", "plugin", "version", "summary"]
    assert {"euler", "euler-maruyama", "heun", "lms"} <= {line.split()[1] for line in lines[1:]}
    assert "Heun / explicit trapezoid" in out


def test_list_json_has_provenance_for_every_kind(plugins, capsys):
    code, out = run(capsys, "list", "--json")
    rows = json.loads(out)
    assert code == 0
    assert {row["kind"] for row in rows} >= {"smoothers", "solvers", "grids", "networks"}
    assert {row["kind"] for row in rows} <= set(KINDS)
    euler = next(row for row in rows if row["kind"] == "solvers" and row["name"] == "euler")
    assert euler["plugin"] == "solvers" and euler["distribution"] == "diffflow-solvers"
    assert set(euler) == {"kind", "name", "plugin", "distribution", "version", "summary"}
    identity = next(row for row in rows if row["name"] == "identity")
    assert (identity["plugin"], identity["distribution"]) == ("core", "diffflow-core")


def test_list_rejects_an_unknown_kind(plugins, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["list", "solver"])
    assert exit_.value.code == 2
    assert "invalid choice: 'solver'" in capsys.readouterr().err


def test_no_command_prints_help(capsys):
    code, out = run(capsys)
    assert code == 0 and "plugins" in out and "list" in out
