"""The engine on a CUDA device (issue 21): solvers, smoothers, objectives, the trainer, sampling and checkpoints
give on the GPU what they give on the CPU, and their results stay on the device.

Every test is marked ``gpu`` and skips without CUDA; ``scripts/gpu-check.sh`` runs them with ``-m gpu``.
``DIFFFLOW_TEST_DEVICE=cpu`` runs the same code against the CPU (each cross-device comparison then compares the
CPU with itself): a check of the tests themselves on a machine without a GPU, not a substitute for one.

Cross-device comparisons use float64 where the computation allows (then CPU and CUDA agree to round-off) and
drive both devices with the same CPU generator, the trainer's: the random draws are then the same numbers.
"""
from __future__ import annotations

import copy
import inspect
import math
import os

import pytest
import torch

from diffflow_core import Batch, Flow, Model, SamplingContext, build, registry
from diffflow_core.data import load_dataset
from diffflow_core.smoothers import GeneratorSmoother, IdentitySmoother

DEVICE = os.environ.get("DIFFFLOW_TEST_DEVICE", "cuda")

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.fixture
def device() -> torch.device:
    return torch.device(DEVICE)


def on(x: torch.Tensor, device: torch.device) -> bool:
    return x.device.type == device.type


def cpu_generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def small_ring5():
    return load_dataset({"name": "ring5", "n_train": 4096, "n_test": 512})


def seeded_build(preset: str, **overrides) -> Model:
    torch.manual_seed(0)
    return build(preset=preset, data=small_ring5(), **overrides)


def _takes_device(method) -> bool:
    return "device" in inspect.signature(method).parameters


def fit(model: Model, **train):
    """``model.fit`` where the model is (said explicitly where ``fit`` takes a device, whose default may differ)."""
    return model.fit(**train, **({"device": model.device} if _takes_device(Model.fit) else {}))


def sample(model: Model, n: int, steps: int, seed: int):
    """``model.sample`` where the model is (said explicitly where ``sample`` takes a device)."""
    return model.sample(n, steps, seed=seed, **({"device": model.device} if _takes_device(Model.sample) else {}))


class Decay(Flow):
    """``dx = -x dt``: ``x(t) = x0 e^{-t}``, a Gaussian stays Gaussian with variance ``v0 e^{-2t}``."""

    event_shape = (2,)

    def drift(self, x, t):
        return -x


class OrnsteinUhlenbeck(Decay):
    """``dx = -x dt + sqrt(2) dW``: stationary law N(0, I)."""

    def diffusion(self, t):
        return math.sqrt(2.0)


# -- solvers -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,tol", [("euler", 1e-2), ("heun", 1e-4)])
def test_ode_solvers_give_the_cpu_result_on_the_device(device, name, tol):
    x0 = 2 * torch.randn(4096, 2, generator=cpu_generator(1), dtype=torch.float64)
    times = torch.linspace(0, 1, 101, dtype=torch.float64)
    solver = registry("solvers").create(name)
    on_cpu = solver.solve(Decay(), x0, times).x
    solution = solver.solve(Decay(), x0.to(device), times.to(device))
    on_device = solution.x
    assert on(on_device, device) and solution.nfe == (100 if name == "euler" else 200)
    torch.testing.assert_close(on_device.cpu(), on_cpu, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(on_cpu, x0 * math.exp(-1), rtol=tol, atol=tol)


def test_euler_maruyama_with_a_cpu_generator_draws_the_cpu_noise_on_the_device(device):
    """The trainer's generator is a CPU one: it must drive device particles with the very same noise."""
    x0 = 2 * torch.randn(2048, 2, generator=cpu_generator(1), dtype=torch.float64)
    times = torch.linspace(0, 1, 21, dtype=torch.float64)
    em = registry("solvers").create("euler-maruyama")
    on_cpu = em.solve(OrnsteinUhlenbeck(), x0, times, generator=cpu_generator(5)).x
    on_device = em.solve(OrnsteinUhlenbeck(), x0.to(device), times.to(device), generator=cpu_generator(5)).x
    assert on(on_device, device)
    torch.testing.assert_close(on_device.cpu(), on_cpu, rtol=1e-12, atol=1e-12)


def test_euler_maruyama_on_a_device_generator_has_the_exact_discrete_gaussian_law(device):
    """``x_{k+1} = (1 - dt) x_k + sqrt(2 dt) eps``: mean 0, variance ``(1-dt)^{2K} v0 + 2 dt sum_j (1-dt)^{2j}``."""
    n, steps, v0 = 200_000, 20, 4.0
    dt = 1.0 / steps
    times = torch.linspace(0, 1, steps + 1, dtype=torch.float64, device=device)
    generator = torch.Generator(device=device).manual_seed(0)
    x0 = math.sqrt(v0) * torch.randn(n, 2, generator=generator, device=device, dtype=torch.float64)
    em = registry("solvers").create("euler-maruyama")
    x = em.solve(OrnsteinUhlenbeck(), x0, times, generator=generator).x
    assert on(x, device)
    var = (1 - dt) ** (2 * steps) * v0 + 2 * dt * sum((1 - dt) ** (2 * j) for j in range(steps))
    assert float(x.mean(0).abs().max()) < 5 * math.sqrt(var / n)
    assert x.var(0).cpu().tolist() == pytest.approx([var, var], rel=5 * math.sqrt(2 / n))
    reseeded = torch.Generator(device=device).manual_seed(0)  # the same seed on the device: the same path
    x0_again = math.sqrt(v0) * torch.randn(n, 2, generator=reseeded, device=device, dtype=torch.float64)
    assert torch.equal(em.solve(OrnsteinUhlenbeck(), x0_again, times, generator=reseeded).x, x)


# -- smoothers -----------------------------------------------------------------------------------------
def test_identity_smoother_steps_on_the_device(device):
    x = torch.randn(512, 2, generator=cpu_generator(), dtype=torch.float64)
    dt = torch.tensor(0.1, dtype=torch.float64)
    moved = IdentitySmoother().advance(Decay(), x.to(device), dt.to(device), dt.to(device))
    assert on(moved, device)
    torch.testing.assert_close(moved.cpu(), 0.9 * x, rtol=1e-14, atol=1e-14)


def generator_pair(device):
    torch.manual_seed(0)
    cpu = GeneratorSmoother({"name": "mlp", "hidden": 32, "depth": 2}, latent_dim=4, event_shape=(2,)).double()
    return cpu, copy.deepcopy(cpu).to(device)


def test_generator_ntk_operator_and_step_match_the_cpu(device):
    cpu, dev = generator_pair(device)
    z = torch.randn(256, 4, generator=cpu_generator(1), dtype=torch.float64)
    v = torch.randn(256, 2, generator=cpu_generator(2), dtype=torch.float64)
    a_cpu, a_dev = cpu.operator(v, z), dev.operator(v.to(device), z.to(device))
    assert on(a_dev, device)
    torch.testing.assert_close(a_dev.cpu(), a_cpu, rtol=1e-10, atol=1e-12)
    assert float((v * a_cpu).sum()) > 0  # A is positive semi-definite: <v, A v> = |E J^T v|^2 n >= 0
    # one explicit step = one SGD step on theta; the particles move by dt * A[v] + O(dt^2)
    dt = torch.tensor(1e-3, dtype=torch.float64)
    cpu.z, dev.z = z, z.to(device)
    x_cpu = cpu.advance(Decay(), cpu(z).detach(), dt, dt)
    x_dev = dev.advance(Decay(), dev(dev.z).detach(), dt.to(device), dt.to(device))
    assert on(x_dev, device)
    torch.testing.assert_close(x_dev.cpu(), x_cpu, rtol=1e-10, atol=1e-12)


def test_generator_latents_from_a_cpu_generator_land_on_the_device(device):
    """A GAN's training draws its latents from the trainer's CPU generator."""
    cpu, dev = generator_pair(device)
    z_cpu, z_dev = cpu.sample_latent(64, cpu_generator(3)), dev.sample_latent(64, cpu_generator(3))
    assert on(z_dev, device) and torch.equal(z_dev.cpu(), z_cpu)
    x = dev.sample(64, torch.Generator(device=device).manual_seed(3))
    assert on(x, device) and x.shape == (64, 2)


def test_stein_smoother_matches_the_cpu(device):
    pytest.importorskip("diffflow_kl")
    model = seeded_build("svgd")
    x = 2 * torch.randn(3000, 2, generator=cpu_generator(4), dtype=torch.float64)  # > 1000: median on a subset
    t = torch.tensor(0.5, dtype=torch.float64)
    v_cpu = model.smoother.velocity(model.flow, x, t, SamplingContext())
    v_dev = model.smoother.velocity(model.flow, x.to(device), t.to(device), SamplingContext())
    assert on(v_dev, device)
    torch.testing.assert_close(v_dev.cpu(), v_cpu, rtol=1e-9, atol=1e-12)


# -- objectives ----------------------------------------------------------------------------------------
OBJECTIVES = {  # preset: (plugin, overrides)
    "edm": ("diffflow_score", {}),                           # dsm-edm
    "rectified-flow": ("diffflow_velocity", {}),             # flow-matching
    "ndm": ("diffflow_ndm", {}),                             # nelbo-continuous, log-SNR proposal
    "vdm": ("diffflow_ndm", {}),                             # nelbo-continuous with a learned schedule
    "ddpm": ("diffflow_ndm", {}),                            # discrete nelbo
    "gan": ("diffflow_discriminator", {}),                   # gan, generator smoother
    "discriminator-flow": ("diffflow_discriminator", {}),    # discriminator-flow, simulated particles
    "score-gan": ("diffflow_discriminator", {"flow": {"data_steps": 2}}),  # generated-dsm, data score trained first
}


def objective_model(preset: str) -> Model:
    plugin, overrides = OBJECTIVES[preset]
    pytest.importorskip(plugin)
    if preset not in registry("presets"):
        pytest.skip(f"preset {preset!r} is not registered")
    model = seeded_build(preset, **overrides)
    model.objective.prepare(model)  # the trainer's phase before players(): a Score GAN trains its data score
    return model


@pytest.mark.parametrize("preset", OBJECTIVES)
def test_objective_loss_and_backward_on_the_device_match_the_cpu(device, preset):
    """Each player's loss from the trainer's CPU generator: the CPU value on the device, finite gradients there."""
    cpu = objective_model(preset)
    cpu_players = cpu.objective.players(cpu)  # the copy shares the prepared data score of a Score GAN
    dev = copy.deepcopy(cpu).to(device)
    batch = Batch(cpu.data.train[:256])
    for p_cpu, p_dev in zip(cpu_players, dev.objective.players(dev), strict=True):
        loss_cpu = p_cpu.loss(batch, cpu_generator(7))
        loss_dev = p_dev.loss(batch.to(device), cpu_generator(7))
        assert on(loss_dev, device) and torch.isfinite(loss_dev)
        torch.testing.assert_close(loss_dev.cpu(), loss_cpu, rtol=2e-4, atol=1e-5)
        loss_dev.backward()
        grads = [p.grad for p in p_dev.parameters if p.grad is not None]
        assert grads, f"{preset}: player {p_dev.name} got no gradient"
        assert all(on(g, device) and bool(torch.isfinite(g).all()) for g in grads)
        dev.zero_grad(set_to_none=True)


@pytest.mark.parametrize("preset", OBJECTIVES)
def test_objective_draws_from_a_device_generator(device, preset):
    """Randomness that stays on the device: every draw of a loss works from a generator on the device."""
    model = objective_model(preset).to(device)
    batch = Batch(model.data.train[:256]).to(device)
    for player in model.objective.players(model):
        a = player.loss(batch, torch.Generator(device=device).manual_seed(7))
        b = player.loss(batch, torch.Generator(device=device).manual_seed(7))
        assert on(a, device) and torch.isfinite(a)
        torch.testing.assert_close(a, b)
        a.backward()
        model.zero_grad(set_to_none=True)


# -- trainer -------------------------------------------------------------------------------------------
TRAIN = {"batch_size": 256, "lr": 2e-3, "warmup": 0, "decay": 0.0, "ema": 0.9, "progress": False, "log_every": 1}


def test_trainer_trains_on_the_device_of_the_model(device):
    """``Trainer.fit`` trains where the model's parameters are (the loss falls) and leaves the model there."""
    model = seeded_build("edm", flow={"network": {"name": "mlp", "hidden": 128, "depth": 3}}).to(device)
    losses = fit(model, steps=40, **TRAIN).series("loss/model")
    assert all(on(p, device) for p in model.parameters())
    assert len(losses) == 40 and all(math.isfinite(v) for v in losses)
    assert sum(losses[-10:]) < sum(losses[:10])
    x = sample(model, 256, 6, seed=0).x
    assert on(x, device) and bool(torch.isfinite(x).all())


def test_trainer_bfloat16_autocast_on_the_device(device):
    model = seeded_build("edm", flow={"network": {"name": "mlp", "hidden": 128, "depth": 3}}).to(device)
    losses = fit(model, steps=30, precision="bfloat16", **TRAIN).series("loss/model")
    assert all(math.isfinite(v) for v in losses) and sum(losses[-10:]) < sum(losses[:10])
    assert all(p.dtype == torch.float32 and on(p, device) for p in model.parameters())


# -- sampling ------------------------------------------------------------------------------------------
SAMPLERS = {  # id: (preset, steps, plugin, overrides)
    "edm": ("edm", 6, "diffflow_score", {}),
    "ddpm": ("ddpm", 20, "diffflow_ndm", {}),
    "gan": ("gan", 1, "diffflow_discriminator", {}),
    "mmd": ("mmd", 5, "diffflow_mmd", {}),
    "kde-kl": ("kl", 3, "diffflow_kl", {}),
    "data-source": ("rectified-flow", 4, "diffflow_velocity",
                    {"flow": {"source": {"name": "dataset", "data": "moons"}}}),
}


@pytest.mark.parametrize("case", SAMPLERS)
def test_sampling_on_the_device_is_reproducible_per_seed(device, case):
    preset, steps, plugin, overrides = SAMPLERS[case]
    pytest.importorskip(plugin)
    model = seeded_build(preset, **overrides).to(device)
    assert model.device.type == device.type  # an MMD flow holds buffers only, a KDE flow no tensor at all
    a, b, c = (sample(model, 512, steps, seed=s).x for s in (3, 3, 4))
    assert on(a, device) and bool(torch.isfinite(a).all())
    assert torch.equal(a, b) and not torch.equal(a, c)


# -- checkpoints between devices -----------------------------------------------------------------------
def deterministic_solve(model: Model, steps: int = 6) -> torch.Tensor:
    """The sampler from one fixed CPU draw of the prior (same particles on either device), returned on the CPU."""
    x0 = model.flow.prior(256, generator=cpu_generator(9), device=model.device)
    times = model.flow.time_grid(steps).to(model.device)
    return model.solver.solve(model.flow, x0, times, smoother=model.smoother).x.cpu()


def test_checkpoint_saved_on_the_device_loads_and_samples_on_the_cpu(device, tmp_path):
    model = seeded_build("edm").to(device)
    fit(model, steps=5, **TRAIN)
    model.save(tmp_path / "model.pt")
    loaded = Model.load(tmp_path / "model.pt", map_location="cpu")
    assert all(p.device.type == "cpu" for p in loaded.parameters())
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value.cpu()), key
    x = sample(loaded, 128, 6, seed=0).x
    assert x.device.type == "cpu" and bool(torch.isfinite(x).all())
    torch.testing.assert_close(deterministic_solve(loaded), deterministic_solve(model), rtol=1e-4, atol=1e-4)


def test_checkpoint_saved_on_the_cpu_loads_onto_the_device(device, tmp_path):
    model = seeded_build("edm")
    model.save(tmp_path / "model.pt")
    loaded = Model.load(tmp_path / "model.pt", map_location=device)
    assert all(on(p, device) for p in loaded.parameters())
    x = sample(loaded, 128, 6, seed=0).x
    assert on(x, device) and bool(torch.isfinite(x).all())
    torch.testing.assert_close(deterministic_solve(loaded), deterministic_solve(model), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("first,second", [("device", "cpu"), ("cpu", "device")])
def test_training_resumes_on_the_other_device(device, tmp_path, first, second):
    """A run checkpointed on one device continues on the other: weights, optimiser and EMA states move with it
    (the random streams need not: reproducibility is per device), so it goes on from where it stopped."""
    where = {"device": device, "cpu": torch.device("cpu")}
    net = {"network": {"name": "mlp", "hidden": 64, "depth": 2}}
    start = seeded_build("edm", flow=net).to(where[first])
    before = fit(start, steps=20, checkpoint_every=10, out_dir=tmp_path, **TRAIN).series("loss/model")
    resumed = seeded_build("edm", flow=net).to(where[second])
    history = fit(resumed, steps=30, out_dir=tmp_path, resume=True, **TRAIN)
    losses = history.series("loss/model")
    assert [r["step"] for r in history.records if "loss/model" in r] == list(range(30))
    assert losses[:20] == before and all(math.isfinite(v) for v in losses)
    assert all(p.device.type == where[second].type for p in resumed.parameters())
    # a restart from the initial weights would repeat the first steps' losses; a resume goes on well below them
    assert sum(losses[20:]) < 0.85 * sum(losses[:10])
