"""``Model.sample``'s ``batch``: free particles are solved a chunk at a time from one prior draw, so a
deterministic solve is the same at any batch; particles that move or are observed together are never split."""
import pytest
import torch

from diffflow_core import build
from diffflow_core.errors import ConfigError
from diffflow_core.model import CPU_SAMPLE_VALUES, sample_batch

TINY = {"name": "mlp", "hidden": 16, "depth": 1}


def ring(n=200):
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(0))


def count_solves(model):
    calls = []
    solve = model.solver.solve

    def counting(flow, x0, *args, **kwargs):
        calls.append(x0.shape[0])
        return solve(flow, x0, *args, **kwargs)

    model.solver.solve = counting
    return calls


def test_a_deterministic_solve_gives_the_same_samples_at_any_batch():
    model = build(preset="edm", data=ring(), flow={"network": TINY})
    whole = model.sample(50, 6, seed=3, batch=50)
    for batch in (7, 25, 1000):
        chunked = model.sample(50, 6, seed=3, batch=batch)
        torch.testing.assert_close(chunked.x, whole.x, rtol=1e-5, atol=1e-6)
        assert chunked.nfe == whole.nfe == 11  # Heun, its last step Euler
    recorded = model.sample(50, 6, seed=3, batch=7, record=True)
    torch.testing.assert_close(recorded.trajectory[-1], whole.x, rtol=1e-5, atol=1e-6)
    assert recorded.trajectory.shape == (7, 50, 2) and recorded.times.shape == (7,)


def test_the_config_batch_sets_the_chunks_and_an_explicit_batch_overrides_it():
    model = build(preset="rectified-flow", data=ring(), flow={"network": TINY}, sample={"batch": 16})
    calls = count_solves(model)
    model.sample(50, 2)
    assert calls == [16, 16, 16, 2]
    calls.clear()
    model.sample(50, 2, batch=30)
    assert calls == [30, 20]


def test_the_automatic_batch_caps_the_values_of_a_cpu_solve_only():
    assert sample_batch(2000, (1, 32, 32), "cpu") == CPU_SAMPLE_VALUES // 1024
    assert sample_batch(2000, (3, 32, 32), "cpu") == CPU_SAMPLE_VALUES // 3072
    assert sample_batch(2000, (2,), "cpu") == 2000
    assert sample_batch(5, (3, 256, 256), "cpu") == 1
    assert sample_batch(2000, (3, 32, 32), "cuda") == 2000


@pytest.mark.parametrize("preset, options, why", [
    ("mmd", {}, "couples the particles"),
    ("svgd", {}, "moves all particles together"),
    ("rectified-flow", {"callback": lambda info: None}, "step callback"),
])
def test_particles_that_move_or_are_seen_together_are_solved_whole(preset, options, why):
    kwargs = {} if preset in ("mmd", "svgd") else {"flow": {"network": TINY}}
    model = build(preset=preset, data=ring(), sample={"batch": 8}, **kwargs)
    with pytest.raises(ConfigError, match=f"^sample.batch=8: .*{why}") as error:
        model.sample(20, 2, **options)
    assert "\n" not in str(error.value)
    model.config.sample.batch = None
    calls = count_solves(model)
    model.sample(20, 2, **options)
    assert calls == [20]


def test_a_bad_batch_is_refused_naming_the_field():
    with pytest.raises(ConfigError, match="^sample.batch: "):
        build(preset="edm", data=ring(), flow={"network": TINY}, sample={"batch": 0})
    model = build(preset="edm", data=ring(), flow={"network": TINY})
    with pytest.raises(ConfigError, match="^batch: "):
        model.sample(10, 2, batch=1.5)


def test_diffflow_run_refuses_a_batch_the_model_cannot_split_before_training(tmp_path, capsys):
    from diffflow_core.cli import main

    code = main(["run", "--preset", "gan", "--steps", "5", "--set", "sample.batch=8", "--out", str(tmp_path / "gan")])
    assert code != 0 and "sample.batch=8: smoother GeneratorSmoother" in capsys.readouterr().err
    assert not (tmp_path / "gan" / "checkpoint.pt").exists()
