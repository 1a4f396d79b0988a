"""Discriminator guidance (Kim et al. 2023, "Refining Generative Process with Discriminator Guidance in Score-based
Diffusion Models") for any flow on a Gaussian noise path, written in the drift algebra (:mod:`diffflow_core.compose`).

A saved model (``base = "runs/x/checkpoint.pt"``: a score, velocity or other flow that declares a noise level and
is sampled by its solver) samples a law ``p`` whose noised marginals ``p_sigma`` miss the data's ``q_sigma``. A
noise-conditioned discriminator ``d(x, sigma)`` trained with the logistic loss on data ``y + sigma eps`` against the
base's samples ``x + sigma eps`` has the optimum ``d = log q_sigma - log p_sigma`` (SPEC §2.4, the density-ratio
logit), so ``s_p + grad d`` is the data's score. On EDM's axis (time = sigma, ``alpha = 1``) the probability-flow
ODE of a score ``s`` is ``dx/dsigma = -sigma s(x; sigma)`` (SPEC §2.2 eq 8), so the correction is the drift

    c(x, sigma) = -sigma grad_x d(x, sigma)                                                            (G1)

a flow that declares EDM's noise level; the guided sampler is the composition ``v_base + w c`` with ``c`` mapped onto
the base's clock by (C1) (``time = "noise"``) as an added drift, ``c tau' / a`` (the frame's motion ``-a' x / a`` is
the base's own): an EDM base reads it as it is, a rectified flow or a VP score flow through its ``alpha``,
``sigma``. ``w = 1`` is the exact correction at the optimum; ``w`` may be a schedule.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from diffflow_core import validation as check
from diffflow_core.compose import ComposedFlow, NoiseLevel, noise_level_of
from diffflow_core.errors import ConfigError
from diffflow_core.interfaces import Batch, Flow, Objective, Player, SamplingContext, as_time
from diffflow_core.tensors import draw_noise, per_sample
from diffflow_discriminator.flow import DEFAULT_NETWORK, logit_gradient
from diffflow_discriminator.parts import check_betas

__all__ = ["GuidanceCorrection", "DiscriminatorGuidanceFlow", "DiscriminatorGuidance"]

#: EDM's convention: time is sigma, no scaling.
EDM_AXIS = NoiseLevel(alpha=torch.ones_like, sigma=lambda t: t, time_of=lambda sigma: sigma)
#: Base samples solved per chunk when the fake pool is made (bounds the memory of one solve).
_CHUNK = 4096


class GuidanceCorrection(Flow):
    """(G1) ``c(x, sigma) = -sigma grad_x d(x, sigma)`` on EDM's axis, ``d`` a noise-conditioned discriminator.

    The network sees ``ln(sigma) / 4`` (EDM's noise input, a well-scaled time for a Fourier embedding); at
    ``sigma = 0`` the correction is 0 and the network is not evaluated there.
    """

    stochastic = False

    def __init__(self, network: Any = DEFAULT_NETWORK, event_shape: tuple[int, ...] = (2,)) -> None:
        super().__init__()
        self.event_shape = tuple(event_shape)
        from diffflow_core.networks import build_network

        self.net = build_network(network, in_shape=self.event_shape, out_shape=(1,), time_conditioned=True)

    def logit(self, x: Tensor, sigma: Tensor) -> Tensor:
        """``d(x, sigma)`` ``[N]`` for noise levels ``sigma`` ``[N]`` (positive)."""
        return self.net(x, sigma.log() / 4).reshape(x.shape[0])

    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        sigma = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[0])
        live = sigma > 0
        out = torch.zeros_like(x)
        if bool(live.any()):
            grad = logit_gradient(lambda y: self.logit(y, sigma[live]), x[live], lambda f: f)
            out[live] = -per_sample(sigma[live], grad) * grad
        return out

    def noise_level(self) -> NoiseLevel:
        return EDM_AXIS

    def time_grid(self, steps: int) -> Tensor:
        raise ConfigError("flow: a guidance correction only adds drift to a base flow; sample the "
                          "'discriminator-guidance' flow (or a 'compose' with a base term first)")


class DiscriminatorGuidanceFlow(ComposedFlow):
    """``discriminator-guidance``: ``v_base + w c`` (module docstring), the composition of the saved ``base`` and a
    :class:`GuidanceCorrection` mapped onto its clock by noise level.

    ``weight`` is the guidance weight ``w`` (a number or a linear schedule, as in ``compose``); ``network`` the
    discriminator's spec (time-conditioned, scalar output). The base is frozen; its solver and sampling steps make the
    discriminator's fakes (:meth:`base_samples`). The sampling option ``guidance`` (``--guidance w``) replaces the
    weight by a constant for one sampling run, so one trained discriminator serves a sweep of weights.
    """

    sampling_options = ("guidance",)

    def __init__(self, base: str | None = None, weight: Any = 1.0, network: Any = DEFAULT_NETWORK,
                 event_shape: tuple[int, ...] | None = None, data: Any = None, num_classes: int | None = None) -> None:
        if not isinstance(base, str) or not base:
            raise ConfigError(f"base: expected the path of the saved model to guide (a checkpoint), got {base!r}")
        from diffflow_core.model import load_reference

        model = load_reference(base)
        if not model.smoother.integrates_flow:
            raise ConfigError(f"base: {base!r} samples through its {type(model.smoother).__name__} smoother, not by "
                              "solving its flow; expected a model sampled by its solver (a score, velocity or NDM "
                              "flow)")
        if noise_level_of(model.flow) is None:
            raise ConfigError(f"base: flow {type(model.flow).__name__} of {base!r} declares no noise level, so the "
                              "noised laws a guidance discriminator compares are undefined; expected a flow on a "
                              "Gaussian noise path")
        flow = model.flow.requires_grad_(False)
        shape = tuple(flow.event_shape)
        if event_shape is not None and tuple(event_shape) != shape:
            raise ConfigError(f"base: its particles have shape {shape}, the data's {tuple(event_shape)}; expected a "
                              "model trained on this data")
        correction = GuidanceCorrection(network, shape)
        super().__init__([{"flow": flow, "weight": 1.0}, {"flow": correction, "weight": weight, "time": "noise"}],
                         event_shape=shape, data=data, num_classes=num_classes)
        self.base_solver, self.base_steps = model.solver, model.config.sample.steps

    def check_sampling_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        options = super().check_sampling_options(options)
        if "guidance" in options:
            options["guidance"] = check.finite("guidance", options["guidance"], expected="a finite guidance weight")
        return options

    def drift(self, x: Tensor, t: Tensor, context: SamplingContext) -> Tensor:
        """``v_base + w c`` with ``w`` the sampling option ``guidance`` when given, else the configured weight. Where
        the base's noise level is infinite (a rectified flow's ``t = 0``) both noised laws are the same Gaussian, ``d``
        is constant and the correction is 0: it is not evaluated there, nor where ``w = 0``."""
        s = as_time(t, x)
        guidance = context.options.get("guidance")
        weight = self.weights[1](s) if guidance is None else torch.full_like(s, guidance)
        out = self.term_drift(0, x, s, context)
        live = (weight != 0) & torch.isfinite(noise_level_of(self.terms[0]).sigma(s))
        if bool(live.any()):
            correction = self.term_drift(1, x[live], s[live], context, affine=False)
            out[live] += per_sample(weight[live], correction) * correction
        return out

    @property
    def correction(self) -> GuidanceCorrection:
        return self.terms[1]

    def noise_range(self) -> tuple[float, float]:
        """The positive noise levels the base's sampling grid visits, ``(lowest, highest)``."""
        base = self.terms[0]
        sigma = noise_level_of(base).sigma(base.time_grid(self.base_steps).double())
        sigma = sigma[sigma > 0]
        return float(sigma.min()), float(sigma.max())

    @torch.no_grad()
    def base_samples(self, n: int, generator: torch.Generator | None, device: torch.device | str) -> Tensor:
        """``n`` samples of the base at its own solver and step count: the discriminator's fakes."""
        base = self.terms[0]
        times = base.time_grid(self.base_steps).to(device)
        chunks = [self.base_solver.solve(base, base.prior(m, generator, device), times,
                                         context=SamplingContext(generator)).x
                  for m in [_CHUNK] * (n // _CHUNK) + ([n % _CHUNK] if n % _CHUNK else [])]
        return torch.cat(chunks)


class DiscriminatorGuidance(Objective):
    """``discriminator-guidance``: the logistic loss of ``d(x, sigma)`` on data ``y + sigma eps`` (label 1) against
    ``samples`` base samples ``x + sigma eps`` (label 0), made once in :meth:`prepare`; ``sigma`` log-uniform on
    the noise levels the base's sampler visits. At the optimum ``d = log q_sigma - log p_sigma`` (module docstring).
    """

    def __init__(self, flow: DiscriminatorGuidanceFlow, samples: int = 16384, lr: float | None = None,
                 betas=(0.9, 0.999)) -> None:
        if not isinstance(flow, DiscriminatorGuidanceFlow):
            raise ConfigError(f"flow: objective 'discriminator-guidance' needs the 'discriminator-guidance' flow, got "
                              f"{type(flow).__name__}")
        self.flow = flow
        self.samples = check.positive_int("samples", samples, expected="a positive number of base samples")
        self.lr, self.betas = lr, check_betas("betas", betas)
        self.fakes: Tensor | None = None
        #: ``(ln sigma_low, ln sigma_high)`` of the base's sampling grid, read once in :meth:`prepare`
        self.log_range: tuple[float, float] | None = None

    def prepare(self, model) -> None:
        """Sample the base ``samples`` times (seeded by ``train.seed``) and read its noise range, once."""
        if self.fakes is None:
            seed = model.config.train.seed if model.config is not None else 0
            self.fakes = self.flow.base_samples(self.samples, torch.Generator().manual_seed(seed), model.device)
            self.log_range = tuple(math.log(s) for s in self.flow.noise_range())

    def loss(self, batch: Batch, generator: torch.Generator | None) -> Tensor:
        real = batch.x
        index = torch.randint(len(self.fakes), (len(real),), generator=generator).to(real.device)
        fake = self.fakes[index]
        low, high = self.log_range
        u = draw_noise((2 * len(real),), generator, real, kind="uniform")
        sigma = torch.exp(low + (high - low) * u)
        x = torch.cat([real, fake])
        noised = x + per_sample(sigma, x) * draw_noise(x.shape, generator, x)
        logits = self.flow.correction.logit(noised, sigma)
        n = len(real)
        return nn.functional.softplus(-logits[:n]).mean() + nn.functional.softplus(logits[n:]).mean()

    def players(self, model) -> list[Player]:
        if self.fakes is None:
            raise RuntimeError("discriminator-guidance: the base samples are not made yet; run "
                               "objective.prepare(model) before players(model) (Model.fit does)")
        params = [p for p in self.flow.correction.parameters() if p.requires_grad]
        return [Player("discriminator", params, self.loss, lr=self.lr, betas=self.betas)]

    def unaveraged(self, model) -> list[nn.Parameter]:
        return []
