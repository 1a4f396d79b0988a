"""Run folders (issue 18, items 1-4): one owner at a time, no silent replacement, resume validated before any
write, leftovers of killed writers removed, a torn last log row dropped; refused commands change nothing."""
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from diffflow_core.cli import main
from diffflow_core.errors import CheckpointError, ConfigError
from diffflow_core.runfolder import LOCK, RunFolder
from diffflow_core.training.logs import MetricLog

TOML = """
preset = "rectified-flow"
[flow.network]
hidden = 16
depth = 1
[train]
batch_size = 32
checkpoint_every = 2
log_every = 2
progress = false
[sample]
n = 64
steps = 2
"""


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "diffflow_core.cli", *args], capture_output=True, text=True,
                          timeout=120)


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folder`` with its bytes and mode: equal snapshots mean an untouched folder."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mode) for p in sorted(folder.rglob("*"))
            if p.is_file()}


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("diffflow: error: ") and proc.stderr.count("\n") == 1, proc.stderr
    for needle in needles:
        assert needle in proc.stderr, (needle, proc.stderr)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished 'diffflow train' run folder (rectified flow on moons, 4 steps); copy it before changing it."""
    root = tmp_path_factory.mktemp("trained")
    (root / "tiny.toml").write_text(TOML)
    assert main(["train", str(root / "tiny.toml"), "--data", "moons", "--steps", "4", "--out",
                 str(root / "run")]) == 0
    return root


@pytest.fixture
def run(trained, tmp_path) -> Path:
    shutil.copytree(trained / "run", tmp_path / "run")
    return tmp_path / "run"


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# -- item 1: ownership ---------------------------------------------------------------------------------
def test_a_second_owner_is_refused_with_the_holder_named_and_the_lock_released_after(tmp_path):
    with RunFolder(tmp_path / "f") as folder:
        holder = json.loads((tmp_path / "f" / LOCK).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname() and holder["started"]
        with pytest.raises(ConfigError, match=rf"in use by another run \(pid {os.getpid()} on "):
            RunFolder(folder.path).__enter__()
        assert json.loads((tmp_path / "f" / LOCK).read_text()) == holder  # the refused one took nothing
    assert not (tmp_path / "f").exists()  # created, left empty: removed again


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, RuntimeError])
def test_the_lock_is_released_on_errors_and_ctrl_c(tmp_path, interrupt):
    (tmp_path / "f").mkdir()
    with pytest.raises(interrupt):
        with RunFolder(tmp_path / "f"):
            raise interrupt()
    assert list((tmp_path / "f").iterdir()) == []
    with RunFolder(tmp_path / "f"):  # and the folder can be owned again
        pass


def test_a_run_into_a_folder_held_by_a_live_run_is_refused_at_the_cli(trained, tmp_path):
    (tmp_path / "f").mkdir()
    with RunFolder(tmp_path / "f"):
        before = snapshot(tmp_path / "f")
        proc = cli("run", str(trained / "tiny.toml"), "--data", "moons", "--steps", "2", "--out", str(tmp_path / "f"))
        assert_one_line_error(proc, f"{tmp_path / 'f'} is in use by another run (pid {os.getpid()} on "
                                    f"{socket.gethostname()}", "choose another --out")
        assert snapshot(tmp_path / "f") == before


def test_a_stale_lock_of_a_dead_run_is_taken_over_and_reported(tmp_path, capsys):
    (tmp_path / LOCK).write_text(json.dumps({"pid": dead_pid(), "host": socket.gethostname(),
                                             "command": "diffflow run a.toml", "started": "2025-01-01 00:00:00"}))
    with RunFolder(tmp_path):
        assert json.loads((tmp_path / LOCK).read_text())["pid"] == os.getpid()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "took over the lock of a run that is no longer running" in err
    assert "diffflow run a.toml" in err and not (tmp_path / LOCK).exists()


@pytest.mark.parametrize("lock", [{"pid": 0, "host": "elsewhere.example"}, "not json"])
def test_locks_that_cannot_be_checked_are_refused(tmp_path, lock):
    if isinstance(lock, dict):
        lock["pid"] = dead_pid()  # dead here, but the lock is another host's
    (tmp_path / LOCK).write_text(json.dumps(lock) if isinstance(lock, dict) else lock)
    with pytest.raises(ConfigError, match="another run|names no owner") as error:
        RunFolder(tmp_path).__enter__()
    assert str(tmp_path / LOCK) in str(error.value)
    assert (tmp_path / LOCK).exists()


# -- item 2: no silent replacement ---------------------------------------------------------------------
def test_train_into_a_run_folder_without_resume_or_overwrite_is_refused(trained, run):
    before = snapshot(run)
    proc = cli("train", str(trained / "tiny.toml"), "--data", "moons", "--steps", "2", "--out", str(run))
    assert_one_line_error(proc, f"--out: {run} already holds a run", "--resume", "--overwrite", "another --out")
    assert snapshot(run) == before


def test_run_refuses_too_and_overwrite_replaces_the_whole_run(trained, run, capsys):
    before = snapshot(run)
    (run / "samples.png").write_bytes(b"an old picture")
    base = ["run", str(trained / "tiny.toml"), "--data", "moons", "--out", str(run)]
    assert main([*base, "--steps", "2", "--nfe", "2"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(["run", "--out", str(run), "--resume", "--overwrite"]) == 2
    assert "--resume and --overwrite" in capsys.readouterr().err
    assert {k: v for k, v in snapshot(run).items() if k != "samples.png"} == before
    assert main(["train", str(trained / "tiny.toml"), "--data", "moons", "--steps", "2", "--out", str(run),
                 "--overwrite"]) == 0
    state = torch.load(run / "checkpoint.pt", weights_only=True)["train_state"]
    assert state["step"] == 2 and [r["step"] for r in map(json.loads, (run / "metrics.jsonl").open())] == [0, 1]
    assert not (run / "samples.png").exists()  # nothing of the old run survives next to the new one


def test_an_existing_folder_without_a_run_is_used_quietly(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with RunFolder(tmp_path):
        pass
    assert snapshot(tmp_path) == {"notes.txt": (b"mine", (tmp_path / "notes.txt").stat().st_mode)}


def test_out_naming_a_file_is_a_clear_error(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(ConfigError, match=r"--out: .* is a file"):
        RunFolder(tmp_path / "f").__enter__()


# -- item 3: resume is validated before anything is written ---------------------------------------------
def test_resume_with_a_config_json_of_another_model_changes_nothing(trained, run, tmp_path):
    other = json.loads((run / "config.json").read_text())
    other["flow"]["network"]["hidden"] = 32  # config.json now describes another model than the checkpoint
    (run / "config.json").write_text(json.dumps(other, indent=2))
    before = snapshot(run)
    proc = cli("train", "--resume", "--steps", "8", "--out", str(run))
    assert_one_line_error(proc, f"{run / 'checkpoint.pt'} was trained with another config",
                          "flow.network.hidden is 16 in the checkpoint, 32 in the config")
    assert snapshot(run) == before


def test_resume_from_a_damaged_or_missing_checkpoint_changes_nothing(run, capsys):
    data = bytearray((run / "checkpoint.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (run / "checkpoint.pt").write_bytes(bytes(data))
    before = snapshot(run)
    assert main(["train", "--resume", "--steps", "8", "--out", str(run)]) == 2
    assert "checkpoint.pt is corrupt" in capsys.readouterr().err
    assert snapshot(run) == before
    (run / "checkpoint.pt").unlink()
    with pytest.raises(ConfigError, match="holds no checkpoint.pt to continue; drop --resume"):
        RunFolder(run, resume=True).__enter__()
    assert not (run / LOCK).exists()


def test_resume_accepts_more_steps_and_new_reporting(run):
    config = json.loads((run / "config.json").read_text())
    config["train"].update(steps=9, log_every=1, progress=True)
    with RunFolder(run, config, resume=True):
        pass


# -- item 4: leftovers and torn log rows ----------------------------------------------------------------
def test_temp_files_of_dead_writers_are_removed_and_live_ones_kept(tmp_path, capsys):
    dead, live = dead_pid(), os.getppid()
    names = {"dead": f"checkpoint.pt.{dead}.0123abcd.tmp", "live": f"checkpoint.pt.{live}.0123abcd.tmp",
             "old": "checkpoint.ptq8_2kzx1.tmp", "log": f"metrics.jsonl.{dead}.89abcdef.tmp", "user": "notes.tmp"}
    for name in names.values():
        (tmp_path / name).write_bytes(b"x" * 1000)
    with RunFolder(tmp_path):
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([LOCK, names["live"], names["user"]])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "removed 3 temporary file(s) of interrupted writes" in err


def test_a_torn_last_row_is_dropped_with_one_line_and_resume_continues(run, capsys):
    rows = (run / "metrics.jsonl").read_bytes()
    with (run / "metrics.jsonl").open("ab") as f:
        f.write(b'{"step": 3, "loss/model": 0.5')  # a kill mid-append
    assert main(["train", "--resume", "--steps", "6", "--out", str(run)]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "metrics.jsonl: dropped its last line" in err
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [json.loads(line)["step"] for line in rows.decode().splitlines()] + [4, 5]


def test_metric_log_recovers_only_a_torn_tail(tmp_path, capsys):
    (tmp_path / "metrics.jsonl").write_bytes(b'{"step": 0}\n{"step": 1}\n{"note": "\xc3')  # cut in a character
    assert MetricLog(tmp_path, keep=5).rows == [{"step": 0}, {"step": 1}]
    assert "dropped its last line" in capsys.readouterr().err
    assert (tmp_path / "metrics.jsonl").read_text() == '{"step": 0}\n{"step": 1}\n'
    (tmp_path / "metrics.jsonl").write_text('{"step": 0}\n{"st\n{"step": 2}\n')
    with pytest.raises(CheckpointError, match=r"metrics.jsonl line 2 is not a JSON row"):
        MetricLog(tmp_path, keep=5)
