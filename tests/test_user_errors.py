"""Issue 18 (items 12-13): a user's mistake is one line ``diffflow: error: ...`` with exit 2 naming the field or
flag, the value and the expectation; silent wrong successes (diverged samples or training) warn on stderr."""
import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import tinymodel  # noqa: E402

from diffflow_core.cli import main  # noqa: E402
from diffflow_core.model import Model, Samples  # noqa: E402


@pytest.fixture(autouse=True)
def _registered():
    tinymodel.ensure_registered()


def _config(folder: Path, steps: int = 5, **train) -> str:
    path = folder / "tiny.json"
    path.write_text(json.dumps(tinymodel.config(steps=steps, **train)))
    return str(path)


def _one_line(capsys, kind: str) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("diffflow:")]  # not sample's progress bar
    assert len(lines) == 1 and lines[0].startswith(f"diffflow: {kind}: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("assignment,expected", [
    ('train.betas="ab"', ["train.betas", "'ab'", "two numbers in [0, 1)"]),
    ("train.betas=[0.9]", ["train.betas", "[0.9]", "two numbers in [0, 1)"]),
    ("train.betas=[0.9, 1.5]", ["train.betas", "1.5", "[0, 1)"]),
    ("train.betas=[-0.1, 0.9]", ["train.betas", "-0.1", "[0, 1)"]),
    ("train.lr=nan", ["train.lr", "nan", "positive number", "not a finite number"]),
    ("train.lr=inf", ["train.lr", "inf", "positive number", "not a finite number"]),
    ("train.grad_clip=inf", ["train.grad_clip", "inf", "positive number"]),
    ("train.grad_clip=nan", ["train.grad_clip", "nan", "positive number"]),
    ("train.weight_decay=nan", ["train.weight_decay", "nan", ">= 0"]),
    ("train.ema=nan", ["train.ema", "nan", "[0, 1)"]),
    ('train.progress="no"', ["train.progress", "'no'", "true or false"]),
    ("train.progress=1", ["train.progress", "1", "true or false"]),
    ("train.seed=1.5", ["train.seed", "1.5", "an integer"]),
    ('train.seed="5"', ["train.seed", "'5'", "an integer"]),
    ('flow.hidden="big"', ["hidden", "'big'", "positive integer"]),
])
def test_bad_settings_are_one_line_errors(tmp_path, capsys, assignment, expected):
    code = main(["train", _config(tmp_path), "--set", assignment, "--out", str(tmp_path / "run")])
    assert code == 2
    line = _one_line(capsys, "error")
    for part in expected:
        assert part in line, (part, line)
    assert not (tmp_path / "run").exists()


def test_finite_settings_still_pass():
    from diffflow_core.config import TrainConfig

    cfg = TrainConfig(betas=[0.5, 0.9], lr=1e-3, grad_clip=1.0, weight_decay=0, ema=0.0, progress=False, seed=3)
    assert cfg.betas == (0.5, 0.9)


@pytest.mark.parametrize("flags,expected", [
    (["--n", str(10**12)], ["n=1000000000000", "memory", "--n"]),
    (["--nfe", str(10**12)], ["steps=", "memory", "--nfe"]),
])
def test_run_refuses_a_draw_that_cannot_fit_in_memory_before_training(tmp_path, capsys, flags, expected):
    code = main(["run", _config(tmp_path), *flags, "--out", str(tmp_path / "run")])
    assert code == 2
    line = _one_line(capsys, "error")
    for part in expected:
        assert part in line, (part, line)
    assert "TiB" in line or "PiB" in line or "EiB" in line
    assert not (tmp_path / "run").exists()  # refused before training: nothing written


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    tinymodel.ensure_registered()
    folder = tmp_path_factory.mktemp("ue")
    assert main(["train", _config(folder, steps=3), "--out", str(folder / "run")]) == 0
    return folder / "run" / "checkpoint.pt"


def test_sample_and_eval_refuse_a_huge_n(checkpoint, tmp_path, capsys):
    capsys.readouterr()
    for command in (["sample", "--out", str(tmp_path / "s.npy")], ["eval"]):
        code = main([command[0], "--checkpoint", str(checkpoint), "--n", str(10**12), *command[1:]])
        assert code == 2
        line = _one_line(capsys, "error")
        assert "n=1000000000000" in line and "memory" in line
    assert not (tmp_path / "s.npy").exists()


def test_absurd_samples_warn_but_succeed(checkpoint, tmp_path, capsys, monkeypatch):
    capsys.readouterr()
    assert main(["sample", "--checkpoint", str(checkpoint), "--n", "16", "--out", str(tmp_path / "ok.npy")]) == 0
    assert "warning" not in capsys.readouterr().err

    real = Model.sample

    def exploding(self, *args, **kwargs):  # a sampler that diverged: samples of 1e27
        samples = real(self, *args, **kwargs)
        return Samples(samples.x * 1e27, samples.nfe, samples.trajectory, samples.times)

    monkeypatch.setattr(Model, "sample", exploding)
    assert main(["sample", "--checkpoint", str(checkpoint), "--n", "16", "--out", str(tmp_path / "bad.npy")]) == 0
    line = _one_line(capsys, "warning")
    assert "e+2" in line and "data's largest |x|" in line and "diverged" in line


def test_a_diverging_training_warns(tmp_path, capsys):
    assert main(["train", _config(tmp_path, steps=20, lr=50.0), "--out", str(tmp_path / "bad")]) == 0
    line = _one_line(capsys, "warning")
    assert "training diverged" in line and "loss/model" in line and "train.lr" in line
    (tmp_path / "good").mkdir()
    assert main(["train", _config(tmp_path / "good", steps=20), "--out", str(tmp_path / "good" / "run")]) == 0
    assert "warning" not in capsys.readouterr().err


# -- checkpoints and the file system -----------------------------------------------------------------------------
def test_a_checkpoint_whose_plugin_is_missing_names_the_distribution(tmp_path, monkeypatch, fresh_plugins):
    from diffflow_core import build
    from diffflow_core.errors import CheckpointError
    from diffflow_core.model import Model

    model = build({"flow": {"name": "ornstein-uhlenbeck"}, "solver": "euler", "sample": {"steps": 2}})
    model.save(tmp_path / "ou.pt")
    monkeypatch.setenv("DIFFFLOW_DISABLE_PLUGINS", "example")
    fresh_plugins.reset()
    with pytest.raises(CheckpointError, match=r"needs flow 'ornstein-uhlenbeck' from diffflow-example 0\.\d.*"
                                              r"install diffflow-example"):
        Model.load(tmp_path / "ou.pt")


def test_a_full_disk_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch, capsys):
    out = tmp_path / "r"
    argv = ["train", "--preset", "rectified-flow", "--steps", "2", "--set", "train.progress=false", "--out", str(out)]
    assert main(argv) == 0
    before = (out / "checkpoint.pt").read_bytes()

    def full(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1088 vs 998")

    monkeypatch.setattr(torch, "save", full)
    capsys.readouterr()
    assert main(["train", "--resume", "--steps", "4", "--out", str(out)]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("diffflow: error: ") and "checkpoint.pt: the disk is full" in line
    assert (out / "checkpoint.pt").read_bytes() == before
    assert not list(out.glob("*.tmp"))


def test_an_out_that_is_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["run", "--preset", "kl", "--out", str(tmp_path / "file")]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("diffflow: error: ") and "file" in line


@pytest.mark.parametrize("make, expected", [
    (lambda p: p.write_bytes(b"[train]\nsteps = 3\n# \xff\xfe not UTF-8\n"), "is not UTF-8 text"),
    (lambda p: p.mkdir(), "is not a file"),
    (lambda p: p.write_text("[train\n"), "is not valid TOML"),
])
def test_a_config_path_that_cannot_be_read_is_one_line(tmp_path, capsys, make, expected):
    path = tmp_path / "c.toml"
    make(path)
    assert main(["run", str(path)]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("diffflow: error: config: ") and expected in line
