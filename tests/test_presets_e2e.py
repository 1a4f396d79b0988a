"""``diffflow run --preset P`` end to end for EVERY registered preset: on its default data, on ``moons`` and on
user ``.npy`` files of dimension 2 and 5. Each run must exit 0 and leave samples, metrics with a quality figure
for its data, the pictures it lists, and a test NLL exactly where the model's samples have a likelihood.

Runs are in-process (``diffflow_core.cli.main``) at a few training steps, a few dozen samples and a cheap
likelihood solve; the default-data runs cover every preset in CI, the other data on a reduced set (one preset
per family) in CI and on every preset in the slow suite.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from diffflow_core.cli import main
from diffflow_core.plugins import registry

PRESETS = sorted(registry("presets").names())

#: Presets whose samples have an exact likelihood (free particles under a non-interacting flow with a PF-ODE).
#: Every other preset samples through a generator, a Stein kernel, an interacting drift (KDE, MMD) or an SDE
#: without a probability-flow ODE, and must report no likelihood. A new preset must be classified here.
LIKELIHOOD = {"edm", "vp", "ve", "ncsn", "ndm", "ddpm", "ddim", "vdm", "flow-matching", "rectified-flow",
              "scoreflow", "scoreflow-translate", "discriminator-flow", "diffflow-gan", "diffflow-nsgan",
              "diffflow-pf-ode"}
NO_LIKELIHOOD = {"gan", "wgan-gp", "hinge-gan", "score-gan", "svgd", "kl", "mmd", "mmd-energy", "langevin",
                 "annealed-langevin", "diffflow-langevin", "diffflow-annealed-langevin", "diffflow-sde",
                 "diffflow-vp", "diffflow-ve", "diffflow-gan-kde", "diffflow-nsgan-kde", "diffusion-gan", "tdpm"}
#: One preset per family for the reduced CI runs on other data.
REDUCED = ["edm", "gan", "discriminator-flow", "kl", "mmd", "ndm", "rectified-flow", "svgd"]

FAST = ["--steps", "2", "--n", "48", "--nfe", "4", "--seed", "0", "--set", "train.progress=false",
        "--set", "sample.likelihood_steps=2", "--set", "sample.likelihood_points=16"]
#: Work that no flag shortens: the Score GAN's data score is trained first.
EXTRA = {"score-gan": ["--set", "flow.data_steps=2"],
         "ncsn": ["--nfe", "11"]}  # annealed Langevin: 10 evaluations per noise level and a final denoising


def test_every_preset_is_classified():
    unknown = set(PRESETS) - LIKELIHOOD - NO_LIKELIHOOD
    assert not unknown, f"classify the new preset(s) {sorted(unknown)} in LIKELIHOOD or NO_LIKELIHOOD"


def run_preset(preset: str, out: Path, data: str | None = None) -> dict:
    argv = ["run", "--preset", preset, "--out", str(out), *FAST, *EXTRA.get(preset, [])]
    if data is not None:
        argv += ["--data", data]
    assert main(argv) == 0
    return json.loads((out / "metrics.json").read_text())


def check_outputs(preset: str, out: Path, metrics: dict, dim: int | None) -> None:
    samples = np.load(out / "samples.npy")
    assert samples.shape[0] == 48 and samples.dtype == np.float32 and np.isfinite(samples).all()
    if dim is not None:
        assert samples.shape[1:] == (dim,)
    config = json.loads((out / "config.json").read_text())
    assert config["preset"] == preset and config["data"]["name"]
    assert (out / "checkpoint.pt").is_file()
    if samples.ndim == 2 and samples.shape[1] == 2:
        assert metrics["w2"]["ratio"] > 0
        assert (out / "samples.png").is_file()
    if preset in NO_LIKELIHOOD:
        assert "test_nll" not in metrics, f"{preset} reports a likelihood it does not have"


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_runs_on_its_default_data(preset, tmp_path):
    metrics = run_preset(preset, tmp_path / preset)
    config = json.loads((tmp_path / preset / "config.json").read_text())
    assert config["data"]["name"] in ("ring5", "digits")  # every preset carries the data its docs use
    check_outputs(preset, tmp_path / preset, metrics, None)
    if preset in LIKELIHOOD and config["data"]["name"] == "ring5":
        nll = metrics["test_nll"]
        assert nll["method"] == "pf-ode" and np.isfinite(nll["model"]) and nll["points"] == 16


def _other_data(tmp_path: Path, kind: str) -> tuple[str, int]:
    if kind == "moons":
        return "moons", 2
    dim = int(kind[-1])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, dim)).astype(np.float32) * 0.5 + np.arange(dim, dtype=np.float32)
    path = tmp_path / f"points{dim}.npy"
    np.save(path, x)
    return str(path), dim


def _check_other(preset: str, kind: str, tmp_path: Path) -> None:
    data, dim = _other_data(tmp_path, kind)
    out = tmp_path / f"{preset}-{kind}"
    metrics = run_preset(preset, out, data)
    check_outputs(preset, out, metrics, dim)
    if kind != "moons":  # user data: an absolute path recorded, and a quality figure in any dimension
        recorded = json.loads((out / "config.json").read_text())["data"]["name"]
        assert Path(recorded).is_absolute()
        assert any(key in metrics for key in ("w2", "sliced_w2", "mmd", "energy", "distances"))


@pytest.mark.parametrize("kind", ["moons", "npy2", "npy5"])
@pytest.mark.parametrize("preset", REDUCED)
def test_reduced_presets_run_on_other_data(preset, kind, tmp_path):
    _check_other(preset, kind, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["moons", "npy2", "npy5"])
@pytest.mark.parametrize("preset", sorted(set(PRESETS) - set(REDUCED) - {"scoreflow-translate"}))
def test_every_preset_runs_on_other_data(preset, kind, tmp_path):
    _check_other(preset, kind, tmp_path)
