"""The training engine: determinism, exact resume, logs, checkpoints, evaluation, bad settings."""
import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import tinymodel  # noqa: E402

from diffflow_core import build  # noqa: E402
from diffflow_core.errors import CheckpointError, ConfigError  # noqa: E402
from diffflow_core.training import Trainer  # noqa: E402

TRAIN = {"ema": 0.9, "warmup": 5, "grad_clip": 1.0}


@pytest.fixture(autouse=True)
def _registered():
    tinymodel.ensure_registered()


def fresh(steps=30, **train):
    torch.manual_seed(0)
    return build(tinymodel.config(steps, **{**TRAIN, **train}))


def params(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_same_seed_same_parameters_and_loss_decreases():
    a, b = fresh(150), fresh(150)
    history = a.fit()
    b.fit()
    assert all(torch.equal(v, params(b)[k]) for k, v in params(a).items())
    losses = history.series("loss/model")
    assert sum(losses[-30:]) / 30 < 0.85 * sum(losses[:30]) / 30


def test_interrupted_then_resumed_run_is_identical_to_uninterrupted(tmp_path):
    full = fresh()
    Trainer(full, out_dir=tmp_path / "full", checkpoint_every=10, eval_every=10,
            evaluate=lambda m, s: {"step_seen": s}).fit(full.data)

    def crash(model, step):
        if step == 20:
            raise KeyboardInterrupt
        return {"step_seen": step}

    first = fresh()
    with pytest.raises(KeyboardInterrupt):
        Trainer(first, out_dir=tmp_path / "cut", checkpoint_every=10, eval_every=10, evaluate=crash).fit(first.data)
    resumed = fresh()
    resumed.load_state_dict({k: torch.randn_like(v) if v.is_floating_point() else v
                             for k, v in resumed.state_dict().items()})  # resume must overwrite everything
    Trainer(resumed, out_dir=tmp_path / "cut", resume=True, checkpoint_every=10, eval_every=10,
            evaluate=lambda m, s: {"step_seen": s}).fit(resumed.data)
    assert all(torch.equal(v, params(resumed)[k]) for k, v in params(full).items())
    rows = lambda run: (tmp_path / run / "metrics.jsonl").read_text().splitlines()  # noqa: E731
    strip = lambda lines: [{k: v for k, v in json.loads(r).items() if k != "seconds"} for r in lines]  # noqa: E731
    assert strip(rows("cut")) == strip(rows("full"))


def test_logs_are_jsonl_and_csv_with_the_same_rows(tmp_path):
    model = fresh(12)
    Trainer(model, out_dir=tmp_path, log_every=5, eval_every=6, evaluate=lambda m, s: {"score": s / 2}).fit(model.data)
    rows = [json.loads(r) for r in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss/model" in r] == [0, 5, 10, 11]
    assert [r["eval/score"] for r in rows if "eval/score" in r] == [3.0, 6.0]
    csv_lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert csv_lines[0].split(",") == ["step", "loss/model", "seconds", "eval/score"]
    assert len(csv_lines) == len(rows) + 1


def test_default_evaluation_writes_snapshots_and_sliced_w2(tmp_path):
    model = fresh(10)
    history = Trainer(model, out_dir=tmp_path, eval_every=5, eval_samples=64).fit(model.data)
    values = history.series("eval/sliced_w2")
    assert len(values) == 2 and all(v > 0 for v in values)
    assert sorted(p.name for p in (tmp_path / "snapshots").iterdir()) == [
        "step_0000005.npy", "step_0000005.png", "step_0000010.npy", "step_0000010.png"]


def test_checkpoint_is_a_loadable_model_with_ema_weights(tmp_path):
    from diffflow_core.model import Model

    model = fresh(10)
    Trainer(model, out_dir=tmp_path, checkpoint_every=5).fit(model.data)
    loaded = Model.load(tmp_path / "checkpoint.pt")
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in params(model).items())
    payload = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert payload["train_state"]["step"] == 10
    assert payload["provenance"]["data"]["name"] == "ring5"
    assert not list(tmp_path.glob("*.tmp"))


def test_bad_settings_and_resume_errors(tmp_path):
    model = fresh(10)
    with pytest.raises(ConfigError, match="train:.*expected settings among"):
        Trainer(model, stepz=3)
    with pytest.raises(ConfigError, match="checkpoint_every"):
        Trainer(model, checkpoint_every=5)
    with pytest.raises(ConfigError, match="resume: checkpoint"):
        Trainer(model, resume=tmp_path / "missing.pt")
    model.save(tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="no training state"):
        Trainer(model, resume=tmp_path / "plain.pt").fit(model.data)


def test_player_groups_train_at_their_own_warmed_up_learning_rates():
    """A player's optimiser groups keep their own rates under warm-up: Adam's first step moves every weight
    with a non-zero gradient by the group's lr times the warm-up factor 1/5."""
    from diffflow_core.interfaces import Player

    model = fresh(1, ema=0.0, warmup=5, grad_clip=None)
    params = [p for p in model.flow.parameters() if p.requires_grad]
    fast, slow = params[:2], params[2:]
    loss = lambda batch, gen: model.objective.loss(model.flow, batch, gen)  # noqa: E731
    model.objective.players = lambda m: [Player("both", params, loss, lr=1e-3,
                                                groups=({"params": fast, "lr": 5e-2}, {"params": slow}))]
    before = [p.detach().clone() for p in params]
    Trainer(model).fit(model.data)
    moved = [(p.detach() - b).abs() for p, b in zip(params, before)]
    fast_moves = torch.cat([m.flatten() for m in moved[:2]])
    slow_moves = torch.cat([m.flatten() for m in moved[2:]])
    assert torch.allclose(fast_moves.max(), torch.tensor(5e-2 / 5), rtol=1e-3)
    assert torch.allclose(slow_moves.max(), torch.tensor(1e-3 / 5), rtol=1e-3)
    with pytest.raises(ConfigError, match="groups: player 'both'.*partition"):
        Player("both", params, loss, groups=({"params": fast},))


def test_ema_averages_the_trained_parameters_and_leaves_frozen_ones_alone():
    from diffflow_core.training.trainer import EMA

    model = fresh(20)
    frozen = dict(model.named_parameters())["flow.net.body.0.weight"]
    frozen.requires_grad_(False)
    before = frozen.detach().clone()
    floating = {k for k, v in model.state_dict().items() if v.dtype.is_floating_point}
    assert set(EMA(model, 0.9).shadow) == floating - {"flow.net.body.0.weight"}
    model.fit()
    assert torch.equal(frozen, before)


def test_learning_rate_warms_up_then_decays_linearly_to_the_last_step():
    trainer = Trainer(fresh(10, warmup=2, decay=0.4))
    assert [trainer._lr_scale(step) for step in range(10)] == [0.5, 1, 1, 1, 1, 1, 1, 0.75, 0.5, 0.25]
    with pytest.raises(ConfigError, match="decay"):
        Trainer(fresh(10), decay=1.5)


def test_ema_skips_the_parameters_the_objective_says_sampling_never_reads():
    """``Objective.unaveraged``: those parameters end at their raw trained values (as with no EMA), the others
    at their averages (as with an EMA of everything); training itself is unchanged."""
    def trained(ema, skip_first_layer=False):
        model = fresh(20, ema=ema)
        if skip_first_layer:
            model.objective.unaveraged = lambda m: list(m.flow.net.body[0].parameters())
        model.fit()
        return dict(model.named_parameters())

    averaged, raw, mixed = trained(0.9), trained(0.0), trained(0.9, skip_first_layer=True)
    for name, value in mixed.items():
        torch.testing.assert_close(value, (raw if ".body.0." in name else averaged)[name], rtol=0, atol=0)
    assert not torch.equal(averaged["flow.net.body.0.weight"], raw["flow.net.body.0.weight"])


def test_bfloat16_precision_runs_the_forward_in_bfloat16_and_keeps_float32_weights():
    """``train.precision="bfloat16"``: the layers compute in bfloat16 (autocast), while the parameters, their
    gradients' updates and the EMA stay float32; the run still learns, and lands near the float32 run."""
    def run(precision):
        model = fresh(150, precision=precision)
        dtypes = set()
        model.flow.net.body[0].register_forward_hook(lambda module, inputs, out: dtypes.add(out.dtype))
        history = model.fit()
        return model, dtypes, history.series("loss/model")

    half, half_dtypes, half_losses = run("bfloat16")
    full, full_dtypes, _ = run("float32")
    assert half_dtypes == {torch.bfloat16} and full_dtypes == {torch.float32}
    assert all(p.dtype == torch.float32 for p in half.parameters())
    assert sum(half_losses[-30:]) / 30 < 0.85 * sum(half_losses[:30]) / 30
    for (name, a), b in zip(half.named_parameters(), full.parameters()):
        assert not torch.equal(a, b), name
        torch.testing.assert_close(a, b, rtol=0.05, atol=0.02)
    with pytest.raises(ConfigError, match=r"train\.precision: expected one of float32, bfloat16, float16, got 'fp16'"):
        fresh(10, precision="fp16")
