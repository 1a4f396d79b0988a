"""Objective ``gan``: the discriminator of eq 15 against generator samples (GAN) or simulated particles
(Discriminator Flow, Algorithm 3; DiffFlow's GAN rows, SPEC §1.6, when the flow smooths the data), and the
generator as the Int-PM of SPEC §2.3.

The players depend on the model's smoother:

* ``generator`` smoother (a GAN): the discriminator sees ``g(z)``; the generator's loss *is* the smoother's
  surrogate ``-E<stopgrad(v(g(z))), g(z)>`` with ``v`` the discriminator drift, so its gradient is
  ``-E[J^T v]`` (eq 11) and an SGD step moves the particles by ``lr * A[v]`` (eq 13) (optionally the
  particles the discriminator step just saw, reusing their generator pass). With ``updates="simultaneous"``
  both players step from one pass: the drift at the particles is read off the discriminator loss's own
  backward (:meth:`GanObjective.joint_loss`);
* ``identity`` smoother (a Discriminator Flow): each step simulates the current flow from ``N(0, I)``, draws
  ``k ~ U{0..N-1}`` per sample and trains on data versus ``z_k`` at ``t = k/N`` (+ gradient penalty).
"""
from __future__ import annotations

import torch
from torch import Tensor

from diffflow_core.errors import ConfigError
from diffflow_core.interfaces import Batch, Objective, Player
from diffflow_core.smoothers import GeneratorSmoother, IdentitySmoother
from diffflow_core.tensors import draw_device
from diffflow_discriminator.flow import DiscriminatorFlow
from diffflow_discriminator.losses import gradient_penalty, r1_penalty

__all__ = ["GanObjective"]


def _check_betas(field: str, betas) -> tuple[float, float]:
    betas = tuple(betas)
    if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
        raise ConfigError(f"{field}: expected two Adam betas in [0, 1), got {betas!r}")
    return betas


class GanObjective(Objective):
    """Discriminator loss ``E[b(f(fake))] - E[a(f(real))] + gp_weight * GP (+ R1)`` and, for a GAN, the generator.

    ``d_steps`` discriminator steps per iteration; ``gp_weight`` and ``gp_center`` (c0) set the gradient
    penalty on interpolates; ``r1_weight`` (gamma) adds ``gamma / 2 * E||grad_x f(data)||^2``, a penalty on
    the data points only (R1); ``flow_steps`` is N, the number of simulation steps of a Discriminator Flow;
    ``lr``/``betas`` and ``generator_lr``/``generator_betas`` the players' Adam settings (GPM: 2e-4, (0.5, 0.999)). With
    ``reuse_particles`` the generator step moves the particles of the discriminator step (one generator pass
    fewer per iteration) instead of fresh ones; off by default: on ring5 it trained worse
    (docs/benchmarks/discriminator.md). ``updates`` is ``"alternating"`` (GPM's loop: the generator follows
    the discriminator just updated) or ``"simultaneous"`` (both follow the current one, from one pass; the
    last of ``d_steps`` discriminator steps is the shared one).
    """

    def __init__(self, flow: DiscriminatorFlow, d_steps: int = 1, gp_weight: float = 0.0, gp_center: float = 0.0,
                 flow_steps: int = 56, lr: float | None = None, betas=(0.5, 0.999), generator_lr: float | None = None,
                 generator_betas=(0.5, 0.999), reuse_particles: bool = False,
                 updates: str = "alternating", r1_weight: float = 0.0) -> None:
        if not hasattr(flow, "logit") or not hasattr(flow, "loss"):
            raise ConfigError(f"flow: objective 'gan' needs a discriminator flow (with logit and loss), "
                              f"got {type(flow).__name__}")
        for field, value in (("d_steps", d_steps), ("flow_steps", flow_steps)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{field}: expected a positive integer, got {value!r}")
        for field, value in (("gp_weight", gp_weight), ("r1_weight", r1_weight)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ConfigError(f"{field}: expected a number >= 0, got {value!r}")
        self.flow, self.d_steps, self.flow_steps = flow, d_steps, flow_steps
        self.gp_weight, self.gp_center, self.r1_weight = float(gp_weight), float(gp_center), float(r1_weight)
        if updates not in ("alternating", "simultaneous"):
            raise ConfigError(f"updates: expected 'alternating' or 'simultaneous', got {updates!r}")
        if updates == "simultaneous" and reuse_particles:
            raise ConfigError("reuse_particles: simultaneous updates always share the particles; "
                              "set reuse_particles = false or updates = 'alternating'")
        self.reuse_particles, self.updates = bool(reuse_particles), updates
        self.lr, self.betas = lr, _check_betas("betas", betas)
        self.generator_lr, self.generator_betas = generator_lr, _check_betas("generator_betas", generator_betas)

    # -- losses --------------------------------------------------------------------------------------
    def discriminator_loss(self, real: Tensor, fake: Tensor, t: Tensor | None,
                           generator: torch.Generator | None) -> Tensor:
        """Negated eq 15 plus the gradient penalties, with real and fake evaluated at the same times ``t``."""
        return self._discriminator_loss(real, fake.detach(), t, generator)[0]

    def _discriminator_loss(self, real: Tensor, fake: Tensor, t: Tensor | None,
                            generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """:meth:`discriminator_loss` keeping ``fake``'s graph (the penalty never sees it), and the generated
        points' logits (detached)."""
        flow = self.flow
        if self.r1_weight:
            real = real.detach().requires_grad_(True)
        real_logits, logits = flow.logit(torch.cat([real, fake]), None if t is None else torch.cat([t, t])) \
            .split(real.shape[0])
        loss = flow.loss.discriminator_loss(real_logits, logits)
        if self.gp_weight:
            loss = loss + self.gp_weight * gradient_penalty(flow.logit, real, fake, t, generator, self.gp_center)
        if self.r1_weight:
            loss = loss + self.r1_weight / 2 * r1_penalty(real_logits, real)
        return loss, logits.detach()

    def joint_loss(self, smoother: GeneratorSmoother, batch: Batch, generator: torch.Generator | None) -> Tensor:
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
        loss, fake_logits = self._discriminator_loss(batch.x, x, None, generator)
        flow, t0 = self.flow, torch.zeros((), device=x.device)

        def to_drift(grad: Tensor) -> Tensor:
            db, dh = flow.loss.slopes(fake_logits)
            if bool(((db == 0) & (dh != 0)).any()):
                return -flow.drift(x.detach(), t0) / x.shape[0]
            ratio = torch.where(db == 0, torch.zeros_like(dh), dh / db)
            return -flow.eta * ratio.reshape(-1, *([1] * (grad.ndim - 1))) * grad

        x.register_hook(to_drift)
        return loss

    def simulated_particles(self, n: int, generator: torch.Generator | None, device) -> tuple[Tensor, Tensor]:
        """Algorithm 3 steps 2-3: ``z_k`` and ``t = k/N`` with ``k ~ U{0..N-1}`` per particle."""
        horizon = max(1, round(self.flow.gan_horizon * self.flow_steps))
        k = torch.randint(0, horizon, (n,), generator=generator, device=draw_device(generator, device)).to(device)
        x0 = self.flow.prior(n, generator=generator, device=device)
        return self.flow.simulate(x0, k, self.flow_steps, generator), k.to(x0.dtype) / self.flow_steps

    def flow_loss(self, batch: Batch, generator: torch.Generator | None) -> Tensor:
        """Algorithm 3: data versus simulated particles at the same per-sample time."""
        fake, t = self.simulated_particles(len(batch), generator, batch.x.device)
        return self.discriminator_loss(self.flow.smooth(batch.x, t, generator), fake, t, generator)

    # -- players -------------------------------------------------------------------------------------
    def unaveraged(self, model) -> list[torch.nn.Parameter]:
        """A GAN samples with its generator alone: no EMA of the discriminator (a Discriminator Flow's
        discriminator *is* its sampler and is averaged)."""
        return list(self.flow.net.parameters()) if isinstance(model.smoother, GeneratorSmoother) else []

    def players(self, model) -> list[Player]:
        smoother, flow = model.smoother, self.flow
        d_params = [p for p in flow.net.parameters() if p.requires_grad]
        if isinstance(smoother, GeneratorSmoother):
            if flow.time_conditioned:
                raise ConfigError("flow.time_conditioned: a GAN's discriminator has no time input; "
                                  "set time_conditioned = false (or use the identity smoother for a Discriminator Flow)")
            t0 = torch.zeros(())
            particles: dict[str, tuple[Tensor, Tensor]] = {}

            def d_loss(batch: Batch, generator):
                z = smoother.sample_latent(len(batch), generator)
                if self.reuse_particles:  # graph kept: the generator step moves these particles
                    particles["last"] = (z, smoother(z))
                    return self.discriminator_loss(batch.x, particles["last"][1], None, generator)
                with torch.no_grad():
                    fake = smoother(z)
                return self.discriminator_loss(batch.x, fake, None, generator)

            def g_loss(batch: Batch, generator):
                # With reuse_particles: the particles g(z) the discriminator just saw (the generator has not
                # moved since), no second generator pass; the drift uses the updated discriminator either way.
                z, x = particles.pop("last", (None, None))
                if z is None:
                    z = smoother.sample_latent(len(batch), generator)
                return smoother.surrogate_loss(flow, z, t0, x)

            g_params = [p for p in smoother.parameters() if p.requires_grad]
            if self.updates == "simultaneous":
                joint = Player("discriminator", d_params + g_params,
                               lambda batch, generator: self.joint_loss(smoother, batch, generator),
                               groups=({"params": d_params, "lr": self.lr, "betas": self.betas},
                                       {"params": g_params, "lr": self.generator_lr, "betas": self.generator_betas}))
                d_only = Player("discriminator", d_params, d_loss, lr=self.lr, betas=self.betas,
                                repeats=self.d_steps - 1)
                return [d_only, joint] if self.d_steps > 1 else [joint]
            return [Player("discriminator", d_params, d_loss, lr=self.lr, betas=self.betas, repeats=self.d_steps),
                    Player("generator", g_params, g_loss, lr=self.generator_lr, betas=self.generator_betas)]
        if self.updates == "simultaneous":
            raise ConfigError(f"updates: 'simultaneous' needs the generator smoother (a GAN), "
                              f"got {type(smoother).__name__}")
        if isinstance(smoother, IdentitySmoother):
            if not flow.time_conditioned:
                raise ConfigError("flow.time_conditioned: a Discriminator Flow needs a time-conditioned discriminator")
            players = [Player("discriminator", d_params, self.flow_loss, lr=self.lr, betas=self.betas,
                              repeats=self.d_steps)]
            score = getattr(flow, "score_model", None)
            if score is not None:  # Diffusion-GAN / TDPM: the score network trains jointly on the data
                from diffflow_core.plugins import registry

                dsm = registry("objectives").create("dsm-edm")
                players.append(Player("score", [p for p in score.parameters() if p.requires_grad],
                                      lambda batch, generator: dsm.loss(score, batch, generator), lr=self.lr))
            return players
        raise ConfigError(f"smoother: objective 'gan' works with 'generator' (GAN) or 'identity' "
                          f"(Discriminator Flow), got {type(smoother).__name__}")
