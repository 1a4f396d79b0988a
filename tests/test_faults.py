"""Faults (issue 18): training killed at random points, inside checkpoint and log writes too, resumes to the
parameters of an uninterrupted run and leaves no file behind; a stalled DDP rank ends the others within the
collective timeout, named."""
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import tinymodel  # noqa: E402

TOML = """
preset = "rectified-flow"
[flow.network]
hidden = 16
depth = 1
[data]
name = "moons"
n_train = 256
n_test = 64
[train]
steps = 24
batch_size = 32
checkpoint_every = 3
log_every = 2
ema = 0.9
progress = false
"""
CHECKPOINTS, LOG_ROWS, STEPS = 8, 13, 24  # of the config above: steps 3, 6, ..., 24; rows 0, 2, ..., 22, 23

#: Runs the plan's trainings in children forked from one process that imported everything once (a fresh
#: interpreter per run would take most of the test's time). A child to be killed first arms a hook that
#: SIGKILLs it at the planned point: mid-way through writing a checkpoint ("write"), with the checkpoint
#: written but not yet renamed into place ("rename"), half-way through appending a log row ("log"), or in an
#: optimiser step ("step"). Each killed run is then continued the way a user would: --resume when a
#: checkpoint exists, else --overwrite.
DRIVER = textwrap.dedent("""
    import io, json, os, random, signal, sys, traceback
    import torch
    torch.set_num_threads(1)
    from diffflow_core.cli import main, parser
    from diffflow_core.plugins import registry
    from diffflow_core.training.logs import MetricLog

    # import once, before forking, what every run would otherwise import: commands, plugins, torch._dynamo (Adam)
    parser()
    registry("presets").get("rectified-flow")
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    plan = json.loads(sys.argv[1])

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    def arm(phase, at, rng):
        calls = [0]

        def due():
            calls[0] += 1
            return calls[0] == at

        if phase == "write":
            save = torch.save

            def torn_save(obj, f, *args, **kwargs):
                if not due():
                    return save(obj, f, *args, **kwargs)
                buffer = io.BytesIO()
                save(obj, buffer)
                f.write(buffer.getvalue()[:int(len(buffer.getvalue()) * rng.uniform(0.05, 0.95))])
                f.flush()
                die()
            torch.save = torn_save
        elif phase == "rename":
            replace = os.replace

            def unrenamed(src, dst):
                if str(dst).endswith("checkpoint.pt") and due():
                    die()
                return replace(src, dst)
            os.replace = unrenamed
        elif phase == "log":
            append = MetricLog.append

            def torn_append(self, row):
                if due():
                    text = json.dumps(row)
                    with self.jsonl.open("a") as f:
                        f.write(text[:rng.randrange(1, len(text))])
                    die()
                return append(self, row)
            MetricLog.append = torn_append
        else:
            step = torch.optim.Adam.step

            def killed_step(self, *args, **kwargs):
                if due():
                    die()
                return step(self, *args, **kwargs)
            torch.optim.Adam.step = killed_step

    def child(args, log, kill=None):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                with open(log, "a") as err, open(os.devnull, "w") as out:
                    os.dup2(err.fileno(), 2)
                    os.dup2(out.fileno(), 1)
                    if kill:
                        arm(*kill)
                    code = main(args)
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        return os.waitpid(pid, 0)[1]

    results = {"baseline": child(["train", plan["toml"], "--out", plan["baseline"]], plan["baseline"] + ".err")}
    for trial in plan["trials"]:
        folder = trial["folder"]
        kill = (trial["phase"], trial["at"], random.Random(trial["at"]))
        killed = child(["train", plan["toml"], "--out", folder], folder + ".killed.err", kill)
        resumed = os.path.exists(os.path.join(folder, "checkpoint.pt"))
        again = ["train", "--resume", "--out", folder] if resumed else ["train", plan["toml"], "--out", folder,
                                                                          "--overwrite"]
        results[folder] = {"killed": killed, "resumed": resumed, "status": child(again, folder + ".err")}
    print(json.dumps(results))
""")


def _rows(folder: Path) -> list[dict]:
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


def _state(folder: Path) -> dict[str, dict[str, torch.Tensor]]:
    payload = torch.load(folder / "checkpoint.pt", weights_only=True)
    state = payload["train_state"]
    return {"ema weights": payload["state_dict"], "raw weights": state["raw_state_dict"],
            "ema shadow": state["ema"], "step": {"step": torch.tensor(state["step"])}}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the driver forks its trainings")
def test_runs_killed_anywhere_resume_to_the_uninterrupted_parameters_leaving_nothing_behind(tmp_path):
    (tmp_path / "tiny.toml").write_text(TOML)
    rng = random.Random(18)
    counts = {"write": CHECKPOINTS, "rename": CHECKPOINTS, "log": LOG_ROWS, "step": STEPS}
    phases = ["write", "rename", "log", "step"] * 3
    trials = [{"folder": str(tmp_path / f"trial{i}"), "phase": phase, "at": rng.randint(1, counts[phase])}
              for i, phase in enumerate(phases[:10])]
    plan = {"toml": str(tmp_path / "tiny.toml"), "baseline": str(tmp_path / "baseline"), "trials": trials}
    proc = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(plan)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.splitlines()[-1])
    baseline = tmp_path / "baseline"
    assert results["baseline"] == 0, (tmp_path / "baseline.err").read_text()
    expected, rows, names = _state(baseline), _rows(baseline), sorted(p.name for p in baseline.iterdir())
    assert names == ["checkpoint.pt", "config.json", "metrics.csv", "metrics.jsonl"]
    for trial in trials:
        folder, result = Path(trial["folder"]), results[trial["folder"]]
        err = Path(trial["folder"] + ".err").read_text()
        where = f"{trial} {result}: {err}"
        assert os.WIFSIGNALED(result["killed"]) and os.WTERMSIG(result["killed"]) == signal.SIGKILL, where
        assert result["status"] == 0, where
        assert sorted(p.name for p in folder.iterdir()) == names, where  # no lock, no temporary file
        state = _state(folder)
        for part, tensors in expected.items():
            assert tensors.keys() == state[part].keys()
            assert all(torch.equal(tensors[k], state[part][k]) for k in tensors), (part, where)
        assert _rows(folder) == rows, where
        # the resumed run said what it cleaned up: the dead run's lock, its temporary file, its torn row
        assert "took over the lock of a run that is no longer running" in err, where
        if trial["phase"] in ("write", "rename"):
            assert "removed 1 temporary file(s) of interrupted writes" in err, where
        if trial["phase"] == "log" and result["resumed"]:
            assert "metrics.jsonl: dropped its last line" in err, where
    assert {t["phase"] for t in trials} == set(counts) and any(r["resumed"] for r in results.values()
                                                                if isinstance(r, dict))


DDP_SCRIPT = textwrap.dedent("""
    import os, sys, time
    import torch
    torch.set_num_threads(1)
    sys.path.insert(0, {tests!r})
    import tinymodel
    from diffflow_core import build
    from diffflow_core.training import Trainer
    from diffflow_core.training.distributed import DistContext

    tinymodel.ensure_registered()
    if os.environ["RANK"] == "1":  # rank 1 hangs before its third gradient all-reduce
        average, calls = DistContext.average, []

        def stalled(self, *args):
            calls.append(1)
            if len(calls) == 3:
                time.sleep(600)
            return average(self, *args)
        DistContext.average = stalled
    model = build(tinymodel.config(8))
    Trainer(model).fit(model.data)
""")


@pytest.mark.slow  # about 10 s: torchrun and two interpreters; the test below checks the same logic in-process
def test_a_stalled_ddp_rank_ends_the_others_within_the_timeout_and_is_named(tmp_path):
    script = tmp_path / "stall.py"
    script.write_text(DDP_SCRIPT.format(tests=str(Path(__file__).parent)))
    start = time.monotonic()
    proc = tinymodel.torchrun(script, timeout=120, DIFFFLOW_DDP_TIMEOUT="2")
    assert proc.returncode != 0
    assert time.monotonic() - start < 60  # gloo's default would wait 30 minutes
    message = next((line for line in proc.stderr.splitlines() if "CollectiveTimeout: distributed:" in line),
                   proc.stderr[-3000:])
    assert "distributed: rank 0 waited 2 s in all-reduce" in message, message
    assert "rank 1 (stopped at collective #" in message and "DIFFFLOW_DDP_TIMEOUT" in message, message


@pytest.mark.parametrize("value", ["abc", "0", "-5", "inf"])
def test_a_bad_ddp_timeout_is_a_clear_error(monkeypatch, value):
    from diffflow_core.errors import ConfigError
    from diffflow_core.training.distributed import collective_timeout

    monkeypatch.setenv("DIFFFLOW_DDP_TIMEOUT", value)
    with pytest.raises(ConfigError, match=f"DIFFFLOW_DDP_TIMEOUT: expected a positive number of seconds, got "
                                          f"'{value}'"):
        collective_timeout()
    monkeypatch.setenv("DIFFFLOW_DDP_TIMEOUT", "7.5")
    assert collective_timeout() == 7.5


def test_a_collective_timeout_names_the_ranks_that_never_arrived():
    from torch.distributed import HashStore

    from diffflow_core.training.distributed import CollectiveTimeout, DistContext

    context = DistContext()  # a single process; given the state of rank 0 of three that entered 4 collectives
    context.store, context.rank, context.world, context.timeout, context.entered = HashStore(), 0, 3, 2.0, 3
    context.store.set("1", "4")  # rank 1 is in the 4th collective too; rank 2 stopped after its 2nd
    context.store.set("2", "2")

    def gloo_timeout():
        raise RuntimeError("[gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting 2000ms for recv operation")

    with pytest.raises(CollectiveTimeout, match=r"rank 0 waited 2 s in all-reduce \(collective #4\) and gave up: "
                                                r"rank 2 \(stopped at collective #2\) stopped answering; .* raise "
                                                r"DIFFFLOW_DDP_TIMEOUT"):
        context._collective("all-reduce", gloo_timeout)
    assert context.store.get("0") == b"4"

    def other_failure():
        raise RuntimeError("Connection closed by peer")

    with pytest.raises(RuntimeError, match="Connection closed by peer"):  # not a timeout: left as it is
        context._collective("barrier", other_failure)
