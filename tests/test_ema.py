"""The trainer's EMA with EDM's warm-up (``train.ema_rampup``): the closed form of the average, the fixed-decay EMA
it replaces (``ema_rampup = 0``), exact resume, and the setting's validation."""
import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
import tinymodel  # noqa: E402

from diffflow_core import build  # noqa: E402
from diffflow_core.errors import ConfigError  # noqa: E402
from diffflow_core.training import Trainer  # noqa: E402
from diffflow_core.training import trainer as trainer_module  # noqa: E402
from diffflow_core.training.trainer import EMA  # noqa: E402


@pytest.fixture(autouse=True)
def _registered():
    tinymodel.ensure_registered()


def fresh(steps=20, **train):
    torch.manual_seed(0)
    return build(tinymodel.config(steps, **{"ema": 0.99, **train}))


def expected_average(decay: float, rampup: float, steps: int, start: float = 0.0) -> float:
    """The EMA after ``steps`` updates of a parameter equal to the step index ``s`` at update ``s`` (``start``
    before the first), in closed form: ``sum_s w_s s`` with ``w_s = (1 - b_s) prod_{u>s} b_u``, the products
    written as ``0.5 ** (sum_{u>s} 1 / h_u)`` with the half-life ``h_u = min(ln 0.5 / ln decay, rampup u)``."""
    half_life = math.log(0.5) / math.log(decay)
    inverse = [0.0] + [1 / min(half_life, rampup * u) if rampup else 1 / half_life for u in range(1, steps + 1)]
    after = [0.0] * (steps + 2)  # after[s] = sum_{u > s} 1 / h_u
    for s in range(steps - 1, -1, -1):
        after[s] = after[s + 1] + inverse[s + 1]
    weights = [0.5 ** after[0]] + [(1 - 0.5 ** inverse[s]) * 0.5 ** after[s] for s in range(1, steps + 1)]
    assert math.isclose(sum(weights), 1.0, rel_tol=1e-12)
    return weights[0] * start + sum(w * s for s, w in enumerate(weights) if s)


def averaged(decay: float, rampup: float, steps: int) -> float:
    module = nn.Linear(1, 1, bias=False).double()
    with torch.no_grad():
        module.weight.fill_(0.0)
    ema = EMA(module, decay, rampup=rampup)
    for s in range(1, steps + 1):
        with torch.no_grad():
            module.weight.fill_(float(s))
        ema.update(s)
    return float(ema.shadow["weight"])


@pytest.mark.parametrize("steps", [5, 300, 1500])  # inside the ramp, at its end (H / r = 690), past it
def test_the_average_of_a_known_sequence_matches_the_closed_form(steps):
    assert averaged(0.99, 0.1, steps) == pytest.approx(expected_average(0.99, 0.1, steps), rel=1e-10, abs=1e-10)


def test_the_ramp_forgets_the_start_and_ends_at_the_configured_decay():
    """During the ramp the weight of step t in the average after s steps is about proportional to
    ``t ** (k - 1)``, ``k = ln 2 / r`` (the average of t -> t is near ``s k / (k + 1)``: 0.933 s for r = 0.05,
    whatever s); from ``H / r`` steps on the decay is exactly ``train.ema``."""
    ema = EMA(nn.Linear(1, 1), 0.999, rampup=0.05)
    assert ema.half_life == pytest.approx(692.8, abs=0.1)
    assert ema.decay_at(1) == 0.5 ** 20 and ema.decay_at(100) == 0.5 ** (1 / 5)
    end = math.ceil(ema.half_life / 0.05)  # 13,857
    assert ema.decay_at(end) == 0.999 and ema.decay_at(10 ** 6) == 0.999
    assert 0.999 - 1e-7 < ema.decay_at(end - 1) < 0.999
    k = math.log(2) / 0.05
    for steps in (300, 1000, 10_000):  # the fixed 0.999 EMA of s -> s after 300 steps is 0.26 * 300 (the start)
        assert averaged(0.999, 0.05, steps) / steps == pytest.approx(k / (k + 1), abs=2e-3)
    assert averaged(0.999, 0.0, 300) / 300 < 0.3


class FixedEMA(EMA):
    """The trainer's EMA before the warm-up, as it was: ``lerp`` towards the weights by ``1 - decay`` every step."""

    def __init__(self, module, decay, skip=(), rampup=0.0):
        super().__init__(module, decay, skip)

    @torch.no_grad()
    def update(self, step=None):
        torch._foreach_lerp_(self._pairs[0], self._pairs[1], 1 - self.decay)


def test_rampup_zero_is_the_fixed_decay_ema_bit_for_bit(monkeypatch):
    ramp, fixed, before = fresh(ema_rampup=0.05), fresh(ema_rampup=0.0), fresh(ema_rampup=0.0)
    ramp.fit()
    fixed.fit()
    monkeypatch.setattr(trainer_module, "EMA", FixedEMA)
    before.fit()
    state = lambda model: model.state_dict().items()  # noqa: E731
    assert all(torch.equal(v, before.state_dict()[k]) for k, v in state(fixed))
    assert not all(torch.equal(v, fixed.state_dict()[k]) for k, v in state(ramp))


def test_a_run_resumed_mid_ramp_ends_with_the_same_ema_bit_for_bit(tmp_path):
    """20 steps with decay 0.99 and rampup 0.05 are all inside the ramp (H / r = 1,379 steps), so a resume that
    restarted the ramp, or lost the step, would change every later decay."""
    full = fresh()
    Trainer(full, out_dir=tmp_path / "full", checkpoint_every=10).fit(full.data)

    def crash(model, step):
        if step == 10:
            raise KeyboardInterrupt
        return {}

    cut = fresh()  # checkpoints at 5, then dies at 10 (evaluation comes before the checkpoint): resumes from 5
    with pytest.raises(KeyboardInterrupt):
        Trainer(cut, out_dir=tmp_path / "cut", checkpoint_every=5, eval_every=10, evaluate=crash).fit(cut.data)
    assert torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)["train_state"]["step"] == 5
    resumed = fresh()
    Trainer(resumed, out_dir=tmp_path / "cut", resume=True, checkpoint_every=10).fit(resumed.data)
    assert all(torch.equal(v, resumed.state_dict()[k]) for k, v in full.state_dict().items())
    shadows = [torch.load(tmp_path / run / "checkpoint.pt", weights_only=True)["train_state"]["ema"]
               for run in ("full", "cut")]
    assert shadows[0].keys() == shadows[1].keys()
    assert all(torch.equal(v, shadows[1][k]) for k, v in shadows[0].items())


def test_an_ema_switched_on_at_resume_averages_from_the_restored_weights(tmp_path):
    """A run checkpointed without an EMA and resumed with one starts the average at the restored weights, not
    at the model's initial ones; the raw trajectory is the EMA-free run's (the EMA never feeds back)."""
    raw = []
    plain = fresh(ema=0.0)
    Trainer(plain, eval_every=1, evaluate=lambda m, s: raw.append(
        [p.detach().clone() for p in m.parameters()]) or {}).fit(plain.data)
    first = fresh(ema=0.0)
    Trainer(first, out_dir=tmp_path, steps=5, checkpoint_every=5).fit(first.data)
    resumed = fresh(ema=0.9, ema_rampup=0.0)
    Trainer(resumed, out_dir=tmp_path, resume=True).fit(resumed.data)
    shadow = [p.clone() for p in raw[4]]  # the weights after step 5
    for weights in raw[5:]:
        torch._foreach_lerp_(shadow, weights, 1 - 0.9)
    for value, expected in zip(resumed.parameters(), shadow):
        torch.testing.assert_close(value, expected, rtol=0, atol=1e-7)


@pytest.mark.parametrize("value, shown", [(-0.1, "-0.1"), ("0.05", "'0.05'"), (True, "True"),
                                          (float("nan"), "nan"), (float("inf"), "inf")])
def test_bad_rampup_values_are_rejected_naming_the_field(value, shown):
    message = rf"train\.ema_rampup: expected a finite number >= 0, got {shown}"
    with pytest.raises(ConfigError, match=message):
        fresh(ema_rampup=value)
    with pytest.raises(ConfigError, match=message):
        Trainer(fresh(), ema_rampup=value)


def test_the_setting_defaults_to_the_measured_ramp_and_round_trips_through_the_config():
    model = fresh()
    assert model.config.train.ema_rampup == 0.05
    assert build(model.config.as_dict()).config.train.ema_rampup == 0.05
    assert fresh(ema_rampup=0).config.train.ema_rampup == 0


def test_the_budget_benchmark_runs_and_scores_every_variant(tmp_path, monkeypatch, capsys):
    """``benchmarks/ema_budgets.py`` at toy size: one training run scored with the trainer's EMA, the fixed-decay
    EMA and the raw weights, merged into the JSON and printed as a table."""
    import importlib.util
    import json

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "ema_budgets.py"
    spec = importlib.util.spec_from_file_location("ema_budgets", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setattr(sys, "argv", ["ema_budgets.py", "--presets", "rectified-flow", "--steps", "12", "--seeds", "2",
                                      "--n", "64", "--raw", "--out", str(tmp_path)])
    script.main()
    rows = json.loads((tmp_path / "ema_budgets.json").read_text())["rows"]
    assert sorted(rows) == [f"rectified-flow/12/{v}" for v in ("ema_rampup=0", "ema_rampup=0.05", "raw")]
    assert all(r["seeds"] == 2 and r["ratio"] > 0 and r["ratio_stderr"] >= 0 for r in rows.values())
    assert "| rectified-flow | 12 | ema_rampup=0.05 (default) |" in capsys.readouterr().out
