"""Distillation through the generator smoother: a one-step generator ``g(z)`` from any trained teacher flow.

GPM's Claim 1 read both ways (SPEC §2.3): a generator trained by moving its particles ``g(z)`` along a drift through
its NTK (eqs 10-14) is an Int-PM of that drift, so any drift that carries the particles' law toward the teacher's
trains a one-step sampler of the teacher. The teacher is a saved model (``teacher = "runs/x/checkpoint.pt"``,
:meth:`~diffflow_core.model.Model.load`); the distiller only calls its :class:`~diffflow_core.interfaces.Flow` and
:class:`~diffflow_core.interfaces.Solver` contract, so its family does not matter. Two forms, two meanings of
"along the teacher's drift":

* ``form = "regression"`` (any deterministic teacher: score PF-ODE, velocity, NDM ODE, Discriminator Flow, MMD):
  the teacher's sampling drift carries its prior to its samples, so the teacher's solve ``T(x_0)`` from the same
  prior draw is the target. With ``x_0 = s z`` (``s`` the teacher's isotropic Gaussian prior std, read from its
  ``prior_log_prob``, and the generator's latent ``z ~ N(0, I)`` of the data's dimension), each step moves the
  particles by the drift ``v(z) = T(s z) - g(z)`` through the NTK: the loss ``1/2 E||g(z) - T(s z)||^2`` has the
  theta-gradient ``-E[J^T v]`` of the smoother's surrogate (eq 11). The pairs are solved once, in
  :meth:`Distill.prepare`, at the teacher's own solver and step count. Exact and cheap, but a regression of a map
  that splits the prior between modes blurs their boundaries.
* ``form = "score"`` (any teacher with a noise level, :meth:`noise_level`: score families and velocity flows on a
  Gaussian path): the Score GAN's drift (eq 19) with its data score replaced by the teacher's, ``grad h(x) =
  E_{sigma, eps}[sigma (s_teacher - s_rho)(x + sigma eps)]``, a smoothed-KL(rho || teacher) flow: it moves the
  generator's law toward the teacher's law, not each ``z`` toward a fixed target. The teacher's denoiser is the one
  its probability-flow drift implies on EDM's axis (:class:`~diffflow_core.compose.ImpliedDenoiser`: an EDM flow's
  own ``D``; for a rectified flow ``x_t + (1 - t) f(x_t, t)``); ``D_rho`` is learned on generated samples by the
  Score GAN's ``generated-dsm`` between generator steps (:mod:`diffflow_discriminator.score_gan`).
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from diffflow_core.compose import ImpliedDenoiser
from diffflow_core import validation as check
from diffflow_core.errors import ConfigError
from diffflow_core.interfaces import Batch, Flow, Objective, Player, SamplingContext
from diffflow_discriminator.parts import check_betas, require_generator
from diffflow_discriminator.presets import GPM_SCORE_MLP
from diffflow_discriminator.score_gan import GeneratedDSM, ScoreGanFlow

__all__ = ["DistillFlow", "Distill", "gaussian_prior_std"]

FORMS = ("regression", "score")
#: Most teacher solves per chunk when the regression pairs are made (bounds the memory of one solve on any device;
#: on a CPU :func:`~diffflow_core.model.sample_batch` makes image chunks smaller, as for sampling).
_CHUNK = 4096


def gaussian_prior_std(flow: Flow) -> float:
    """The std ``s`` of ``flow``'s prior when it is ``N(0, s^2 I)``, read from :meth:`Flow.prior_log_prob` at the origin
    and on two axes (its normaliser and its curvature must agree); a one-line ConfigError otherwise."""
    shape = tuple(flow.event_shape)
    dim = math.prod(shape)
    probes = torch.zeros(3, dim, dtype=torch.float64)
    probes[1, 0], probes[2, -1] = 1.0, 1.0
    refusal = (f"teacher: form 'regression' pairs the latent z with the prior draw s z, but the prior of "
               f"{type(flow).__name__} is no isotropic zero-mean Gaussian; expected form = 'score'")
    try:
        log_p = flow.prior_log_prob(probes.float().reshape(3, *shape)).double()
    except NotImplementedError:  # a prior without a density (a dataset source)
        raise ConfigError(refusal) from None
    curvature = float(log_p[0] - log_p[1])  # 1 / (2 s^2)
    std = math.sqrt(0.5 / curvature) if curvature > 0 else float("nan")
    normaliser = -0.5 * dim * math.log(2 * math.pi * std ** 2) if math.isfinite(std) else float("nan")
    if not (math.isfinite(std) and math.isclose(float(log_p[0]), normaliser, rel_tol=1e-3, abs_tol=1e-3)
            and math.isclose(float(log_p[2]), float(log_p[1]), rel_tol=1e-4, abs_tol=1e-4)):
        raise ConfigError(refusal)
    return std


class DistillFlow(Flow):
    """``distill``: the flow of a one-step generator distilled from the saved model ``teacher`` (module docstring).

    ``form = "regression"``: the drift is the teacher's own (the flow the generator stands for; sampling is one
    generator pass). ``form = "score"``: the drift is eq 19's with the teacher as data score, held by a
    :class:`~diffflow_discriminator.score_gan.ScoreGanFlow` (``network``, ``sigma_min``, ``sigma_max``, ``rho``,
    ``w_d``, ``w_g``, ``residual`` as there). ``teacher_steps`` (default: the teacher's ``sample.steps``) sets the
    teacher's solve in the regression form. The teacher is frozen.
    """

    def __init__(self, teacher: str | None = None, form: str = "regression", teacher_steps: int | None = None,
                 network: Any = GPM_SCORE_MLP, sigma_min: float = 0.1, sigma_max: float = 10.0, rho: float = 3.0,
                 w_d: float = 1.0, w_g: float = 1.0, residual: bool = False,
                 event_shape: tuple[int, ...] | None = None) -> None:
        super().__init__()
        if not isinstance(teacher, str) or not teacher:
            raise ConfigError(f"teacher: expected the path of a saved model (a checkpoint), got {teacher!r}")
        if form not in FORMS:
            raise ConfigError(f"form: expected one of {', '.join(FORMS)}, got {form!r}")
        teacher_steps = None if teacher_steps is None else check.positive_int("teacher_steps", teacher_steps)
        from diffflow_core.model import load_reference

        model = load_reference(teacher)
        self.teacher = model.flow.requires_grad_(False)
        self.teacher_solver = model.solver
        self.teacher_steps = teacher_steps if teacher_steps is not None else model.config.sample.steps
        self.form = form
        self.event_shape = tuple(self.teacher.event_shape)
        if event_shape is not None and tuple(event_shape) != self.event_shape:
            raise ConfigError(f"teacher: its particles have shape {self.event_shape}, the data's {tuple(event_shape)}; "
                              "expected a teacher trained on this data")
        self.singular_end = self.teacher.singular_end
        if form == "regression" and self.teacher.is_stochastic:
            raise ConfigError(f"form: 'regression' needs a deterministic teacher (its solve is the target), flow "
                              f"{type(self.teacher).__name__} is stochastic; expected form = 'score' or mode = 'ode'")
        self.score_gan = ScoreGanFlow(self.event_shape, network, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho,
                                      w_d=w_d, w_g=w_g, residual=residual,
                                      data_score=ImpliedDenoiser(self.teacher)) if form == "score" else None

    def drift(self, x: Tensor, t: Tensor, context: SamplingContext) -> Tensor:
        """The teacher's drift (regression form) or eq 19's single-draw drift with the teacher's score (score form)."""
        if self.score_gan is not None:
            return self.score_gan.drift(x, t, context)
        return self.teacher.evaluate_drift(x, t, context)

    def time_grid(self, steps: int) -> Tensor:
        return self.teacher.time_grid(steps)

    def prior(self, n: int, generator: torch.Generator | None = None, device: torch.device | str | None = None) -> Tensor:
        return self.teacher.prior(n, generator, device)

    def prior_log_prob(self, x: Tensor) -> Tensor:
        return self.teacher.prior_log_prob(x)

    @property
    def is_stochastic(self) -> bool:
        return self.score_gan is None and self.teacher.is_stochastic

    @torch.no_grad()
    def teacher_pairs(self, n: int, generator: torch.Generator | None, device: torch.device | str) -> tuple[Tensor, Tensor]:
        """``n`` latents ``z ~ N(0, I)`` ``[n, D]`` and the teacher's solves ``T(s z)`` from them (regression form)."""
        std = gaussian_prior_std(self.teacher)
        dim = math.prod(self.event_shape)
        z = torch.randn(n, dim, generator=generator).to(device)
        times = self.teacher.time_grid(self.teacher_steps).to(device)
        from diffflow_core.model import sample_batch

        chunk_size = min(_CHUNK, sample_batch(n, self.event_shape, device))
        targets = [self.teacher_solver.solve(self.teacher, (std * chunk).reshape(-1, *self.event_shape), times,
                                             context=SamplingContext(generator)).x
                   for chunk in z.split(chunk_size)]
        return z, torch.cat(targets)


class Distill(Objective):
    """``distill``: trains the generator smoother's ``g`` from the ``distill`` flow's teacher (module docstring).

    Regression form: one ``generator`` player on ``1/2 E||g(z) - T(s z)||^2`` over ``pairs`` teacher solves made in
    :meth:`prepare`. Score form: the Score GAN's players (``generated-dsm``: ``score_steps``, ``weighting``,
    ``updates``, ``lr`` for ``D_rho``) with the teacher as data score. ``generator_lr``/``betas`` set the generator's
    optimiser in both.
    """

    def __init__(self, flow: DistillFlow, pairs: int = 16384, score_steps: int = 10, lr: float | None = None,
                 generator_lr: float | None = None, betas=(0.5, 0.999), score_betas=(0.9, 0.999),
                 weighting: str = "edm", updates: str = "alternating") -> None:
        if not isinstance(flow, DistillFlow):
            raise ConfigError(f"flow: objective 'distill' needs the 'distill' flow, got {type(flow).__name__}")
        pairs = check.positive_int("pairs", pairs, expected="a positive number of teacher solves")
        self.flow, self.pairs = flow, pairs
        self.generator_lr, self.betas = generator_lr, check_betas("betas", betas)
        self.score = GeneratedDSM(flow.score_gan, score_steps=score_steps, lr=lr, generator_lr=generator_lr,
                                  betas=betas, score_betas=score_betas, weighting=weighting,
                                  updates=updates) if flow.form == "score" else None
        self.latents: Tensor | None = None
        self.targets: Tensor | None = None

    def prepare(self, model) -> None:
        """Refuse a smoother that is not a generator; regression form: check that the generator's latent is the
        data's dimension and solve the teacher from ``pairs`` prior draws (seeded by ``train.seed``), once."""
        smoother = require_generator(model.smoother, "distill")
        if self.score is not None:
            return self.score.prepare(model)
        dim = math.prod(self.flow.event_shape)
        if smoother.latent_dim != dim:
            raise ConfigError(f"smoother.latent_dim: form 'regression' feeds the teacher's prior draw s z to the "
                              f"generator, so expected latent_dim = {dim} (the data's dimension), got "
                              f"{smoother.latent_dim}")
        if self.latents is None:
            seed = model.config.train.seed if model.config is not None else 0
            self.latents, self.targets = self.flow.teacher_pairs(self.pairs, torch.Generator().manual_seed(seed),
                                                                 model.device)

    def regression_loss(self, smoother, batch: Batch, generator: torch.Generator | None) -> Tensor:
        """``1/2 E||g(z) - T(s z)||^2`` on a batch of the pairs drawn with ``generator``: its gradient is the
        surrogate's ``-E[J^T v]`` for ``v = T(s z) - g(z)`` (eq 11)."""
        index = torch.randint(len(self.latents), (len(batch),), generator=generator)
        index = index.to(self.latents.device)
        x = smoother(self.latents[index])
        return 0.5 * (x - self.targets[index]).flatten(1).pow(2).sum(1).mean()

    def players(self, model) -> list[Player]:
        smoother = require_generator(model.smoother, "distill")
        if self.score is not None:
            return self.score.players(model)
        if self.latents is None:
            raise RuntimeError("distill: the teacher pairs are not made yet; run objective.prepare(model) before "
                               "players(model) (Model.fit does)")
        return [Player("generator", [p for p in smoother.parameters() if p.requires_grad],
                       lambda batch, gen: self.regression_loss(smoother, batch, gen), lr=self.generator_lr,
                       betas=self.betas)]

    def unaveraged(self, model) -> list[nn.Parameter]:
        return self.score.unaveraged(model) if self.score is not None else []
