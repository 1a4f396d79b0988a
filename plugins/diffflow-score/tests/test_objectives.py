"""DSM objectives: closed-form minima on Gaussian data, generator discipline, a real (reduced) training run."""
import pytest
import torch

from diffflow_core import build
from diffflow_core.data import load_dataset
from diffflow_core.errors import ConfigError
from diffflow_core.interfaces import Batch
from diffflow_core.plugins import registry
from diffflow_score.testing import exact_flow, gaussian_denoiser

S = 0.5
RING5 = load_dataset("ring5", n_train=4000, n_test=200)


def gaussian_batch(n=50_000, dim=1, seed=0):
    return Batch(S * torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))


def loss(objective, flow, batch, seed=1):
    return float(objective.loss(flow, batch, torch.Generator().manual_seed(seed)))


def scaled(factor):
    ideal = gaussian_denoiser(S)
    return lambda x, sigma: factor * ideal(x, sigma)


def test_dsm_edm_of_the_exact_denoiser_is_the_irreducible_minimum():
    """For y ~ N(0, sd^2) the posterior variance sd^2 sigma^2/(sd^2+sigma^2) times lambda(sigma) is exactly 1,
    so the exact denoiser's dsm-edm loss is 1 for every sigma; perturbed denoisers score higher."""
    objective = registry("objectives").create("dsm-edm")
    batch = gaussian_batch()
    exact = loss(objective, exact_flow(gaussian_denoiser(S), "edm", (1,)).double(), batch)
    assert exact == pytest.approx(1.0, abs=0.02)  # Monte Carlo sd ~0.006
    for factor in (0.9, 1.1):
        assert loss(objective, exact_flow(scaled(factor), "edm", (1,)).double(), batch) > exact + 0.01
    assert loss(objective, exact_flow(gaussian_denoiser(0.4), "edm", (1,)).double(), batch) > exact + 0.01


@pytest.mark.parametrize("name,parameterisation", [("dsm-vp", "vp"), ("dsm-ve", "ve")])
def test_epsilon_losses_are_minimised_by_the_exact_score(name, parameterisation):
    objective = registry("objectives").create(name)
    batch = gaussian_batch(20_000)
    exact = loss(objective, exact_flow(gaussian_denoiser(S), parameterisation, (1,)).double(), batch)
    assert 0 < exact < 1  # the noise's posterior variance is below its prior variance 1
    for s in (0.4, 0.6):
        other = loss(objective, exact_flow(gaussian_denoiser(s), parameterisation, (1,)).double(), batch)
        assert other > exact


def test_losses_use_only_the_given_generator():
    objective = registry("objectives").create("dsm-edm")
    flow = exact_flow(scaled(1.1), "edm", (1,)).double()
    batch = gaussian_batch(1000)
    torch.manual_seed(0)
    first = loss(objective, flow, batch, seed=3)
    torch.manual_seed(123)  # the global RNG plays no part
    assert loss(objective, flow, batch, seed=3) == first
    assert loss(objective, flow, batch, seed=4) != first


def test_objective_rejects_a_flow_of_another_parameterisation_and_bad_settings():
    vp = exact_flow(gaussian_denoiser(S), "vp", (1,))
    with pytest.raises(ConfigError, match="parameterisation 'edm'"):
        registry("objectives").create("dsm-edm", flow=vp)
    with pytest.raises(ConfigError, match="p_std"):
        registry("objectives").create("dsm-edm", p_std=0.0)
    with pytest.raises(ConfigError, match="label_dropout"):
        registry("objectives").create("dsm-vp", label_dropout=1.0)


def test_short_edm_training_run_decreases_the_loss():
    """A reduced real run (small MLP, 150 steps) on ring5: the late loss is well below the early loss."""
    model = build(preset="edm", data=RING5, flow={"network": {"name": "mlp", "hidden": 64, "depth": 2}},
                  train={"steps": 150, "lr": 2e-3, "log_every": 1, "progress": False, "ema": 0.0, "warmup": 0})
    losses = model.fit().series("loss/model")
    early, late = sum(losses[:10]) / 10, sum(losses[-30:]) / 30
    assert late < 0.6 * early
    samples = model.sample(500, 9, seed=0)
    assert samples.nfe == 17 and samples.x.shape == (500, 2)


@pytest.mark.parametrize("preset", ["vp", "ve", "ncsn"])
def test_presets_build_train_and_sample(preset):
    model = build(preset=preset, data=RING5, flow={"network": {"name": "mlp", "hidden": 32, "depth": 2}},
                  train={"steps": 5, "progress": False})
    model.fit()
    assert torch.isfinite(model.sample(64, 4, seed=0).x).all()


def test_conditional_flow_trains_with_label_dropout_and_samples_a_label():
    model = build(preset="edm", data="digits", flow={"network": {"name": "mlp", "hidden": 32, "depth": 2},
                                                   "conditional": True},
                  objective={"label_dropout": 0.2}, train={"steps": 3, "progress": False, "batch_size": 16})
    model.fit()
    assert model.sample(8, 2, seed=0, label=3, guidance=2.0).x.shape == (8, 1, 8, 8)
    with pytest.raises(ConfigError, match="label"):
        model.sample(8, 2, seed=0, label=10)
    unconditional = build(preset="edm", data=RING5, flow={"network": {"name": "mlp", "hidden": 8, "depth": 1}})
    with pytest.raises(ConfigError, match="unconditional"):
        unconditional.sample(8, 2, seed=0, label=1)
