"""Distillation through the generator smoother (diffflow_discriminator.distill): any saved teacher, two forms."""
from __future__ import annotations

import pytest
import torch

from diffflow_core import build
from diffflow_core.errors import ConfigError
from diffflow_core.interfaces import Batch
from diffflow_core.plugins import registry
from diffflow_discriminator.distill import gaussian_prior_std

TINY = {"name": "mlp", "hidden": 32, "depth": 2}
GENERATOR = {"name": "mlp", "hidden": 64, "depth": 2}


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    """Untrained but fixed teachers of two families, saved: the distiller only sees their checkpoints."""
    folder = tmp_path_factory.mktemp("teachers")
    paths = {}
    for name, preset, flow in (("rf", "rectified-flow", {"network": TINY}),
                               ("edm", "edm", {"network": TINY}),
                               ("edm-sde", "edm", {"network": TINY, "mode": "sde"})):
        model = build(preset=preset, data="ring5", flow=flow, sample={"steps": 4})
        paths[name] = str(folder / f"{name}.pt")
        model.save(paths[name])
    return paths


def distiller(teacher: str, form: str = "regression", steps: int = 1, latent_dim: int = 2, **objective):
    return build({"flow": {"name": "distill", "teacher": teacher, "form": form, "network": TINY},
                  "objective": {"name": "distill", "pairs": 512, **objective},
                  "smoother": {"name": "generator", "latent_dim": latent_dim, "network": GENERATOR},
                  "solver": "euler", "data": "ring5",
                  "train": {"steps": steps, "batch_size": 128, "lr": 3e-3, "progress": False}})


def test_gaussian_prior_std_is_read_from_the_prior_density():
    assert gaussian_prior_std(registry("flows").create("score", sigma_max=20.0, network=TINY, event_shape=(2,))) \
        == pytest.approx(20.0, rel=1e-4)
    assert gaussian_prior_std(registry("flows").create("velocity", network=TINY, event_shape=(2,))) \
        == pytest.approx(1.0, rel=1e-4)
    dataset_source = registry("flows").create("velocity", network=TINY, event_shape=(2,), source="dataset",
                                              data=build(preset="rectified-flow", data="ring5").data)
    with pytest.raises(ConfigError, match="no isotropic zero-mean Gaussian"):
        gaussian_prior_std(dataset_source)


def test_regression_gradient_is_the_int_pm_step_toward_the_teacher_solve(teachers):
    """``grad 1/2 E||g(z) - T(s z)||^2 = -E[J^T v]`` with ``v = T(s z) - g(z)``: the generator smoother's surrogate
    gradient (eq 11) for the drift toward the teacher's solve; and the pairs are the teacher's solves from ``s z``."""
    model = distiller(teachers["edm"])
    objective, smoother = model.objective, model.smoother
    objective.prepare(model)
    teacher = model.flow.teacher
    z = objective.latents[:8]
    solved = model.flow.teacher_solver.solve(teacher, 20.0 * z, teacher.time_grid(4)).x
    torch.testing.assert_close(objective.targets[:8], solved, rtol=1e-4, atol=1e-4)
    params = [p for p in smoother.parameters()]
    batch = Batch(torch.zeros(64, 2))
    loss = objective.regression_loss(smoother, batch, torch.Generator().manual_seed(3))
    grads = torch.autograd.grad(loss, params)
    index = torch.randint(len(objective.latents), (64,), generator=torch.Generator().manual_seed(3))
    x = smoother(objective.latents[index])
    surrogate = smoother.surrogate_loss(None, None, None, x, drift=objective.targets[index] - x)
    for a, b in zip(grads, torch.autograd.grad(surrogate, params)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_regression_distils_a_velocity_teacher(teachers):
    """A few hundred generator steps bring ``g(z)`` onto the rectified-flow teacher's solve from the same ``z``."""
    model = distiller(teachers["rf"], steps=300)
    model.objective.prepare(model)
    z, target = model.objective.latents, model.objective.targets
    with torch.no_grad():
        before = float((model.smoother(z) - target).pow(2).sum(1).mean())
    model.fit()
    with torch.no_grad():
        after = float((model.smoother(z) - target).pow(2).sum(1).mean())
    assert after < 0.05 * before
    assert model.sample(10).nfe == 1


def test_score_form_uses_the_teacher_s_implied_denoiser(teachers):
    """Score form: the Score GAN's data denoiser is the teacher's, for an EDM teacher its own ``D`` and for a
    rectified flow ``x_t + (1 - t) f(x_t, t)`` at ``t = 1 / (1 + sigma)``, ``x_t = t x``; both train."""
    x, sigma = torch.randn(5, 2), torch.tensor([0.1, 0.5, 1.0, 3.0, 9.0])
    edm = distiller(teachers["edm"], form="score", steps=2, score_steps=1)
    torch.testing.assert_close(edm.flow.score_gan.data_score.denoise(x, sigma),
                               edm.flow.teacher.denoise(x, sigma), rtol=1e-4, atol=1e-5)
    rf = distiller(teachers["rf"], form="score", steps=2, score_steps=1)
    t = (1 / (1 + sigma))[:, None]
    expected = t * x + (1 - t) * rf.flow.teacher.field(t * x, t[:, 0])
    torch.testing.assert_close(rf.flow.score_gan.data_score.denoise(x, sigma), expected, rtol=1e-4, atol=1e-5)
    for model in (edm, rf):
        history = model.fit()
        assert model.sample(10).x.shape == (10, 2) and history is not None


@pytest.mark.parametrize("teacher, form, latent_dim, message", [
    (None, "regression", 2, "teacher: expected the path of a saved model"),
    ("edm", "adversarial", 2, "form: expected one of regression, score"),
    ("edm", "regression", 8, "smoother.latent_dim: form 'regression'"),
    ("edm-sde", "regression", 2, "form: 'regression' needs a deterministic teacher"),
])
def test_refusals_are_one_line(teachers, teacher, form, latent_dim, message):
    with pytest.raises(ConfigError) as info:
        model = distiller(teachers.get(teacher), form=form, latent_dim=latent_dim)
        model.objective.prepare(model)
    assert message in str(info.value) and "\n" not in str(info.value)
