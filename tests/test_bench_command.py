"""``diffflow bench``: outputs go to ``--out`` (default: the user's cache, never the source tree), helpers are not
benchmarks, unknown names are one-line errors. A fake benchmarks folder stands in: no real benchmark runs."""
import pytest

from diffflow_core.cli import main
from diffflow_core.commands import bench

PROBE = '''"""Probe: records the output folder it was given."""
import os
from pathlib import Path

Path(os.environ["DIFFFLOW_BENCH_OUT"], "probe.txt").write_text(os.environ["DIFFFLOW_BENCH_OUT"])
'''


@pytest.fixture
def fake_benchmarks(tmp_path, monkeypatch):
    folder = tmp_path / "benchmarks"
    folder.mkdir()
    (folder / "probe.py").write_text(PROBE)
    (folder / "_helper.py").write_text('"""A shared helper, not a benchmark."""\n')
    monkeypatch.setattr(bench, "benchmarks_dir", lambda: folder)
    monkeypatch.delenv(bench.OUT_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return folder


def test_out_reaches_the_scripts_and_is_printed(fake_benchmarks, tmp_path, capsys):
    out = tmp_path / "results"
    assert main(["bench", "probe", "--out", str(out)]) == 0
    assert (out / "probe.txt").read_text() == str(out.resolve())
    assert f"bench outputs: {out.resolve()}" in capsys.readouterr().out


def test_default_out_is_the_cache_folder(fake_benchmarks, tmp_path):
    assert main(["bench", "probe"]) == 0
    assert (tmp_path / "cache" / "diffflow" / "bench" / "probe.txt").is_file()
    assert sorted(p.name for p in fake_benchmarks.iterdir()) == ["_helper.py", "probe.py"]  # nothing in the tree


def test_output_dir_honours_the_variable_then_an_absolute_xdg_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(bench.OUT_ENV, str(tmp_path / "env"))
    assert bench.output_dir() == tmp_path / "env" and (tmp_path / "env").is_dir()
    assert bench.output_dir(tmp_path / "given") == tmp_path / "given"
    monkeypatch.delenv(bench.OUT_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # not absolute: ignored, as the XDG spec says
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert bench.output_dir() == tmp_path / "home" / ".cache" / "diffflow" / "bench"


def test_list_shows_benchmarks_not_helpers(fake_benchmarks, capsys):
    assert main(["bench", "--list"]) == 0
    out = capsys.readouterr().out
    assert "probe" in out and "records the output folder" in out and "_helper" not in out


def test_the_real_benchmarks_are_listed(capsys):
    assert main(["bench", "--list"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert "engine_overhead" in names and not any(name.startswith("_") for name in names)


def test_unknown_benchmark_is_a_one_line_error(fake_benchmarks, tmp_path, capsys):
    assert main(["bench", "prob", "--out", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("diffflow: error: bench: unknown benchmark 'prob'; did you mean 'probe'?")
    assert err.count("\n") == 1 and not (tmp_path / "results").exists()


def test_out_that_is_a_file_is_a_one_line_error(fake_benchmarks, tmp_path, capsys):
    (tmp_path / "taken").write_text("")
    assert main(["bench", "probe", "--out", str(tmp_path / "taken")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("diffflow: error: bench: output folder") and "--out" in err and err.count("\n") == 1
