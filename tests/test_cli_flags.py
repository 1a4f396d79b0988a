"""The knobs of ``diffflow run`` / ``train`` / ``sample`` / ``eval``: ``--set``, ``--solver``, ``--device``,
``--threads``, ``--label``/``--guidance``, ``--seed``, ``--resume`` with the run folder's own config, ``--version``;
errors in the interface's own language; likelihoods only where there is one."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from diffflow_core import build
from diffflow_core.cli import main, parser
from diffflow_core.commands.run import build_model, overrides_from, parse_assignment
from diffflow_core.errors import ConfigError

FAST = ["--set", "train.progress=false", "--set", "sample.likelihood_steps=2",
        "--set", "sample.likelihood_points=16", "--n", "32", "--nfe", "4"]


def args_of(*argv: str):
    return parser().parse_args(["run", *argv])


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("diffflow: error: "), err
    return err[0]


# -- --set -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("train.lr=1e-3", {"train": {"lr": 1e-3}}),
    ("flow.network.hidden=256", {"flow": {"network": {"hidden": 256}}}),
    ("solver.name=heun", {"solver": {"name": "heun"}}),  # a bare word is a string
    ("flow.data_checkpoint=/runs/edm/checkpoint.pt", {"flow": {"data_checkpoint": "/runs/edm/checkpoint.pt"}}),
    ("flow.data_checkpoint=../edm.pt", {"flow": {"data_checkpoint": "../edm.pt"}}),
    ('flow.bandwidth=[0.5, 1.0]', {"flow": {"bandwidth": [0.5, 1.0]}}),
    ("train.progress=false", {"train": {"progress": False}}),
    ('data={name = "moons"}', {"data": {"name": "moons"}}),
])
def test_set_parses_toml_values_into_nested_overrides(text, expected):
    assert parse_assignment(text) == expected


@pytest.mark.parametrize("text", ["train.lr", "=3", "train..lr=1", "train.lr=1e-3 x", "a b=1",
                                  "train.lr=.5"])
def test_set_refuses_what_is_not_an_assignment(text):
    with pytest.raises(ConfigError, match=r"--set"):
        parse_assignment(text)


def test_set_reaches_the_model_and_flags_win_only_when_given():
    model = build_model(args_of("--preset", "rectified-flow", "--set", "train.lr=3e-4", "--set",
                                "flow.network.hidden=32", "--steps", "7"))
    assert model.config.train.lr == 3e-4 and model.config.train.steps == 7
    assert model.config.flow.params["network"]["hidden"] == 32


def test_a_flag_contradicting_a_set_is_an_error():
    with pytest.raises(ConfigError, match=r"--steps 5 contradicts --set train.steps=9"):
        overrides_from(args_of("--set", "train.steps=9", "--steps", "5"))


def test_seed_in_the_config_is_kept_unless_the_flag_is_given(tmp_path):
    (tmp_path / "c.toml").write_text('preset = "rectified-flow"\n[train]\nseed = 5\n')
    assert build_model(args_of(str(tmp_path / "c.toml"))).config.train.seed == 5
    assert build_model(args_of(str(tmp_path / "c.toml"), "--seed", "2")).config.train.seed == 2


def test_the_same_seed_gives_the_same_initial_model_and_another_seed_does_not():
    def weights(seed):
        return torch.cat([p.flatten() for p in build(preset="rectified-flow", train={"seed": seed}).parameters()])

    torch.manual_seed(123)  # the caller's random state plays no part
    first = weights(0)
    torch.manual_seed(456)
    assert torch.equal(first, weights(0)) and not torch.equal(first, weights(1))


# -- --solver, --device, --threads, --label ----------------------------------------------------------------------
def test_solver_flag_replaces_the_preset_solver():
    assert type(build_model(args_of("--preset", "edm", "--solver", "euler")).solver).__name__ == "Euler"


@pytest.mark.parametrize("device, message", [
    ("gpu", "--device: expected cpu, cuda or cuda:N, got 'gpu'"),
    ("cuda:7", "--device: 'cuda:7'"),
])
def test_device_errors_name_the_flag(device, message, capsys):
    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has that device")
    assert main(["run", "--preset", "rectified-flow", "--device", device]) == 2
    assert message in error_line(capsys)


def test_device_cpu_and_threads_are_used(tmp_path):
    before = torch.get_num_threads()
    try:
        model = build_model(args_of("--preset", "rectified-flow", "--device", "cpu", "--threads", "1"))
        assert model.device == torch.device("cpu") and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_label_on_an_unconditional_flow_is_refused_before_training(tmp_path, capsys):
    assert main(["run", "--preset", "rectified-flow", "--steps", "1", "--label", "3",
                 "--out", str(tmp_path / "r")]) == 2
    assert "--label: this VelocityFlow is unconditional" in error_line(capsys)
    assert not (tmp_path / "r").exists()  # refused before any work
    assert main(["run", "--preset", "edm", "--guidance", "2", "--out", str(tmp_path / "r")]) == 2
    assert "--guidance: classifier-free guidance needs a class label" in error_line(capsys)
    assert main(["run", "--preset", "kl", "--label", "1", "--out", str(tmp_path / "r")]) == 2
    assert "--label: flow 'kl' takes no sampling options" in error_line(capsys)


def test_label_and_guidance_reach_a_conditional_flow(tmp_path):
    out = tmp_path / "r"
    assert main(["run", "--preset", "scoreflow-translate", "--steps", "2", "--label", "3", "--guidance", "2",
                 "--out", str(out), *FAST]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["label"] == 3 and metrics["guidance"] == 2.0


# -- --resume continues the run folder's own model ---------------------------------------------------------------
@pytest.fixture(scope="module")
def vp_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("resume") / "vp"
    assert main(["train", "--preset", "vp", "--steps", "4", "--set", "train.progress=false",
                 "--set", "flow.network={name = 'mlp', hidden = 16, depth = 2}", "--out", str(out)]) == 0
    return out


def test_resume_continues_the_recorded_model_not_the_default(vp_run):
    before = (vp_run / "config.json").read_text()
    assert main(["train", "--resume", "--out", str(vp_run), "--steps", "6"]) == 0
    recorded = json.loads((vp_run / "config.json").read_text())
    assert recorded["flow"]["parameterisation"] == "vp" and recorded == json.loads(before)
    state = torch.load(vp_run / "checkpoint.pt", weights_only=True)["train_state"]
    assert state["step"] == 6


@pytest.mark.parametrize("flags, message", [
    (["--preset", "edm"], "--preset: 'edm' contradicts the run folder's 'vp'"),
    (["--data", "moons"], "--data: 'moons' contradicts the run folder's 'ring5'"),
    (["--set", "flow.sigma_max=3"], "--set flow.sigma_max=3: a resumed run keeps its model"),
    (["--solver", "euler"], "--solver: --resume continues"),
    (["--steps", "2"], "train.steps: 2 is below the step of"),
])
def test_resume_with_a_conflicting_flag_is_refused_and_changes_nothing(vp_run, flags, message, capsys):
    before = {p.name: p.read_bytes() for p in vp_run.iterdir() if p.is_file()}
    assert main(["train", "--resume", "--out", str(vp_run), *flags]) == 2
    assert message in error_line(capsys)
    assert {p.name: p.read_bytes() for p in vp_run.iterdir() if p.is_file()} == before


def test_a_run_folder_config_json_is_a_reusable_config(vp_run, tmp_path):
    model = build_model(args_of(str(vp_run / "config.json")))
    assert model.config.flow.params["parameterisation"] == "vp"


# -- messages speak the interface's language; the CLI never shows a traceback ------------------------------------
def test_missing_data_is_asked_for_in_the_callers_terms(tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"pass data= to build\(\)"):
        build({"flow": {"name": "mmd"}})
    (tmp_path / "c.toml").write_text('[flow]\nname = "mmd"\n')
    assert main(["run", str(tmp_path / "c.toml")]) == 2
    line = error_line(capsys)
    assert "pass --data NAME" in line and "data=" not in line


def test_version_prints_the_distribution_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith("diffflow 0.")


def test_divergence_is_one_line_with_exit_2(tmp_path, capsys):
    assert main(["train", "--preset", "rectified-flow", "--steps", "30", "--set", "train.lr=1e6",
                 "--set", "train.progress=false", "--out", str(tmp_path / "r")]) == 2
    assert "training diverged" in error_line(capsys)


@pytest.mark.parametrize("signame, code, word", [("SIGINT", 130, "interrupted"), ("SIGTERM", 143, "terminated")])
def test_a_signal_mid_training_exits_naming_the_checkpoint_and_releasing_the_run_folder(tmp_path, signame, code,
                                                                                        word):
    """Ctrl-C (SIGINT) and SIGTERM, sent right after a checkpoint is written, unwind the run: one line naming the
    checkpoint to resume from, the conventional exit code, and no lock or temporary file left in the folder."""
    out = tmp_path / "r"
    script = ("import os, signal, sys\n"
              "from diffflow_core.cli import main\n"
              "import diffflow_core.training.trainer as t\n"
              "save = t.Trainer._checkpoint\n"
              "def stop(self, *a, **k):\n"
              "    save(self, *a, **k)\n"
              f"    os.kill(os.getpid(), signal.{signame})\n"
              "t.Trainer._checkpoint = stop\n"
              f"sys.exit(main(['train', '--preset', 'rectified-flow', '--steps', '50', '--set', "
              f"'train.progress=false', '--set', 'train.checkpoint_every=10', '--out', {str(out)!r}]))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == code, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"diffflow: {word}; the last checkpoint is {out / 'checkpoint.pt'} "
        f"(continue with 'diffflow train --resume --out {out}')"]
    assert not (out / ".lock").exists() and not list(out.glob("*.tmp"))


# -- likelihood only where there is one --------------------------------------------------------------------------
@pytest.mark.parametrize("preset, why", [
    ("kl", "couples the particles"), ("mmd", "couples the particles"),
    ("langevin", "no probability-flow ODE"), ("gan", "samples come from the smoother"),
])
def test_log_prob_is_refused_where_the_samples_have_no_likelihood(preset, why):
    model = build(preset=preset)
    with pytest.raises(ConfigError, match=why):
        model.log_prob(torch.zeros(4, 2), steps=2)


def test_discriminator_flow_likelihood_is_the_change_of_variables_of_its_ode():
    """The Discriminator Flow moves free particles by a deterministic field: its PF-ODE likelihood integrates
    the divergence of eta grad h, which needs the drift differentiable in x (it once detached x)."""
    model = build(preset="discriminator-flow", train={"progress": False})
    lp = model.log_prob(torch.randn(8, 2, generator=torch.Generator().manual_seed(0)), steps=4)
    assert lp.nats.shape == (8,) and torch.isfinite(lp.nats).all()
    # a constant (zero) discriminator gives zero drift: the likelihood is the prior's
    for p in model.flow.parameters():
        torch.nn.init.zeros_(p)
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(model.log_prob(x, steps=4).nats, model.flow.prior_log_prob(x))


def test_sample_command_writes_a_picture(vp_run, tmp_path):
    out = tmp_path / "s.npy"
    assert main(["sample", "--checkpoint", str(vp_run / "checkpoint.pt"), "--n", "20", "--nfe", "4",
                 "--out", str(out)]) == 0
    assert np.load(out).shape == (20, 2) and out.with_suffix(".png").is_file()
