"""Score GAN (SPEC §2.7): eq 28's noise levels and the surrogate gradient J^T v (SPEC §2.11.6)."""
import torch

from diffflow_core.build import build
from diffflow_discriminator.score_gan import noise_levels

SMALL = {"name": "mlp", "hidden": 32, "depth": 2}


def small_score_gan(**flow):
    data = torch.randn(500, 2, generator=torch.Generator().manual_seed(0)) + 1
    return build(preset="score-gan", data=data,
                 flow={"network": SMALL, "data_network": SMALL, "data_steps": 0, **flow},
                 smoother={"network": SMALL, "latent_dim": 3}, train={"progress": False})


def test_noise_levels_map_unit_interval_monotonically():
    u = torch.linspace(0, 1, 101, dtype=torch.float64)
    sigma = noise_levels(u, 0.1, 10.0, 3.0)
    assert abs(float(sigma[0]) - 10.0) < 1e-12 and abs(float(sigma[-1]) - 0.1) < 1e-12
    assert bool((sigma.diff() < 0).all())


def test_generator_gradient_is_jacobian_transpose_of_the_eq27_vector():
    """The generator player's gradient equals ``-E[J^T v]`` and the gradient of eq 27 with the same draws."""
    model = small_score_gan(w_d=2.0).double()
    smoother, flow = model.smoother, model.flow
    _, gen_player = model.objective.players(model)
    params = gen_player.parameters
    n, seed = 12, 4
    grads = torch.autograd.grad(gen_player.loss(_batch(n), torch.Generator().manual_seed(seed)), params)

    replay = torch.Generator().manual_seed(seed)
    z = smoother.sample_latent(n, replay)
    x = smoother(z)
    u = torch.rand(n, generator=replay, dtype=x.dtype)
    sigma = noise_levels(u, flow.sigma_min, flow.sigma_max, flow.rho)
    noisy = x + sigma[:, None] * torch.randn(x.shape, generator=replay, dtype=x.dtype)
    with torch.no_grad():  # eq 26: sigma s = (D - x_tilde) / sigma
        sp = (flow.data_score.denoise(noisy, sigma) - noisy) / sigma[:, None]
        sr = (flow.generated.denoise(noisy, sigma) - noisy) / sigma[:, None]
        v = 2.0 * sp - 1.0 * sr
    jtv = torch.autograd.grad(x, params, grad_outputs=v / n, retain_graph=True)
    eq27 = torch.autograd.grad((noisy * (1.0 * sr - 2.0 * sp)).sum(1).mean(), params)
    for g, j, e in zip(grads, jtv, eq27):
        torch.testing.assert_close(g, -j, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12)
    assert max(float(j.abs().max()) for j in jtv) > 0


def _batch(n):
    from diffflow_core.interfaces import Batch

    return Batch(torch.zeros(n, 2, dtype=torch.float64))


def test_generated_score_step_lowers_its_denoising_loss():
    model = small_score_gan()
    score_player, gen_player = model.objective.players(model)
    assert gen_player.every == 10 and score_player.name == "score"
    history = model.fit(steps=60, lr=2e-3, log_every=59)
    first, last = history.series("loss/score")[0], history.series("loss/score")[-1]
    assert last < first
