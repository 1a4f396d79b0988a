"""Score GAN (SPEC §2.7): a generator driven by the smoothed-KL flow on noised laws, no discriminator.

It lives in the discriminator plugin because it is the generator-smoother GAN of GPM (Franceschi et al.,
§2.3 and Table 4's third family) with the discriminator's drift replaced by a difference of two scores: it
uses the same Int-PM generator step (the smoother's surrogate, eq 27 = eq 11), the same player parts
(:mod:`diffflow_discriminator.parts`) and the GAN preset's generator, and it is compared with the GAN and the
Discriminator Flow on the same ring5 benchmarks. Its scores are EDM ``score`` flows of ``diffflow-score``.

The particle target (eq 19) is ``grad h(x) = E_{sigma, eps}[sigma (w_d s_{p_sigma} - w_g s_{rho_sigma})(x + sigma eps)]``
with ``sigma`` drawn by eq 28. Both scores are EDM denoisers of the ``score`` flow: the data one ``D_p`` frozen
(loaded from a checkpoint, or trained first on the data by the ``edm`` preset in the objective's
:meth:`GeneratedDSM.prepare`, a phase of its own), the generated one ``D_rho`` trained by ``generated-dsm`` on
detached generator samples between generator steps. With ``sigma s = (D - x_tilde)/sigma`` (eq 26) the
single-draw drift is ``v = (w_d D_p(x_tilde) - w_g D_rho(x_tilde) + (w_g - w_d) x_tilde) / sigma``, and the
generator smoother's surrogate ``-<stopgrad(v), g(z)>`` has the gradient of eq 27, ``-E[J^T v]``. Every draw of
``(sigma, eps)`` comes from the generator its caller passes (the trainer's, in training).
"""
from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from diffflow_core import validation as check
from diffflow_core.errors import ConfigError
from diffflow_core.interfaces import Batch, Flow, Objective, Player, SamplingContext
from diffflow_core.tensors import draw_noise
from diffflow_discriminator.parts import Handoff, check_betas, require_generator
from diffflow_score.presets import GPM_SCORE_MLP

__all__ = ["ScoreGanFlow", "GeneratedDSM", "noise_levels"]


def noise_levels(u: Tensor, sigma_min: float, sigma_max: float, rho: float) -> Tensor:
    """Eq 28: ``sigma = (smax^(1/rho) + u (smin^(1/rho) - smax^(1/rho)))^rho``, decreasing in ``u`` in [0, 1]."""
    return (sigma_max ** (1 / rho) + u * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho


def _edm_flow(network: Any, event_shape: tuple[int, ...]) -> nn.Module:
    from diffflow_core.plugins import registry

    return registry("flows").create("score", parameterisation="edm", network=network, event_shape=event_shape)


class ScoreGanFlow(Flow):
    """The eq-19 drift of a Score GAN: frozen data denoiser ``data_score``, learned ``generated`` denoiser.

    ``data_checkpoint`` is a saved ``score`` model (EDM) to load the data denoiser from; without it the
    ``generated-dsm`` objective trains one first for ``data_steps`` iterations (``edm`` preset, network
    ``data_network``, objective settings ``data_objective``: e.g. ``{"p_mean": 0.57, "p_std": 1.26}`` draws its
    training noise levels with eq 28's log-sigma moments instead of EDM's LogNormal(-1.2, 1.2), which on ring5
    scored worse); from Python, ``data_score`` is a ready frozen module with ``denoise(x, sigma)`` instead (the
    ``distill`` flow passes its teacher's implied denoiser). ``sigma_min``/``sigma_max``/``rho`` set eq 28; ``w_d``/``w_g`` weigh the two scores.
    ``init_from_data`` starts ``D_rho`` from the trained data denoiser's weights (both need the same
    architecture): the generated score then starts as a good denoiser and only has to follow the generator.
    ``residual`` learns ``D_rho = D_p + r_phi`` instead, with ``r_phi = c_out F_phi`` the ``network``'s EDM
    output without its skip term: the generated score shares the data score's errors, so where the generator
    matches the data the drift ``-w_g r_phi / sigma`` (w_d = w_g) vanishes whatever ``D_p``'s architecture,
    instead of being the difference of two networks' approximation errors.
    """

    def __init__(self, event_shape: tuple[int, ...] = (2,), network: Any = GPM_SCORE_MLP,
                 data_network: Any = GPM_SCORE_MLP,
                 data_checkpoint: str | None = None, data_steps: int = 4000, sigma_min: float = 0.1,
                 sigma_max: float = 10.0, rho: float = 3.0, w_d: float = 1.0, w_g: float = 1.0,
                 init_from_data: bool = False, residual: bool = False,
                 data_objective: dict[str, Any] | None = None, data_score: nn.Module | None = None) -> None:
        super().__init__()
        if not 0 < sigma_min < sigma_max:
            raise ConfigError(f"sigma_min/sigma_max: expected 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        if not rho > 0:
            raise ConfigError(f"rho: expected a positive number, got {rho!r}")
        data_steps = check.non_negative_int("data_steps", data_steps)
        self.event_shape = tuple(event_shape)
        self.sigma_min, self.sigma_max, self.rho = float(sigma_min), float(sigma_max), float(rho)
        self.w_d, self.w_g = float(w_d), float(w_g)
        if data_objective is not None and not isinstance(data_objective, dict):
            raise ConfigError(f"data_objective: expected a dict of dsm-edm settings, got {data_objective!r}")
        self.data_steps, self.data_network = data_steps, data_network
        self.data_objective = dict(data_objective or {})
        self.generated = _edm_flow(network, self.event_shape)
        self.data_ready = data_checkpoint is not None or data_score is not None
        if data_score is not None:  # a ready denoiser (distillation's teacher, diffflow_discriminator.distill)
            self.data_score = data_score
        elif data_checkpoint is not None:
            from diffflow_core.model import load_reference

            self.data_score = load_reference(data_checkpoint).flow
        else:
            self.data_score = _edm_flow(data_network, self.event_shape)
        self.data_score.requires_grad_(False)
        if init_from_data and residual:
            raise ConfigError("init_from_data/residual: expected at most one of them, got both (a residual "
                              "network starting as a copy of D_p would start at D_rho = 2 D_p)")
        self.init_from_data, self.generated_copied, self.residual = bool(init_from_data), False, bool(residual)
        if self.init_from_data:
            theirs = {k: v.shape for k, v in self.data_score.state_dict().items()}
            if {k: v.shape for k, v in self.generated.state_dict().items()} != theirs:
                raise ConfigError(f"init_from_data: the generated score network {network!r} differs from the data "
                                  "score's architecture; expected the same network spec")

    def sample_sigma(self, n: int, generator: torch.Generator | None, like: Tensor) -> Tensor:
        return noise_levels(draw_noise((n,), generator, like, "uniform"), self.sigma_min, self.sigma_max, self.rho)

    def noised(self, x: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor, Tensor]:
        """``(sigma, sigma per sample, x + sigma eps)`` with ``sigma`` by eq 28: the draw shared by the drift and
        the generated-score loss."""
        sigma = self.sample_sigma(x.shape[0], generator, x)
        s = sigma.reshape(-1, *([1] * (x.ndim - 1)))
        return sigma, s, x + s * draw_noise(x.shape, generator, x)

    def sample_drift(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        """One draw of eq 19's integrand (eq 26) at ``x``, ``(sigma, eps)`` from ``generator`` (sigma by eq 28):
        ``sigma (w_d s_p - w_g s_rho)(x + sigma eps)``, without a graph.

        Always in at least float32, also under ``train.precision="bfloat16"``: the drift is the difference of two
        close denoiser outputs, which bfloat16's 8-bit mantissa resolves to about two digits (on ring5 that cost
        the generator quality; docs/benchmarks/discriminator.md). The denoisers' own training steps, most of a
        Score GAN's cost, keep the reduced precision."""
        with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
            x = x.float() if x.dtype in (torch.bfloat16, torch.float16) else x
            sigma, s, noisy = self.noised(x, generator)
            denoised_p = self.data_score.denoise(noisy, sigma)
            return self.combine(noisy, s, denoised_p, self.generated_denoise(noisy, sigma, denoised_p))

    def drift(self, x: Tensor, t: Tensor, context: SamplingContext) -> Tensor:
        """:meth:`sample_drift` with the solve's generator (``context.generator``), e.g. an Int-PM solve through
        the generator smoother; training passes the trainer's generator to :meth:`sample_drift` itself."""
        return self.sample_drift(x, context.generator)

    def combine(self, noisy: Tensor, s: Tensor, denoised_p: Tensor, denoised_rho: Tensor) -> Tensor:
        """Eq 26 from the two denoisers at ``x_tilde``: ``(w_d D_p - w_g D_rho + (w_g - w_d) x_tilde) / sigma``."""
        return (self.w_d * denoised_p - self.w_g * denoised_rho + (self.w_g - self.w_d) * noisy) / s

    def generated_denoise(self, noisy: Tensor, sigma: Tensor, denoised_p: Tensor | None = None) -> Tensor:
        """``D_rho(x_tilde; sigma)``: the ``generated`` denoiser, or with ``residual`` ``D_p + c_out F_phi``
        (``denoised_p`` is ``D_p(x_tilde)`` when the caller has it)."""
        denoised = self.generated.denoise(noisy, sigma)
        if not self.residual:
            return denoised
        if denoised_p is None:
            with torch.no_grad():
                denoised_p = self.data_score.denoise(noisy, sigma)
        skip = self.generated.skip_scale(sigma.reshape(-1, *([1] * (noisy.ndim - 1))))
        return denoised_p + denoised - skip * noisy


class GeneratedDSM(Objective):
    """``generated-dsm``: trains ``D_rho`` on detached generator samples (DSM, sigma by eq 28), and the
    generator every ``score_steps`` iterations through the generator smoother's surrogate (eq 27).

    ``weighting`` weighs the noise levels of the DSM loss: ``"none"`` is SPEC §2.7's unweighted
    ``||D_rho - x||^2``; ``"edm"`` multiplies it by EDM's ``(sigma^2 + sigma_data^2) / (sigma sigma_data)^2``,
    which for ``sigma << sigma_data`` is ``1/sigma^2``: the squared error of ``sigma s_rho = (D_rho - x_tilde)/sigma``,
    the quantity the generator's drift (eq 26) is made of. Unweighted, the small-sigma levels, whose errors
    the drift amplifies by ``1/sigma``, count ``sigma^2`` times less than the large ones.

    ``updates`` is ``"alternating"`` (GPM's loop: the generator step draws fresh particles and noise and reads
    ``D_rho`` just updated) or ``"simultaneous"``: the score step draws ``x = g(z)`` with its graph and the
    generator step reuses that draw, its ``(sigma, eps)`` and ``D_rho(x_tilde)`` from before the score update,
    so a generator step costs one data-score pass and the generator's backward instead of two generator, two
    score passes and the backward.

    The data denoiser trains in :meth:`prepare`, the trainer's phase before :meth:`players`; both refuse a
    smoother that is not a generator (:func:`~diffflow_discriminator.parts.require_generator`) before any work.
    """

    def __init__(self, flow: ScoreGanFlow, score_steps: int = 10, lr: float | None = None, generator_lr: float | None = None,
                 betas=(0.5, 0.999), score_betas=(0.9, 0.999), weighting: str = "none",
                 updates: str = "alternating") -> None:
        if not isinstance(flow, ScoreGanFlow):
            raise ConfigError(f"flow: objective 'generated-dsm' needs the 'score-gan' flow, got {type(flow).__name__}")
        check.positive_int("score_steps", score_steps)
        if weighting not in ("none", "edm"):
            raise ConfigError(f"weighting: expected 'none' or 'edm', got {weighting!r}")
        if updates not in ("alternating", "simultaneous"):
            raise ConfigError(f"updates: expected 'alternating' or 'simultaneous', got {updates!r}")
        self.flow, self.score_steps, self.weighting, self.updates = flow, score_steps, weighting, updates
        self.lr, self.generator_lr = lr, generator_lr
        self.betas, self.score_betas = check_betas("betas", betas), check_betas("score_betas", score_betas)

    def score_loss(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        """``E [w(sigma) || D_rho(x + sigma eps; sigma) - x ||^2]`` on generated ``x`` (detached)."""
        return self._score_loss(x, generator)[0]

    def _score_loss(self, x: Tensor, generator: torch.Generator | None) -> tuple[Tensor, tuple[Tensor, ...]]:
        """:meth:`score_loss` and its draw ``(sigma, sigma per sample, x_tilde, D_rho(x_tilde))``, detached."""
        x = x.detach()
        sigma, s, noisy = self.flow.noised(x, generator)
        denoised = self.flow.generated_denoise(noisy, sigma)
        error = (denoised - x).flatten(1).pow(2).sum(1)
        if self.weighting == "edm":
            error = error * self.flow.generated.loss_weight(sigma)
        return error.mean(), (sigma, s, noisy, denoised.detach())

    def prepare(self, model) -> None:
        """The declared phase before training (the trainer times it as ``prepare_seconds``): refuse a smoother
        other than a generator, then train the data denoiser unless it was loaded or ``data_steps == 0``
        (``edm`` preset on the model's data, where the model is, under its own progress bar "data score" when
        the model's training shows one), then with ``init_from_data`` copy it into the generated denoiser."""
        require_generator(model.smoother, "generated-dsm")
        flow = self.flow
        if not (flow.data_ready or flow.data_steps == 0):
            from diffflow_core import build

            if model.data is None:
                raise ConfigError("data: a Score GAN without data_checkpoint trains its data score first and needs data")
            train = {"steps": flow.data_steps, "progress": model.config.train.progress}
            data_model = build(preset="edm", data=model.data, flow={"network": flow.data_network},
                               objective=flow.data_objective, train=train)
            data_model.to(model.device)  # trains where the Score GAN trains (build makes it on the CPU)
            data_model.fit(label="data score")
            flow.data_score.load_state_dict(data_model.flow.state_dict())
            flow.data_ready = True
        if flow.init_from_data and not flow.generated_copied:
            flow.generated.load_state_dict(flow.data_score.state_dict())
            flow.generated_copied = True

    @property
    def prepared(self) -> bool:
        """Whether :meth:`prepare` has left nothing to do (the players train against the data score as it is)."""
        flow = self.flow
        return (flow.data_ready or flow.data_steps == 0) and (flow.generated_copied or not flow.init_from_data)

    def unaveraged(self, model) -> list[nn.Parameter]:
        """Sampling is one generator pass: no EMA of the generated-data denoiser."""
        return list(self.flow.generated.parameters())

    # -- players -------------------------------------------------------------------------------------
    def score_step(self, smoother, handoff: Handoff | None, batch: Batch,
                   generator: torch.Generator | None) -> Tensor:
        """DSM of ``D_rho`` on fresh generator samples; with a ``handoff`` (simultaneous updates) ``g(z)`` keeps
        its graph and the draw ``(x, sigma, sigma per sample, x_tilde, D_rho(x_tilde))`` is left for the
        generator step."""
        if handoff is None:
            with torch.no_grad():
                x = smoother.sample(len(batch), generator)
            return self.score_loss(x, generator)
        x = smoother.sample(len(batch), generator)
        loss, draw = self._score_loss(x, generator)
        handoff.put(x, *draw)
        return loss

    def generator_step(self, smoother, handoff: Handoff | None, batch: Batch,
                       generator: torch.Generator | None) -> Tensor:
        """The smoother's surrogate ``-<stopgrad(v), g(z)>`` (eq 27) with ``v`` one draw of eq 26 from
        ``generator`` at fresh particles, or (simultaneous updates) at the score step's draw with its
        pre-update ``D_rho(x_tilde)``."""
        flow = self.flow
        if handoff is None:
            x = smoother.sample(len(batch), generator)
            v = flow.sample_drift(x.detach(), generator)
        else:
            draw = handoff.take()
            if draw is None:
                raise RuntimeError("generated-dsm: the generator step reuses the score step's draw; "
                                   "run the score player first in each iteration")
            x, sigma, s, noisy, denoised_rho = draw
            with torch.no_grad():
                v = flow.combine(noisy, s, flow.data_score.denoise(noisy, sigma), denoised_rho)
        return smoother.surrogate_loss(None, None, None, x, drift=v)

    def players(self, model) -> list[Player]:
        """``score`` every iteration, ``generator`` every ``score_steps`` (SPEC §2.7's schedule); the data score
        must be ready (:meth:`prepare`, which the trainer runs first)."""
        smoother = require_generator(model.smoother, "generated-dsm")
        if not self.prepared:
            raise RuntimeError("generated-dsm: the data score is not trained yet; run objective.prepare(model) "
                               "before players(model) (Model.fit does)")
        handoff = Handoff() if self.updates == "simultaneous" else None
        return [Player("score", [p for p in self.flow.generated.parameters() if p.requires_grad],
                       partial(self.score_step, smoother, handoff), lr=self.lr, betas=self.score_betas),
                Player("generator", [p for p in smoother.parameters() if p.requires_grad],
                       partial(self.generator_step, smoother, handoff), lr=self.generator_lr, betas=self.betas,
                       every=self.score_steps)]
