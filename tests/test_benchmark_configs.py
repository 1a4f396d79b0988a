"""Every config committed under benchmarks/configs/ builds on its default data and trains one step (the configs
the benchmark docs quote must run as written); a config that needs a saved model gets a small one of its data."""
from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import torch

from diffflow_core import build

ROOT = Path(__file__).parents[1]
CONFIGS = sorted((ROOT / "benchmarks" / "configs").glob("*.toml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_builds_and_takes_a_training_step(path, tmp_path):
    raw = tomllib.loads(path.read_text())
    flow: dict = {}
    if "data_checkpoint" in raw.get("flow", {}):  # a Score GAN's data score: the committed one, else a small EDM
        committed = ROOT / raw["flow"]["data_checkpoint"]
        flow["data_checkpoint"] = str(committed if committed.is_file() else tmp_path / "data-score.pt")
        if not committed.is_file():
            net = {"name": "unet", "channels": 8, "mult": [1, 2], "blocks": 1}
            build({"preset": "edm", "data": raw["data"], "flow": {"network": net}}).save(flow["data_checkpoint"])
    model = build(str(path), flow=flow, train={"steps": 1, "progress": False})
    assert model.config.train.steps == 1
    history = model.fit(out_dir=str(tmp_path / "run"))  # the configs checkpoint
    losses = [v for k, v in history.records[-1].items() if k.startswith("loss/")]
    assert losses and all(torch.isfinite(torch.tensor(v)) for v in losses)
