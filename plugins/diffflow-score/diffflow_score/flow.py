"""The ``score`` flow: a learned score of noise-smoothed data driving the reverse SDE or the PF-ODE.

One network, three parameterisations (see :mod:`diffflow_score.schedules` for the schedules):

* ``edm``: the preconditioned denoiser of SPEC §2.6 (eqs 23-24)
  ``D(x; sigma) = c_skip x + c_out F(c_in x, c_noise)`` with ``c_skip = sd^2/(sigma^2+sd^2)``,
  ``c_out = sigma sd / sqrt(sigma^2+sd^2)``, ``c_in = 1/sqrt(sigma^2+sd^2)``, ``c_noise = ln(sigma)/4``, and
  score ``s = (D - x)/sigma^2``. Time is sigma.
* ``vp`` and ``ve``: epsilon prediction, score ``s = -eps_hat / std(t)``, with ``eps_hat`` read off the same
  preconditioned denoiser applied to the VE-scaled input ``x / alpha = y + sigma eps``:
  ``eps_hat = (x / alpha - D(x / alpha; sigma)) / sigma`` (Karras et al.'s preconditioning for any schedule). A
  raw epsilon network needs ``|eps_hat error| << 1/sigma`` at high noise, since the denoiser error is
  ``sigma`` times it (sigma reaches 150 for VP, 50 for VE); a short run on ring5 sampled far worse that way
  (measured in docs/benchmarks/score.md). The objectives stay the epsilon MSEs. All three condition on
  ``c_noise = ln(sigma(t))/4``, a monotone relabelling of DDPM's time input that keeps the embedding's range the
  same for every schedule.

With ``precondition=False`` the network is called as ``net(x, t[, y])`` and returns the parameterisation's
target directly (``D`` for EDM, ``eps_hat`` otherwise): this is how analytic denoisers are plugged in.

``mode="ode"`` samples the PF-ODE ``dx = [f x - g^2 s/2] dt`` (for EDM ``dx/dsigma = (x - D)/sigma``,
SPEC §2.2 eq 8); ``mode="sde"`` the reverse SDE ``dx = [f x - g^2 s] dt + g dW`` (EDM: doubled drift and
``g = sqrt(2 sigma)``, SPEC §2.2 eq 7, §2.6 "SDE variant"), which needs ``euler-maruyama``.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from diffflow_core import validation as check
from diffflow_core.compose import NoiseLevel
from diffflow_core.conditioning import ClassConditioned
from diffflow_core.errors import ConfigError
from diffflow_core.interfaces import Flow, SamplingContext, as_time, check_steps, resolve_grid, time_grid_over
from diffflow_core.networks import build_network
from diffflow_core.tensors import per_sample
from diffflow_score.presets import GPM_SCORE_MLP
from diffflow_score.schedules import SCHEDULES, Schedule

__all__ = ["ScoreFlow", "MODES", "default_network"]

MODES = ("ode", "sde")
_SCHEDULE_PARAMS = {"edm": ("sigma_min", "sigma_max", "rho"), "vp": ("beta_min", "beta_max", "eps"),
                    "ve": ("sigma_min", "sigma_max")}


def default_network(event_shape: tuple[int, ...]) -> dict[str, Any]:
    """The ``unet`` for image-shaped particles ``[C, H, W]`` when registered, else GPM's 4x512 Fourier MLP.

    Images of at most 16x16 pixels get 16 base channels instead of 32: on 8x8 digits that U-Net met the
    Fréchet-distance target at a much lower cost per step than the 32-channel one (docs/benchmarks/score.md).
    """
    from diffflow_core.plugins import registry

    if len(event_shape) == 3 and "unet" in registry("networks"):
        return {"name": "unet", "channels": 16} if event_shape[1] * event_shape[2] <= 256 else {"name": "unet"}
    return dict(GPM_SCORE_MLP)


class ScoreFlow(ClassConditioned, Flow):
    """Score-based diffusion flow; ``network`` is any registered network, ``"auto"`` picks :func:`default_network`."""

    def __init__(self, parameterisation: str = "edm", mode: str = "ode", network: Any = "auto",
                 precondition: bool = True, sigma_data: float = 0.5, sigma_min: float | None = None,
                 sigma_max: float | None = None, rho: float | None = None, beta_min: float | None = None,
                 beta_max: float | None = None, eps: float | None = None, conditional: bool = False,
                 event_shape: tuple[int, ...] | None = None, num_classes: int | None = None) -> None:
        super().__init__()
        if parameterisation not in SCHEDULES:
            raise ConfigError(f"parameterisation: expected one of {', '.join(SCHEDULES)}, got {parameterisation!r}")
        if mode not in MODES:
            raise ConfigError(f"mode: expected one of {', '.join(MODES)}, got {mode!r}")
        if event_shape is None:
            raise ConfigError("event_shape: the score flow needs the particle shape (build it with data)")
        sigma_data = check.positive("sigma_data", sigma_data)
        if conditional:
            check.positive_int("num_classes", num_classes,
                               expected="a positive class count (a conditional score flow needs labelled data)")
        given = {k: v for k, v in dict(sigma_min=sigma_min, sigma_max=sigma_max, rho=rho, beta_min=beta_min,
                                       beta_max=beta_max, eps=eps).items() if v is not None}
        for key in given:
            if key not in _SCHEDULE_PARAMS[parameterisation]:
                raise ConfigError(f"{key}: not a parameter of the '{parameterisation}' schedule; expected some of "
                                  f"{', '.join(_SCHEDULE_PARAMS[parameterisation])}")
        self.schedule: Schedule = SCHEDULES[parameterisation](**given)
        self.parameterisation, self.mode = parameterisation, mode
        self.precondition, self.sigma_data = bool(precondition), float(sigma_data)
        self.singular_end = self.schedule.singular_end
        self.event_shape = tuple(event_shape)
        self.conditional = bool(conditional)
        self.num_classes = num_classes if conditional else None
        spec = default_network(self.event_shape) if network == "auto" else network
        self.net = build_network(spec, in_shape=self.event_shape, time_conditioned=True,
                                 num_classes=self.num_classes)

    # -- the learned estimators ------------------------------------------------------------------------
    def _network(self, x: Tensor, t: Tensor, y: Tensor | None) -> Tensor:
        """The native output ``D`` (EDM) or ``eps_hat`` (VP, VE), through EDM's preconditioning unless disabled.

        Preconditioned, every schedule evaluates the EDM denoiser on the VE-scaled input ``x / alpha = y + sigma eps``
        and VP/VE read off ``eps_hat = (x / alpha - D) / sigma``.
        """
        if not self.precondition:
            return self.net(x, t, y) if self.conditional else self.net(x, t)
        sigma = self.schedule.sigma(t)
        s, scaled = per_sample(sigma, x), x / per_sample(self.schedule.alpha(t), x)
        sd2 = self.sigma_data ** 2
        args = (torch.rsqrt(s ** 2 + sd2) * scaled, torch.log(sigma) / 4) + ((y,) if self.conditional else ())
        denoised = self.skip_scale(s) * scaled + s * self.sigma_data * torch.rsqrt(s ** 2 + sd2) * self.net(*args)
        return denoised if self.parameterisation == "edm" else (scaled - denoised) / s

    def skip_scale(self, sigma: Tensor) -> Tensor:
        """EDM's ``c_skip(sigma) = sigma_data^2 / (sigma^2 + sigma_data^2)``: the share of the input kept by ``D``."""
        sd2 = self.sigma_data ** 2
        return sd2 / (sigma ** 2 + sd2)

    def loss_weight(self, sigma: Tensor) -> Tensor:
        """EDM's ``lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2``: the weight that gives the
        preconditioned network's target unit variance at every noise level (SPEC §2.6)."""
        return (sigma ** 2 + self.sigma_data ** 2) / (sigma * self.sigma_data) ** 2

    def _predict(self, x: Tensor, t: Tensor | float, y: Tensor | None = None,
                 context: SamplingContext | None = None) -> Tensor:
        """The native output at the given labels ``y``, else at the context's label and guidance (unconditional
        without a label)."""
        t = as_time(t, x)
        if not self.conditional:
            return self._network(x, t, None)
        if y is not None:
            return self._network(x, t, y)
        null = self.null_labels(x.shape[0], x.device)
        labels, guidance = self.conditioning(x, context)
        if labels is None:
            return self._network(x, t, null)
        if guidance == 1.0:
            return self._network(x, t, labels)
        both = self._network(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, null]))
        cond, uncond = both.chunk(2)
        return uncond + guidance * (cond - uncond)

    def score(self, x: Tensor, t: Tensor | float, y: Tensor | None = None,
              context: SamplingContext | None = None) -> Tensor:
        """``grad log p_t(x)`` of the noisy marginal at time ``t`` (for EDM ``(D - x)/sigma^2``, SPEC §2.6)."""
        t = as_time(t, x)
        out = self._predict(x, t, y, context)
        if self.parameterisation == "edm":
            return (out - x) / per_sample(t, x) ** 2
        return -out / per_sample(self.schedule.std(t), x)

    def denoise(self, x: Tensor, t: Tensor | float, y: Tensor | None = None,
                context: SamplingContext | None = None) -> Tensor:
        """Tweedie's ``E[y | x_t] = (x + std^2 s) / alpha``; for EDM (t = sigma) the denoiser ``D(x; sigma)``."""
        t = as_time(t, x)
        if self.parameterisation == "edm":
            return self._predict(x, t, y, context)
        alpha, std = per_sample(self.schedule.alpha(t), x), per_sample(self.schedule.std(t), x)
        return (x - std * self._predict(x, t, y, context)) / alpha

    def epsilon(self, x: Tensor, t: Tensor | float, y: Tensor | None = None,
                context: SamplingContext | None = None) -> Tensor:
        """The predicted noise ``eps_hat = -std(t) s(x, t)``."""
        t = as_time(t, x)
        if self.parameterisation == "edm":
            return (x - self._predict(x, t, y, context)) / per_sample(t, x)
        return self._predict(x, t, y, context)

    # -- the flow ------------------------------------------------------------------------------------
    def _drift(self, x: Tensor, t: Tensor, score_weight: float, context: SamplingContext | None = None) -> Tensor:
        t = as_time(t, x)
        f, g2 = per_sample(self.schedule.f(t), x), per_sample(self.schedule.g2(t), x)
        return f * x - score_weight * g2 * self.score(x, t, context=context)

    def drift(self, x: Tensor, t: Tensor, context: SamplingContext) -> Tensor:
        """PF-ODE drift (``mode='ode'``) or reverse-SDE drift (``mode='sde'``, the score term doubled), at the
        context's label and guidance."""
        return self._drift(x, t, 1.0 if self.mode == "sde" else 0.5, context)

    def ode_drift(self, x: Tensor, t: Tensor) -> Tensor:
        """The probability-flow ODE drift whatever the mode: what ``log_prob`` integrates (SPEC §1.7)."""
        return self._drift(x, t, 0.5)

    def noise_level(self) -> NoiseLevel:
        """The schedule's path ``x_t = alpha(t) (y + sigma(t) eps)``, by which the drift algebra maps this flow's
        time onto another flow's (:mod:`diffflow_core.compose`)."""
        return NoiseLevel(self.schedule.alpha, self.schedule.sigma, self.schedule.time_of)

    def diffusion(self, t: Tensor) -> Tensor | float:
        """``g(t)`` of the reverse SDE in ``sde`` mode, else 0."""
        if self.mode == "ode":
            return 0.0
        return torch.sqrt(self.schedule.g2(torch.as_tensor(t)))

    @property
    def is_stochastic(self) -> bool:
        return self.mode == "sde"

    def time_grid(self, steps: int, grid: str | dict[str, Any] | None = None) -> Tensor:
        """The schedule's grid (float64; solvers cast it to the particles' dtype) from the prior end
        (sigma_max, or t = 1) to the data end (EDM: sigma = 0), or the registered ``grid`` between the same ends.

        A noise-level grid (``exponential``, ``edm``, ``vp``, ...) is placed in sigma between the noise levels of
        the two ends (with a final 0 when the schedule ends at sigma = 0, as EDM's) and mapped to the schedule's
        time by ``Schedule.time_of``; a time grid (``uniform``, ``power``) spans the two end times directly.
        """
        check_steps(steps)
        if grid is None:
            return self.schedule.time_grid(steps)
        ends = self.schedule.time_grid(1)
        _, function, params = resolve_grid(grid)
        if getattr(function, "space", "time") != "sigma":
            return time_grid_over(grid, steps, float(ends[0]), float(ends[-1]), self, dtype=torch.float64)
        sigma_max = float(self.schedule.sigma(ends[0]))
        sigma_min = self.schedule.sigma_min if self.singular_end else float(self.schedule.sigma(ends[-1]))
        levels = function(steps, sigma_min=sigma_min, sigma_max=sigma_max, append_zero=self.singular_end,
                          dtype=torch.float64, **params)
        times = self.schedule.time_of(levels)
        times[0], times[-1] = ends[0], ends[-1]
        return times

    def prior(self, n: int, generator: torch.Generator | None = None, device: torch.device | str | None = None) -> Tensor:
        """``N(0, prior_std^2 I)``: ``sigma_max`` for EDM and VE, 1 for VP."""
        return self.schedule.prior_std * super().prior(n, generator, device)

    def prior_log_prob(self, x: Tensor) -> Tensor:
        scale = self.schedule.prior_std
        return super().prior_log_prob(x / scale) - x[0].numel() * math.log(scale)
