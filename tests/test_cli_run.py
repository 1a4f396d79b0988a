"""The CLI end to end on a tiny config: run folder contents, sample/eval/train from checkpoints, errors."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import tinymodel  # noqa: E402

from diffflow_core.cli import main, parser  # noqa: E402
from diffflow_core.commands import run as run_command  # noqa: E402
from diffflow_core.plugins import registry  # noqa: E402

TOML = """
[flow]
name = "tiny-score"
[objective]
name = "tiny-dsm"
[solver]
name = "heun"
[data]
name = "ring5"
n_train = 512
n_test = 512
[train]
batch_size = 32
lr = 1e-3
ema = 0.9
progress = false
[sample]
steps = 4
n = 64
"""


@pytest.fixture(autouse=True)
def _registered():
    tinymodel.ensure_registered()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    tinymodel.ensure_registered()
    folder = tmp_path_factory.mktemp("cli")
    (folder / "tiny.toml").write_text(TOML)
    code = main(["run", str(folder / "tiny.toml"), "--steps", "20", "--n", "300", "--nfe", "8", "--seed", "3",
                 "--out", str(folder / "run")])
    assert code == 0
    return folder


def test_run_writes_the_whole_run_folder(finished_run):
    out = finished_run / "run"
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "checkpoint.pt", "samples.npy", "metrics.json", "samples.png", "trajectory.png",
            "metrics.jsonl", "metrics.csv"} <= names
    samples = np.load(out / "samples.npy")
    assert samples.dtype == np.float32 and samples.shape == (300, 2)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["nfe"] == 8 and metrics["solver_steps"] == 4 and metrics["train_steps"] == 20
    assert metrics["w2"]["seeds"] == 3 and metrics["w2"]["ratio"] > 0
    assert metrics["test_nll"]["exact"] > 0 and np.isfinite(metrics["test_nll"]["model"])
    assert json.loads((out / "config.json").read_text())["train"]["steps"] == 20


def test_sample_from_the_checkpoint_reproduces_the_run_samples(finished_run, tmp_path):
    out = tmp_path / "again.npy"
    assert main(["sample", "--checkpoint", str(finished_run / "run" / "checkpoint.pt"), "--n", "300",
                 "--nfe", "8", "--seed", "3", "--out", str(out)]) == 0
    assert np.array_equal(np.load(out), np.load(finished_run / "run" / "samples.npy"))


def test_eval_reports_metrics(finished_run, tmp_path, capsys):
    target = tmp_path / "m.json"
    assert main(["eval", "--checkpoint", str(finished_run / "run" / "checkpoint.pt"), "--n", "200",
                 "--out", str(target)]) == 0
    metrics = json.loads(target.read_text())
    assert metrics["n"] == 200 and metrics["nfe"] == 8  # the config's 4 Heun steps


def test_train_then_resume_continues_to_more_steps(finished_run, tmp_path):
    cfg = str(finished_run / "tiny.toml")
    assert main(["train", cfg, "--steps", "6", "--out", str(tmp_path)]) == 0
    assert main(["train", "--steps", "10", "--out", str(tmp_path), "--resume"]) == 0  # the folder's own config
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["train_state"]
    assert state["step"] == 10
    steps = [json.loads(r)["step"] for r in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 5, 9]  # log_every 50: the first and last step of each invocation


def test_a_resumed_run_can_end_in_a_learning_rate_cool_down(finished_run, tmp_path):
    """``--set train.decay`` on resume: constant rate until the last fraction of the new steps, then linear to 0."""
    cfg = str(finished_run / "tiny.toml")
    assert main(["train", cfg, "--steps", "6", "--out", str(tmp_path), "--set", "train.warmup=0"]) == 0
    assert main(["train", "--steps", "10", "--out", str(tmp_path), "--resume", "--set", "train.decay=0.4"]) == 0
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["train_state"]
    (group,) = state["optimizers"][0]["param_groups"]
    assert group["lr"] == pytest.approx(group["base_lr"] * 0.25)  # step 9 of 10, decay over the last 4


def test_data_from_a_npy_file(finished_run, tmp_path):
    points = torch.randn(400, 2, generator=torch.Generator().manual_seed(0)).numpy() * 0.5 + 2.0
    np.save(tmp_path / "mine.npy", points)
    out = tmp_path / "run"
    assert main(["run", str(finished_run / "tiny.toml"), "--data", str(tmp_path / "mine.npy"), "--steps", "3",
                 "--n", "100", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert "w2" in metrics and "test_nll" not in metrics  # user data has no closed-form density
    assert json.loads((out / "config.json").read_text())["data"]["name"].endswith("mine.npy")


def test_set_data_settings_apply_to_the_named_data_or_the_config_s(finished_run, tmp_path, capsys):
    points = torch.randn(400, 2, generator=torch.Generator().manual_seed(0)).numpy()
    np.save(tmp_path / "mine.npy", points)
    cfg = str(finished_run / "tiny.toml")
    common = ["--steps", "2", "--n", "50"]
    assert main(["run", cfg, "--data", str(tmp_path / "mine.npy"), "--set", "data.test_fraction=0.25", *common,
                 "--out", str(tmp_path / "a")]) == 0
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["data"]["test"] == 100
    assert main(["run", cfg, "--set", "data.name='moons'", *common, "--out", str(tmp_path / "b")]) == 0
    assert json.loads((tmp_path / "b" / "config.json").read_text())["data"]["name"] == "moons"
    capsys.readouterr()
    assert main(["run", cfg, "--data", "moons", "--set", "data.name='ring5'", *common]) == 2
    assert "--data moons contradicts --set data.name=ring5" in capsys.readouterr().err


def test_errors_are_reported_without_a_traceback(tmp_path, capsys):
    assert main(["run", str(tmp_path / "missing.toml")]) == 2
    assert "diffflow: error: config: file" in capsys.readouterr().err
    (tmp_path / "t.toml").write_text(TOML)
    assert main(["run", str(tmp_path / "t.toml"), "--nfe", "0", "--out", str(tmp_path / "r")]) == 2
    assert "--nfe: expected a positive" in capsys.readouterr().err
    assert main(["sample", "--checkpoint", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "x.npy")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["bench", "no-such-bench"]) == 2
    assert "unknown benchmark" in capsys.readouterr().err


def test_presets_lists_and_shows(capsys):
    assert main(["presets", "--json"]) == 0
    names = {e["name"] for e in json.loads(capsys.readouterr().out)}
    assert names == set(registry("presets").names())


def test_no_arguments_means_edm_on_ring5():
    if "edm" not in registry("presets"):
        pytest.skip("the diffflow-score plugin is not installed")
    args = parser().parse_args(["run", "--steps", "1"])
    model = run_command.build_model(args)
    assert model.config.preset == "edm" and model.data.name == "ring5"
    assert run_command.steps_for_nfe(model, 35) == 18  # Heun: 2 * 18 - 1 = 35 evaluations
