"""The training engine at scale (issue 21): no host sync in the hot loop, float16/bfloat16 with exact resume,
gradient accumulation, torch.compile, channels-last, and the commands' --device flag."""
import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import tinymodel  # noqa: E402

from diffflow_core import build  # noqa: E402
from diffflow_core.errors import ConfigError  # noqa: E402
from diffflow_core.training import Trainer  # noqa: E402


@pytest.fixture(autouse=True)
def _registered():
    tinymodel.ensure_registered()


def fresh(steps=30, **train):
    torch.manual_seed(0)
    return build(tinymodel.config(steps, **{"ema": 0.9, "warmup": 5, "grad_clip": 1.0, **train}))


def same_parameters(a, b):
    return all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


# -- no host sync in the hot loop ------------------------------------------------------------------------
READS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__")


def test_the_loop_reads_nothing_back_between_logging_steps(monkeypatch):
    """Every way Python reads a tensor's value is counted: a run of 40 steps reads as often as one of 10 when
    neither logs in between (the reads are the final check's, not per step)."""
    def reads(steps):
        model = fresh(steps, log_every=1000)
        counts = {"n": 0}
        for name in READS:
            original = getattr(torch.Tensor, name)

            def counted(self, *args, _original=original, **kwargs):
                counts["n"] += 1
                return _original(self, *args, **kwargs)
            monkeypatch.setattr(torch.Tensor, name, counted)
        model.fit()
        monkeypatch.undo()
        return counts["n"]

    assert reads(10) == reads(40) > 0


def test_a_nan_loss_stops_training_at_the_next_check_naming_the_player_and_the_steps(tmp_path):
    """Finiteness is read when logging or checkpointing: a NaN at step 5 ends the run at the check of step 7
    (checkpoint_every 4), and the checkpoint of step 4 stays the last one written."""
    model = fresh(20, log_every=100, checkpoint_every=4)
    loss, calls = model.objective.loss, []

    def poisoned(flow, batch, generator=None):
        calls.append(1)
        value = loss(flow, batch, generator)
        return value * float("nan") if len(calls) == 6 else value

    model.objective.loss = poisoned
    with pytest.raises(FloatingPointError, match=r"training diverged: model loss was NaN or Inf at a step in 4\.\.7 "
                                                 r"\(losses are checked when logging, every train\.log_every = 100 "
                                                 r"steps, evaluating and checkpointing\); try a smaller train\.lr$"):
        Trainer(model, out_dir=tmp_path).fit(model.data)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["train_state"]["step"] == 4


# -- precision ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("precision, dtype", [("float16", torch.float16), ("bfloat16", torch.bfloat16)])
def test_low_precision_trains_and_resumes_bit_identically(tmp_path, precision, dtype):
    """The forward runs in the low precision, the weights stay float32, the loss falls, and a run cut at step 60
    and resumed ends bit-identical to the uninterrupted one: float16's loss scale is in the checkpoint."""
    seen = set()

    def run(folder, evaluate, resume=None):
        model = fresh(120, precision=precision, log_every=10)
        model.flow.net.body[0].register_forward_hook(lambda module, inputs, out: seen.add(out.dtype))
        history = Trainer(model, out_dir=tmp_path / folder, resume=resume, checkpoint_every=30, eval_every=30,
                          evaluate=evaluate).fit(model.data)
        return model, history

    def crash(model, step):
        if step == 60:
            raise KeyboardInterrupt
        return {}

    full, history = run("full", lambda m, s: {})
    with pytest.raises(KeyboardInterrupt):
        run("cut", crash)
    resumed, _ = run("cut", lambda m, s: {}, resume=True)
    assert same_parameters(full, resumed)
    assert seen == {dtype} and all(p.dtype == torch.float32 for p in full.parameters())
    losses = history.series("loss/model")
    assert sum(losses[-3:]) / 3 < 0.85 * sum(losses[:3]) / 3
    scalers = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)["train_state"]["scalers"]
    assert bool(scalers[0]) == (precision == "float16")  # a disabled scaler's state is empty


# -- gradient accumulation -----------------------------------------------------------------------------------
def row_dsm(flow, batch, generator=None):
    """The tiny denoising loss with each row's noise drawn in row order (three normals per row), so k
    micro-batches of b rows draw exactly the numbers one batch of k * b rows draws; float64 throughout."""
    x = batch.x.to(torch.float64)
    draws = torch.randn(x.shape[0], 3, generator=generator, dtype=torch.float64)
    sigma = 0.05 + (flow.sigma_max - 0.05) * torch.sigmoid(draws[:, 0])
    eps = draws[:, 1:]
    return (flow.net(x + sigma[:, None] * eps, sigma) - eps).pow(2).mean()


def test_accumulating_k_batches_of_b_equals_one_batch_of_k_times_b(tmp_path):
    def run(batch_size, accumulate):
        model = fresh(3, ema=0.0, warmup=0, grad_clip=None, batch_size=batch_size, accumulate=accumulate)
        model.double()
        model.objective.loss = row_dsm
        history = Trainer(model, out_dir=tmp_path / str(accumulate), checkpoint_every=1).fit(model.data)
        state = torch.load(tmp_path / str(accumulate) / "checkpoint.pt", weights_only=True)["train_state"]
        return model, history.series("loss/model"), state["optimizers"][0]["state"]

    one, one_losses, one_adam = run(64, 1)
    four, four_losses, four_adam = run(16, 4)
    for (name, a), b in zip(one.named_parameters(), four.parameters()):
        assert a.dtype == torch.float64 and (a - b).abs().max() < 1e-10, name
    for key in one_adam:  # Adam's first moment after 3 steps: the gradients themselves, averaged
        assert (one_adam[key]["exp_avg"] - four_adam[key]["exp_avg"]).abs().max() < 1e-10
    assert max(abs(a - b) for a, b in zip(one_losses, four_losses)) < 1e-10
    with pytest.raises(ConfigError, match=r"train\.accumulate: expected a positive integer, got 0"):
        fresh(3, accumulate=0)


# -- compile and channels-last ---------------------------------------------------------------------------------
def test_compiled_networks_train_like_eager_ones_and_are_eager_again_after_fit():
    """Three steps of the tiny MLP, compiled (inductor, CPU) against eager: the same parameters to float32
    tolerance; after fit the network's own forward is back and the state_dict keys never changed."""
    from torch._dynamo.utils import counters

    eager, compiled = fresh(3, ema=0.0), fresh(3, ema=0.0, compile=True)
    eager.fit()
    keys = list(compiled.state_dict())
    counters.clear()
    compiled.fit()
    assert counters["stats"]["unique_graphs"] >= 2  # the probe's and the network's
    assert list(compiled.state_dict()) == keys and "forward" not in vars(compiled.flow.net)
    for (name, a), b in zip(eager.named_parameters(), compiled.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


def test_a_compiler_that_cannot_run_is_one_warning_and_eager_training(monkeypatch, capsys):
    from diffflow_core.training import acceleration

    monkeypatch.setattr(acceleration, "_compiler_problem", lambda device: "InvalidCxxCompiler: no working C++ "
                                                                          "compiler found")
    eager, fallback = fresh(3), fresh(3, compile=True)
    eager.fit()
    fallback.fit()
    assert same_parameters(eager, fallback)
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["diffflow: warning: train.compile: torch.compile cannot run here (InvalidCxxCompiler: no working "
                     "C++ compiler found); training runs eagerly"]


def unet_model(**train):
    torch.manual_seed(0)
    return build(preset="edm", data="digits", flow={"network": {"name": "unet", "channels": 8, "mult": [1, 2],
                                                                 "embedding_dim": 16}},
                 train={"steps": 3, "batch_size": 16, "progress": False, "ema": 0.0, **train})


def test_channels_last_trains_like_the_default_layout_and_restores_it():
    default, last = unet_model(), unet_model(channels_last=True)
    layouts = set()
    last.flow.net.stem.register_forward_pre_hook(
        lambda module, args: layouts.add(args[0].is_contiguous(memory_format=torch.channels_last)))
    default.fit()
    last.fit()
    assert layouts == {True}
    assert all(p.is_contiguous() for p in last.parameters())
    for (name, a), b in zip(default.named_parameters(), last.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
    with pytest.raises(ConfigError, match=r"train\.channels_last: expected image data of shape \[C, H, W\], got "
                                          r"data of shape \[2\]"):
        fresh(3, channels_last=True).fit()


# -- the command line ----------------------------------------------------------------------------------------
def test_training_options_are_settable_from_the_command_line(tmp_path):
    from diffflow_core.cli import main

    out = tmp_path / "run"
    assert main(["train", "--preset", "rectified-flow", "--steps", "4", "--set", "train.precision=bfloat16",
                 "--set", "train.accumulate=2", "--set", "train.progress=false", "--device", "cpu",
                 "--out", str(out)]) == 0
    train = json.loads((out / "config.json").read_text())["train"]
    assert (train["precision"], train["accumulate"], train["compile"], train["channels_last"]) == \
        ("bfloat16", 2, False, False)
    assert main(["train", "--preset", "rectified-flow", "--set", "train.precision=half", "--out",
                 str(tmp_path / "bad")]) == 2


def test_device_is_a_flag_of_every_command_that_builds_or_loads_a_model():
    """run, train, sample and eval take --device; presets, plugins, list and bench run no model."""
    import argparse

    from diffflow_core.cli import parser

    root = parser()
    commands = next(a for a in root._actions if isinstance(a, argparse._SubParsersAction)).choices
    with_device = {name for name, p in commands.items() if any("--device" in a.option_strings for a in p._actions)}
    assert with_device == {"run", "train", "sample", "eval"}
    required = {"sample": ["--checkpoint", "c.pt", "--out", "s.npy"], "eval": ["--checkpoint", "c.pt"]}
    for command in sorted(with_device):
        assert root.parse_args([command, *required.get(command, []), "--device", "cpu"]).device == "cpu"
