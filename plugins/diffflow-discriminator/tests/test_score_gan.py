"""Score GAN (SPEC §2.7): eq 28's noise levels and the surrogate gradient J^T v (SPEC §2.11.6)."""
import pytest
import torch

from diffflow_core import build
from diffflow_core.errors import ConfigError
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


def test_edm_weighting_multiplies_each_level_by_the_edm_weight():
    """``weighting="edm"``: the DSM loss is the unweighted per-sample error times (sigma^2 + sd^2)/(sigma sd)^2."""
    model = small_score_gan().double()
    objective, flow = model.objective, model.flow
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    objective.weighting = "edm"
    weighted = objective.score_loss(x, torch.Generator().manual_seed(2))
    replay = torch.Generator().manual_seed(2)
    sigma = flow.sample_sigma(64, replay, x)
    noisy = x + sigma[:, None] * torch.randn(x.shape, generator=replay, dtype=x.dtype)
    error = (flow.generated.denoise(noisy, sigma) - x).pow(2).sum(1)
    sd2 = flow.generated.sigma_data ** 2
    torch.testing.assert_close(weighted, (error * (sigma ** 2 + sd2) / (sigma ** 2 * sd2)).mean(), rtol=1e-12, atol=0)
    objective.weighting = "none"
    torch.testing.assert_close(objective.score_loss(x, torch.Generator().manual_seed(2)), error.mean(),
                               rtol=1e-12, atol=0)


def test_bad_score_gan_settings_are_refused_naming_the_field():
    with pytest.raises(ConfigError, match="weighting"):
        build(preset="score-gan", data=torch.randn(50, 2), flow={"network": SMALL, "data_network": SMALL},
              objective={"weighting": "snr"})
    with pytest.raises(ConfigError, match="init_from_data"):
        small_score_gan(network={"name": "mlp", "hidden": 16, "depth": 2}, init_from_data=True)
    with pytest.raises(ConfigError, match="residual"):
        small_score_gan(init_from_data=True, residual=True)


def test_data_objective_settings_reach_the_data_scores_dsm_edm():
    """``data_objective`` is handed to the data score's ``dsm-edm`` (its bad value is refused there, by name)."""
    with pytest.raises(ConfigError, match="data_objective"):
        small_score_gan(data_objective="lognormal")
    model = small_score_gan(data_steps=1, data_objective={"p_mean": "high"})
    with pytest.raises(ConfigError, match="p_mean"):
        model.objective.prepare(model)


def test_init_from_data_copies_the_data_denoiser_once():
    model = small_score_gan(init_from_data=True)
    flow = model.flow
    assert not torch.equal(next(flow.generated.parameters()), next(flow.data_score.parameters()))
    with pytest.raises(RuntimeError, match="prepare"):  # the players train against a prepared data score only
        model.objective.players(model)
    model.objective.prepare(model)
    for mine, theirs in zip(flow.generated.parameters(), flow.data_score.parameters()):
        assert torch.equal(mine, theirs)
    with torch.no_grad():
        next(flow.generated.parameters()).add_(1.0)  # training moved it: preparing again must not reset it
    model.objective.prepare(model)
    assert not torch.equal(next(flow.generated.parameters()), next(flow.data_score.parameters()))


def test_residual_generated_score_is_the_data_score_plus_the_networks_edm_output():
    """``residual``: D_rho = D_p + c_out F; with F = 0 the two scores agree and the eq-19 drift vanishes even
    when the data denoiser has another architecture (its errors cancel)."""
    model = small_score_gan(residual=True, data_network={"name": "mlp", "hidden": 24, "depth": 3}).double()
    flow = model.flow
    g = torch.Generator().manual_seed(3)
    x = torch.randn(40, 2, generator=g, dtype=torch.float64)
    sigma = flow.sample_sigma(40, g, x)
    sd2 = flow.generated.sigma_data ** 2
    skip = (sd2 / (sigma ** 2 + sd2))[:, None]
    expected = flow.data_score.denoise(x, sigma) + flow.generated.denoise(x, sigma) - skip * x
    torch.testing.assert_close(flow.generated_denoise(x, sigma), expected, rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        assert float((flow.generated_denoise(x, sigma) - flow.data_score.denoise(x, sigma)).abs().max()) > 1e-5  # the residual is not zero
    last = [m for m in flow.generated.net.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.zero_(), last.bias.zero_()
    torch.testing.assert_close(flow.generated_denoise(x, sigma), flow.data_score.denoise(x, sigma),
                               rtol=0, atol=1e-12)
    assert float(flow.sample_drift(x, torch.Generator().manual_seed(4)).abs().max()) < 1e-10


def test_simultaneous_generator_step_reuses_the_score_steps_draw_and_pre_update_generated_score():
    """``updates="simultaneous"``: the score loss is the DSM loss of the draw ``g(z)``, and the generator's
    gradient is ``-E[J^T v]`` with eq 26's ``v`` at that draw's ``x_tilde`` and ``D_rho`` *before* the score
    update (here the score weights are perturbed between the two losses, as an optimiser step would)."""
    import copy

    model = small_score_gan(w_d=2.0).double()
    model.objective.updates = "simultaneous"
    smoother, flow = model.smoother, model.flow
    score_player, gen_player = model.objective.players(model)
    n, seed = 12, 5
    before = copy.deepcopy(flow.generated)
    score = score_player.loss(_batch(n), torch.Generator().manual_seed(seed))
    with torch.no_grad():
        for p in flow.generated.parameters():
            p.add_(0.1)
    grads = torch.autograd.grad(gen_player.loss(_batch(n), torch.Generator().manual_seed(99)), gen_player.parameters)

    replay = torch.Generator().manual_seed(seed)
    x = smoother(smoother.sample_latent(n, replay))
    sigma = flow.sample_sigma(n, replay, x)
    noisy = x.detach() + sigma[:, None] * torch.randn(x.shape, generator=replay, dtype=x.dtype)
    with torch.no_grad():
        denoised_rho = before.denoise(noisy, sigma)
        v = (2.0 * flow.data_score.denoise(noisy, sigma) - denoised_rho - noisy) / sigma[:, None]
    error = (denoised_rho - x.detach()).pow(2).sum(1) * flow.generated.loss_weight(sigma)  # the preset's "edm"
    torch.testing.assert_close(score, error.mean(), rtol=1e-12, atol=0)
    jtv = torch.autograd.grad(x, gen_player.parameters, grad_outputs=v / n)
    for g, j in zip(grads, jtv):
        torch.testing.assert_close(g, -j, rtol=1e-10, atol=1e-12)
    assert max(float(j.abs().max()) for j in jtv) > 0


def test_simultaneous_score_gan_steps_the_generator_every_score_steps_and_refuses_unknown_modes():
    with pytest.raises(ConfigError, match="updates"):
        build(preset="score-gan", data=torch.randn(50, 2), flow={"network": SMALL, "data_network": SMALL},
              objective={"updates": "jointly"})
    model = build(preset="score-gan", data=torch.randn(500, 2, generator=torch.Generator().manual_seed(0)) + 1,
                  flow={"network": SMALL, "data_network": SMALL, "data_steps": 0},
                  smoother={"network": SMALL, "latent_dim": 3}, objective={"updates": "simultaneous", "score_steps": 3},
                  train={"progress": False})
    start = [p.detach().clone() for p in model.smoother.parameters()]
    history = model.fit(steps=7, lr=1e-3, log_every=1)
    generator_losses = [r.get("loss/generator") for r in history.records]
    assert generator_losses[0] == generator_losses[2] != generator_losses[3]  # stepped at 0, 3, 6 only
    assert generator_losses[3] == generator_losses[5] != generator_losses[6]
    assert all(not torch.equal(a, b) for a, b in zip(start, model.smoother.parameters()))


def test_only_the_generator_is_averaged():
    from diffflow_core.training.trainer import EMA

    model = small_score_gan()
    shadow = EMA(model, 0.9, skip=model.objective.unaveraged(model)).shadow
    params = {name for name, _ in model.named_parameters()}
    assert params & set(shadow) == {name for name in params if name.startswith("smoother.")}


def test_drift_stays_float32_under_bfloat16_autocast():
    """Eq 26 is a difference of two close denoiser outputs: under ``train.precision="bfloat16"``'s autocast it
    is still computed in float32, equal to the float32 drift for the same draw (bfloat16 would miss by far more)."""
    model = small_score_gan()
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(1)) * 3

    def drift(autocast: bool) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            return model.flow.sample_drift(x, torch.Generator().manual_seed(2))

    half, full = drift(True), drift(False)
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, full, rtol=1e-6, atol=1e-6)
    with torch.no_grad():  # control: a denoiser called under the autocast does compute in bfloat16
        sigma = torch.ones(64)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            reduced = model.flow.generated.denoise(x, sigma)
        assert float((reduced - model.flow.generated.denoise(x, sigma)).abs().max()) > 1e-5  # 10x the tolerance above


def test_noise_draws_come_from_the_passed_generator_alone():
    """Every ``(sigma, eps)`` draw takes the caller's generator: the same seed gives the same drift and the same
    generator loss whatever was drawn in between (global RNG, other generators, the other player), another seed
    another one; the flow holds no generator, and a solve's context hands its generator to ``drift``."""
    from diffflow_core.interfaces import Batch, SamplingContext

    model = small_score_gan()
    flow = model.flow
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    first = flow.sample_drift(x, torch.Generator().manual_seed(3))
    score_player, gen_player = model.objective.players(model)
    batch = Batch(torch.zeros(16, 2))
    loss = gen_player.loss(batch, torch.Generator().manual_seed(4))

    torch.manual_seed(123)
    torch.randn(1000)
    score_player.loss(batch, torch.Generator().manual_seed(7))
    flow.sample_drift(x, torch.Generator().manual_seed(8))
    assert torch.equal(flow.sample_drift(x, torch.Generator().manual_seed(3)), first)
    assert torch.equal(gen_player.loss(batch, torch.Generator().manual_seed(4)), loss)
    assert not torch.equal(flow.sample_drift(x, torch.Generator().manual_seed(5)), first)
    assert not any(isinstance(v, torch.Generator) for v in vars(flow).values())
    context = SamplingContext(torch.Generator().manual_seed(3))
    assert torch.equal(flow.evaluate_drift(x, torch.zeros(()), context), first)


def test_data_score_pre_training_is_the_prepare_phase(capsys):
    """The data score trains in ``prepare`` (before the players exist), under its own progress bar "data score",
    and its time is reported apart from training's as ``prepare_seconds``; a prepared objective does not train it
    again."""
    model = small_score_gan(data_steps=3)
    model.config.train.progress = True
    history = model.fit(steps=1)
    err = capsys.readouterr().err
    assert "data score" in err and model.flow.data_ready
    assert history.prepare_seconds > 0
    trained = [p.clone() for p in model.flow.data_score.parameters()]
    model.objective.prepare(model)
    assert all(torch.equal(a, b) for a, b in zip(trained, model.flow.data_score.parameters()))
