"""The two discriminator objectives: ``gan`` (GPM Algorithms 1-2) and ``discriminator-flow`` (GPM Algorithm 3).

Both train the discriminator of eq 15 with the one :class:`~diffflow_discriminator.losses.DiscriminatorLoss`;
they differ in where the points it separates from the data come from, and so in the smoother they need:

* ``gan``: generated points ``g(z)`` of the ``generator`` smoother (SPEC §2.3), and a second player, the
  generator, whose loss *is* the smoother's surrogate ``-E<stopgrad(v(g(z))), g(z)>`` with ``v`` the
  discriminator drift: its gradient is ``-E[J^T v]`` (eq 11), so an SGD step moves the particles by
  ``lr * A[v]`` (eq 13);
* ``discriminator-flow``: free particles (``identity`` smoother) simulated from ``N(0, I)`` by the current flow,
  ``z_k`` at ``t = k/N`` with ``k ~ U{0..N-1}`` per particle (eq 20); the discriminator is the sampler. A flow
  with a score network (DiffFlow's Diffusion-GAN and TDPM rows, SPEC §1.4) adds a ``score`` player (``dsm-edm``).

Each refuses a smoother it cannot train with (by capability, :mod:`diffflow_discriminator.parts`) when the
trainer asks for its players, before any training step.
"""
from __future__ import annotations

from functools import partial

import torch
from torch import Tensor

from diffflow_core import validation as check
from diffflow_core.errors import ConfigError
from diffflow_core.interfaces import Batch, Objective, Player
from diffflow_core.tensors import draw_device
from diffflow_discriminator.flow import DiscriminatorFlow
from diffflow_discriminator.losses import DiscriminatorLoss
from diffflow_discriminator.parts import (Handoff, check_betas, require_discriminator,
                                          require_free_particles, require_generator)

__all__ = ["GanObjective", "DiscriminatorFlowObjective"]


class GanObjective(Objective):
    """Objective ``gan``: ``d_steps`` discriminator steps, then one generator step through the generator smoother.

    ``gp_weight``/``gp_center``/``r1_weight`` set the discriminator's penalties (:class:`DiscriminatorLoss`);
    ``lr``/``betas`` and ``generator_lr``/``generator_betas`` the players' Adam settings (GPM: 2e-4,
    (0.5, 0.999)). With ``reuse_particles`` the generator step moves the particles of the discriminator step (one
    generator pass fewer per iteration) instead of fresh ones; off by default: on ring5 it trained worse
    (docs/benchmarks/discriminator.md). ``updates`` is ``"alternating"`` (GPM's loop: the generator follows the
    discriminator just updated) or ``"simultaneous"`` (both follow the current one, from one pass; the last of
    ``d_steps`` discriminator steps is the shared one). The discriminator has no time input.

    ``flow_steps`` (the simulation steps of a Discriminator Flow) is refused with a pointer to
    ``discriminator-flow``: configs written when ``gan`` also trained Discriminator Flows name it.
    """

    def __init__(self, flow: DiscriminatorFlow, d_steps: int = 1, gp_weight: float = 0.0, gp_center: float = 0.0,
                 r1_weight: float = 0.0, lr: float | None = None, betas=(0.5, 0.999),
                 generator_lr: float | None = None, generator_betas=(0.5, 0.999), reuse_particles: bool = False,
                 updates: str = "alternating", flow_steps: int | None = None) -> None:
        if flow_steps is not None:
            raise ConfigError(f"flow_steps: objective 'gan' simulates no particles (got flow_steps={flow_steps!r}); "
                              "a Discriminator Flow (GPM Algorithm 3) is objective 'discriminator-flow'")
        require_discriminator(flow, "gan")
        if flow.time_conditioned:
            raise ConfigError("flow.time_conditioned: a GAN's discriminator has no time input; set "
                              "time_conditioned = false (or use objective 'discriminator-flow')")
        if updates not in ("alternating", "simultaneous"):
            raise ConfigError(f"updates: expected 'alternating' or 'simultaneous', got {updates!r}")
        if updates == "simultaneous" and reuse_particles:
            raise ConfigError("reuse_particles: simultaneous updates always share the particles; "
                              "set reuse_particles = false or updates = 'alternating'")
        self.flow, self.d_steps = flow, check.positive_int("d_steps", d_steps)
        self.critic = DiscriminatorLoss(gp_weight, gp_center, r1_weight)
        self.reuse_particles, self.updates = bool(reuse_particles), updates
        self.lr, self.betas = lr, check_betas("betas", betas)
        self.generator_lr, self.generator_betas = generator_lr, check_betas("generator_betas", generator_betas)

    # -- losses --------------------------------------------------------------------------------------
    def discriminator_loss(self, real: Tensor, fake: Tensor, generator: torch.Generator | None) -> Tensor:
        """Eq 15 negated plus the penalties, ``fake`` detached."""
        return self.critic(self.flow, real, fake, None, generator)

    def discriminator_step(self, smoother, handoff: Handoff | None, batch: Batch,
                           generator: torch.Generator | None) -> Tensor:
        """The discriminator's loss against ``g(z)``; with a ``handoff`` (``reuse_particles``) ``(z, g(z))`` is
        left, with its graph, for the generator step."""
        z = smoother.sample_latent(len(batch), generator)
        with torch.set_grad_enabled(handoff is not None):
            fake = smoother(z)
        if handoff is not None:
            handoff.put(z, fake)
        return self.discriminator_loss(batch.x, fake, generator)

    def generator_step(self, smoother, handoff: Handoff | None, batch: Batch,
                       generator: torch.Generator | None) -> Tensor:
        """The smoother's surrogate ``-E<stopgrad(v(g(z))), g(z)>`` (eq 11) with the drift of the discriminator
        just updated, at the particles the handoff holds (no second generator pass) or at fresh ones."""
        draw = handoff.take() if handoff is not None else None
        z, x = draw if draw is not None else (smoother.sample_latent(len(batch), generator), None)
        return smoother.surrogate_loss(self.flow, z, torch.zeros(()), x)

    def joint_loss(self, smoother, batch: Batch, generator: torch.Generator | None) -> Tensor:
        """One loss whose backward gives both players' gradients from a single pass (simultaneous updates).

        Its value is the discriminator loss at ``x = g(z)`` with ``x``'s graph kept, so the discriminator's
        weights get their usual gradient. At ``x`` that backward carries ``b'(f) grad_x f / B``; the drift is
        ``v = eta h'(f) grad_x f`` (eq 16), so a hook on ``x`` rescales it per sample by ``-eta h'(f) / b'(f)``
        into ``-v / B`` before it enters the generator, whose gradient is then the smoother's ``-E[J^T v]``
        (eq 11) without a separate drift pass. Where ``b'(f)`` vanishes or underflows while ``h'(f)`` does not
        (a hinge loss beyond its margin, an extreme logit) the hook computes the drift exactly instead.
        """
        z = smoother.sample_latent(len(batch), generator)
        x = smoother(z)
        loss, fake_logits = self.critic.with_logits(self.flow, batch.x, x, None, generator)
        flow, t0 = self.flow, torch.zeros((), device=x.device)

        def to_drift(grad: Tensor) -> Tensor:
            db, dh = flow.loss.slopes(fake_logits)
            if bool(((db == 0) & (dh != 0)).any()):
                return -flow.evaluate_drift(x.detach(), t0) / x.shape[0]
            ratio = torch.where(db == 0, torch.zeros_like(dh), dh / db)
            return -flow.eta * ratio.reshape(-1, *([1] * (grad.ndim - 1))) * grad

        x.register_hook(to_drift)
        return loss

    # -- players -------------------------------------------------------------------------------------
    def unaveraged(self, model) -> list[torch.nn.Parameter]:
        """A GAN samples with its generator alone: no EMA of the discriminator."""
        return list(self.flow.net.parameters())

    def players(self, model) -> list[Player]:
        """``discriminator`` (``d_steps`` times) then ``generator``; with simultaneous updates one joint player
        (two Adam groups) after ``d_steps - 1`` discriminator-only steps."""
        smoother = require_generator(model.smoother, "gan")
        d_params = [p for p in self.flow.net.parameters() if p.requires_grad]
        g_params = [p for p in smoother.parameters() if p.requires_grad]
        if self.updates == "simultaneous":
            joint = Player("discriminator", d_params + g_params, partial(self.joint_loss, smoother),
                           groups=({"params": d_params, "lr": self.lr, "betas": self.betas},
                                   {"params": g_params, "lr": self.generator_lr, "betas": self.generator_betas}))
            if self.d_steps == 1:
                return [joint]
            return [Player("discriminator", d_params, partial(self.discriminator_step, smoother, None), lr=self.lr,
                           betas=self.betas, repeats=self.d_steps - 1), joint]
        handoff = Handoff() if self.reuse_particles else None
        return [Player("discriminator", d_params, partial(self.discriminator_step, smoother, handoff), lr=self.lr,
                       betas=self.betas, repeats=self.d_steps),
                Player("generator", g_params, partial(self.generator_step, smoother, handoff), lr=self.generator_lr,
                       betas=self.generator_betas)]


class DiscriminatorFlowObjective(Objective):
    """Objective ``discriminator-flow`` (GPM Algorithm 3): data versus simulated particles at the same times.

    ``flow_steps`` is N, the simulation steps of the flow on ``[0, 1]``; ``d_steps`` discriminator steps per
    iteration; ``gp_weight``/``gp_center``/``r1_weight`` the penalties (:class:`DiscriminatorLoss`; GPM's
    Discriminator Flows use ``c0 = 0``); ``lr``/``betas`` the Adam settings of the discriminator and of the
    ``score`` player a flow with a score network adds. The discriminator is time-conditioned, and averaged by
    the trainer's EMA: it is the sampler.

    ``particles`` says how the batch's ``(z_k, k)`` are drawn. ``"independent"`` is GPM's: one particle per
    sample with its own ``k ~ U{0..N-1}``, simulated to ``z_k`` (about ``B N / 2`` particle-steps per batch of
    ``B``). ``"trajectories"`` simulates ``ceil(B / N)`` particles through all ``N`` steps and pairs every state
    ``z_k`` with its ``t = k/N`` (a random ``B`` of them when ``N`` does not divide ``B``): each time gets
    ``B / N`` independent particles of the same law ``z_k``, as GPM's gets in expectation, so the objective (eq
    20) is the same, estimated with ``k`` stratified, for ``B`` particle-steps; states at different times of
    one batch are correlated. (With a ``gan_horizon`` below 1, TDPM's, ``N`` counts the steps below it.)
    """

    PARTICLES = ("independent", "trajectories")

    def __init__(self, flow: DiscriminatorFlow, flow_steps: int = 56, d_steps: int = 1, gp_weight: float = 0.0,
                 gp_center: float = 0.0, r1_weight: float = 0.0, lr: float | None = None,
                 betas=(0.5, 0.999), particles: str = "independent") -> None:
        require_discriminator(flow, "discriminator-flow")
        if not flow.time_conditioned:
            raise ConfigError("flow.time_conditioned: a Discriminator Flow needs a time-conditioned discriminator; "
                              "set time_conditioned = true (or use objective 'gan' with the generator smoother)")
        if particles not in self.PARTICLES:
            raise ConfigError(f"particles: expected one of {', '.join(map(repr, self.PARTICLES))}, got {particles!r}")
        self.flow, self.particles = flow, particles
        self.flow_steps = check.positive_int("flow_steps", flow_steps)
        self.d_steps = check.positive_int("d_steps", d_steps)
        self.critic = DiscriminatorLoss(gp_weight, gp_center, r1_weight)
        self.lr, self.betas = lr, check_betas("betas", betas)
        self.score_objective = None
        if getattr(flow, "score_model", None) is not None:  # Diffusion-GAN / TDPM: the score trains on the data
            from diffflow_core.plugins import registry

            self.score_objective = registry("objectives").create("dsm-edm")

    def simulated_particles(self, n: int, generator: torch.Generator | None, device) -> tuple[Tensor, Tensor]:
        """Algorithm 3 steps 2-3: ``n`` particles ``z_k`` with their ``t = k/N``, ``k`` below the flow's
        ``gan_horizon`` (TDPM's GAN phase ends early), drawn as ``particles`` says."""
        horizon = max(1, round(self.flow.gan_horizon * self.flow_steps))
        if self.particles == "trajectories":
            x0 = self.flow.prior(-(-n // horizon), generator=generator, device=device)
            states = self.flow.trajectories(x0, horizon, self.flow_steps, generator)
            k = torch.arange(horizon, device=device).repeat_interleave(x0.shape[0])
            keep = torch.randperm(k.numel(), generator=generator, device=draw_device(generator, device))[:n].to(device)
            return states.flatten(0, 1)[keep], k[keep].to(x0.dtype) / self.flow_steps
        k = torch.randint(0, horizon, (n,), generator=generator, device=draw_device(generator, device)).to(device)
        x0 = self.flow.prior(n, generator=generator, device=device)
        return self.flow.simulate(x0, k, self.flow_steps, generator), k.to(x0.dtype) / self.flow_steps

    def discriminator_step(self, batch: Batch, generator: torch.Generator | None) -> Tensor:
        """Algorithm 3 step 4: data (smoothed by ``sigma(t)`` for DiffFlow's rows, SPEC §1.6) versus ``z_k``."""
        fake, t = self.simulated_particles(len(batch), generator, batch.x.device)
        return self.critic(self.flow, self.flow.smooth(batch.x, t, generator), fake, t, generator)

    def players(self, model) -> list[Player]:
        """``discriminator`` (``d_steps`` times), and ``score`` when the flow has a score network."""
        require_free_particles(model.smoother, "discriminator-flow")
        players = [Player("discriminator", [p for p in self.flow.net.parameters() if p.requires_grad],
                          self.discriminator_step, lr=self.lr, betas=self.betas, repeats=self.d_steps)]
        if self.score_objective is not None:
            score = self.flow.score_model
            players.append(Player("score", [p for p in score.parameters() if p.requires_grad],
                                  partial(self.score_objective.loss, score), lr=self.lr))
        return players
