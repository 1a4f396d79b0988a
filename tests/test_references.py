"""Saved models that refer to other saved models by path (diffflow_core.references): every referring component
loads, samples and resumes from its own checkpoint after the referenced file has changed, moved or gone."""
from __future__ import annotations

import os

import pytest
import torch

from diffflow_core import build
from diffflow_core.cli import main
from diffflow_core.model import Model
from diffflow_core.references import RECORD_KEYS

TINY = {"name": "mlp", "hidden": 16, "depth": 2}

#: Every component that takes a saved model's path, as the config that refers to ``path``.
REFERRING = {
    "compose": lambda path: {"flow": {"name": "compose", "terms": [{"checkpoint": path, "weight": 1.5}]},
                             "solver": "euler", "data": "ring5"},
    "discriminator-guidance": lambda path: {
        "flow": {"name": "discriminator-guidance", "base": path, "network": TINY},
        "objective": {"name": "discriminator-guidance", "samples": 64}, "solver": "heun", "data": "ring5"},
    "distill": lambda path: {
        "flow": {"name": "distill", "teacher": path, "network": TINY}, "objective": {"name": "distill", "pairs": 64},
        "smoother": {"name": "generator", "latent_dim": 2, "network": TINY}, "solver": "euler", "data": "ring5"},
    "score-gan": lambda path: {"preset": "score-gan", "flow": {"data_checkpoint": path, "network": TINY},
                               "smoother": {"network": TINY}, "data": "ring5"},
}


def save_base(path: str, seed: int) -> None:
    build(preset="edm", data="ring5", flow={"network": TINY}, sample={"steps": 3}, train={"seed": seed}).save(path)


def assert_same_model(loaded: Model, saved: Model) -> None:
    ours, theirs = loaded.state_dict(), saved.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    torch.testing.assert_close(loaded.sample(8, 2, seed=3).x, saved.sample(8, 2, seed=3).x)


@pytest.mark.parametrize("name", sorted(REFERRING))
def test_a_saved_model_loads_after_the_file_it_refers_to_changed_or_went(name, tmp_path, monkeypatch):
    (tmp_path / "built").mkdir()
    monkeypatch.chdir(tmp_path / "built")
    save_base("base.pt", seed=0)  # a relative path, as configs in a project folder give it
    model = build(REFERRING[name]("base.pt"))
    model.save(str(tmp_path / "model.pt"))
    record = torch.load(tmp_path / "model.pt", weights_only=True)["references"]["base.pt"]
    assert tuple(record) == RECORD_KEYS  # the architecture, not a second copy of the weights

    save_base("base.pt", seed=1)  # the same architecture, other weights: the checkpoint's own weights win
    assert_same_model(Model.load(str(tmp_path / "model.pt")), model)
    os.remove("base.pt")
    monkeypatch.chdir(tmp_path)
    assert_same_model(Model.load(str(tmp_path / "model.pt")), model)


def test_references_nest_and_a_fresh_build_still_reads_the_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    save_base("base.pt", seed=0)
    build(REFERRING["compose"]("base.pt")).save("inner.pt")
    outer = build(REFERRING["compose"]("inner.pt"))
    outer.save("outer.pt")
    os.remove("base.pt")
    os.remove("inner.pt")
    assert_same_model(Model.load("outer.pt"), outer)
    with pytest.raises(Exception, match="base.pt' does not exist"):
        build(REFERRING["compose"]("base.pt"))  # outside a checkpoint's rebuild, a reference is its file


def test_a_resumed_run_does_not_need_the_file_its_model_refers_to(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    save_base("base.pt", seed=0)
    common = ["--set", 'flow.data_checkpoint="base.pt"', "--set", "flow.network.hidden=16",
              "--set", "train.progress=false", "--n", "16", "--out", "run"]
    assert main(["run", "--preset", "score-gan", "--data", "ring5", "--steps", "2", *common]) == 0
    os.remove("base.pt")
    assert main(["run", "--resume", "--steps", "4", "--set", "train.progress=false", "--n", "16",
                 "--out", "run"]) == 0, capsys.readouterr().err
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["train_state"]["step"] == 4
