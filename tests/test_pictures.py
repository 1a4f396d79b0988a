"""The pictures of a run folder and of training: sample snapshots, the sampling trajectory, the loss curve and the
latent interpolation of one-step generators, each written as a valid PNG for a 2-D run and an image run."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from diffflow_core import build
from diffflow_core.cli import main
from diffflow_core.evaluation import draw_interpolation, draw_loss, draw_snapshot, slerp


def valid_png(path) -> bool:
    """A file PIL reads as a complete PNG with a picture in it."""
    path = Path(path)
    with Image.open(path) as image:
        image.verify()
        ok = image.format == "PNG"
    with Image.open(path) as image:
        return ok and min(image.size) > 50


def run(tmp_path, *args) -> Path:
    out = tmp_path / "run"
    assert main(["run", *args, "--n", "64", "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("data", ["moons", "digits"])
def test_a_trained_run_draws_samples_trajectory_and_loss(data, tmp_path, capsys):
    out = run(tmp_path, "--data", data, "--steps", "4", "--nfe", "3")
    printed = capsys.readouterr().out
    for name in ("samples.png", "trajectory.png", "loss.png"):
        assert valid_png(out / name) and name in printed
    assert not (out / "interpolation.png").exists()  # free particles have a path, not a latent


@pytest.mark.parametrize("data", ["ring5", "digits"])
def test_a_generator_run_draws_its_latent_interpolation(data, tmp_path, capsys):
    out = run(tmp_path, "--preset", "gan", "--data", data, "--steps", "2")
    printed = capsys.readouterr().out
    for name in ("samples.png", "interpolation.png", "loss.png"):
        assert valid_png(out / name) and name in printed
    assert not (out / "trajectory.png").exists()  # one network pass: no sampling path


@pytest.mark.parametrize("data, shape", [("ring5", (100, 2)), ("digits", (100, 1, 8, 8))])
def test_draw_snapshot_of_a_training_draw(data, shape, tmp_path):
    model = build(preset="edm", data=data)
    samples = torch.rand(shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    path = draw_snapshot(model, samples, tmp_path / "snapshots" / "step_0000100.png", title="step 100")
    assert valid_png(path)
    assert valid_png(draw_snapshot(torch.nn.Identity(), samples, tmp_path / "bare.png"))  # a model without data


def test_interpolation_only_for_generators(tmp_path):
    assert draw_interpolation(build(preset="edm", data="ring5"), tmp_path / "i.png") is None
    assert not (tmp_path / "i.png").exists()


def test_loss_curve_from_the_log(tmp_path):
    log = tmp_path / "metrics.jsonl"
    rows = [{"step": s, "loss/gen": 1.0 / (s + 1), "loss/disc": 0.5, "seconds": s} for s in range(0, 50, 5)]
    rows.insert(3, {"step": 10, "eval/sliced_w2": 0.3})  # evaluation rows carry no loss
    log.write_text("\n".join(map(json.dumps, rows)) + '\n{"step": 55, "loss/ge')  # a line cut by a kill
    assert valid_png(draw_loss(log, tmp_path / "loss.png"))
    log.write_text(json.dumps({"step": 1, "eval/sliced_w2": 0.3}) + "\n")
    assert draw_loss(log, tmp_path / "none.png") is None and draw_loss(tmp_path / "missing", tmp_path / "m.png") is None


def test_slerp_keeps_the_endpoints_and_the_norm():
    a, b = torch.tensor([[1.0, 0.0], [2.0, 0.0]]), torch.tensor([[0.0, 1.0], [4.0, 0.0]])
    path = slerp(a, b, torch.linspace(0, 1, 5))
    assert path.shape == (2, 5, 2)
    assert torch.allclose(path[:, 0], a) and torch.allclose(path[:, -1], b)
    assert torch.allclose(path[0].norm(dim=1), torch.ones(5))  # orthogonal unit vectors: on the unit circle
    assert torch.allclose(path[1, 2], torch.tensor([3.0, 0.0]))  # parallel: the straight line
