"""The ``ndm`` flow: Neural Diffusion Models (SPEC §3) with a forward transform ``F_phi`` and a reverse model ``x_hat_theta``.

Forward process ``q(z_t | x) = N(alpha_t F(x, t), sigma_t^2 I)``; the reverse model substitutes
``x_hat_theta(z_t, t)`` for ``x``. Sampling runs from t = 1 (prior ``N(0, I)``) down to t = 0 in one of three ways:

- ``mode="ode"``: the probability-flow ODE ``dz/dt = d_t[alpha F](x_hat, t) + (sigma'/sigma)(z - alpha F(x_hat, t))``
  (SPEC §3.3), for ``euler`` / ``heun``; it is also :meth:`ode_drift`, which the kernel's likelihood integrates;
- ``mode="sde"``: the reverse SDE ``dz = [f - g^2 s] dt + g dw`` for ``euler-maruyama``;
- the discrete ancestral samplers ``ndm-ddpm`` / ``ndm-ddim`` through :meth:`ancestral_step` (any mode).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from diffflow_core import validation as check
from diffflow_core.errors import ConfigError
from diffflow_core.interfaces import Flow, as_time, check_steps, time_grid_over
from diffflow_core.networks import build_network

from diffflow_ndm.schedules import Schedule, build_schedule
from diffflow_core.tensors import draw_noise, per_sample
from diffflow_ndm.transforms import Transform, build_transform

__all__ = ["NDMFlow"]

_MODES = ("ode", "sde")


class NDMFlow(Flow):
    """NDM flow owning ``x_hat_theta`` (``network``), ``F_phi`` (``transform``) and the ``schedule``.

    ``time_power`` shapes the sampling grid (:meth:`time_grid`). ``precondition`` wraps the network EDM-style in VP coordinates, ``x_hat = c_skip z + c_out net(c_in z, t)``
    with ``c_skip = alpha s_d^2 / (alpha^2 s_d^2 + sigma^2)``, ``c_out = sigma s_d / sqrt(.)``, ``c_in = 1 / sqrt(.)``
    (``s_d = sigma_data``, EDM's fixed 0.5 by default). ``clip = c`` clamps ``x_hat`` to ``[-c, c]`` when sampling
    (:meth:`drift`, :meth:`ancestral_step`; DDPM's ``clip_denoised`` for data in a known box such as [-1, 1] images),
    never in training or in :meth:`ode_drift`, so likelihoods stay those of the unclipped model. Measured on digits:
    without it, an undertrained reverse model extrapolates linearly off the data and a few ODE paths diverge. ``sigma_data`` must not default to the data's own std:
    then the untrained model is exactly the Gaussian posterior mean, the best linear denoiser, so the residual
    the network must fit is orthogonal to every linear function of ``z`` and the near-linear untrained MLP sits at
    a stationary point (on ring5 the NELBO did not move: docs/benchmarks/ndm.md, "Earlier runs").
    """

    def __init__(self, network: str | dict[str, Any] | nn.Module = "mlp",
                 transform: str | dict[str, Any] | Transform = "identity",
                 schedule: str | dict[str, Any] | Schedule = "cosine", mode: str = "ode",
                 precondition: bool = True, sigma_data: float = 0.5, time_power: float = 2.0,
                 clip: float | None = None, event_shape: tuple[int, ...] = (2,)) -> None:
        super().__init__()
        if mode not in _MODES:
            raise ConfigError(f"mode: expected one of {', '.join(_MODES)}, got {mode!r}")
        time_power = check.number("time_power", time_power, 1)
        sigma_data = check.positive("sigma_data", sigma_data)
        self.clip = None if clip is None else check.positive(
            "clip", clip, expected="None or a positive bound on |x_hat| for sampling")
        self.event_shape = tuple(event_shape)
        self.mode = mode
        self.time_power = float(time_power)
        self.precondition = bool(precondition)
        self.sigma_data = float(sigma_data)
        self.schedule = build_schedule(schedule)
        self.transform = build_transform(transform, self.event_shape)
        self.net = build_network(network, in_shape=self.event_shape, out_shape=self.event_shape,
                                 time_conditioned=True)
        if mode == "sde" and float(self.schedule(torch.ones(1))[0]) == 0.0:
            raise ConfigError("mode: the reverse SDE needs alpha_1 > 0 (its drift has d log alpha/dt), but this "
                              "schedule has alpha_1 = 0; use mode='ode' or an ancestral solver (ndm-ddpm/ndm-ddim)")

    # -- the model ------------------------------------------------------------------------------------
    @property
    def is_stochastic(self) -> bool:
        return self.mode == "sde"

    def denoise(self, z: Tensor, t: Tensor) -> Tensor:
        """``x_hat_theta(z_t, t)``, the reverse model's estimate of ``x`` (SPEC §3.1)."""
        t = as_time(t, z)
        if not self.precondition:
            return self.net(z, t)
        alpha, sigma = (per_sample(c, z) for c in self.schedule(t))
        scale = (alpha ** 2 * self.sigma_data ** 2 + sigma ** 2).sqrt()
        skip = alpha * self.sigma_data ** 2 / scale ** 2
        return skip * z + (sigma * self.sigma_data / scale) * self.net(z / scale, t)

    def marginal(self, x: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """``z_t = alpha_t F(x, t) + sigma_t eps ~ q(z_t | x)``."""
        alpha, sigma = (per_sample(c, x) for c in self.schedule(t))
        return alpha * self.transform(x, t) + sigma * eps

    def posterior_coefficients(self, t: Tensor, s: Tensor, eta: float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
        """``(alpha_s, c, var)`` ``[N]`` of the DDIM-like posterior ``q(z_s | z_t, x)`` (SPEC §3.1), whose mean is
        ``alpha_s F(x, s) + c (z_t - alpha_t F(x, t))`` with ``c = sqrt(sigma_s^2 - var) / sigma_t``.

        ``var = eta^2 sigma~^2_{s|t}`` with DDPM's ``sigma~^2_{s|t} = -sigma_s^2 expm1(lambda_t - lambda_s)``
        (``eta = 1``: DDPM, ``eta = 0``: deterministic DDIM), written in log-SNR to avoid cancellation.
        """
        (alpha_s, sigma_s), (_, sigma_t) = self.schedule(s), self.schedule(t)
        shrink = torch.expm1(self.schedule.log_snr(t) - self.schedule.log_snr(s))
        var = -eta ** 2 * sigma_s ** 2 * shrink
        return alpha_s, sigma_s * (1 + eta ** 2 * shrink).clamp_min(0).sqrt() / sigma_t, var

    def posterior(self, z_t: Tensor, x: Tensor, t: Tensor, s: Tensor, eta: float = 1.0) -> tuple[Tensor, Tensor]:
        """Mean ``[N, *shape]`` and variance ``[N]`` of ``q(z_s | z_t, x)`` (SPEC §3.1)."""
        alpha_s, c, var = self.posterior_coefficients(t, s, eta)
        alpha_t = self.schedule(t)[0]
        mean = (per_sample(alpha_s, x) * self.transform(x, s)
                + per_sample(c, x) * (z_t - per_sample(alpha_t, x) * self.transform(x, t)))
        return mean, var

    def velocity(self, z: Tensor, t: Tensor, x: Tensor, kind: str) -> Tensor:
        """Conditional velocity given ``x``: the ODE's ``d_t[alpha F] + (sigma'/sigma)(z - alpha F)`` or the reverse
        SDE's ``f - g^2 s = (alpha'/alpha) z + alpha d_tF + (g^2/sigma^2)(z - alpha F)`` (SPEC §3.3)."""
        t = as_time(t, z)
        c = self.schedule.coefficients(t)
        value, d_value = self.transform.with_time_derivative(x, t)
        alpha, dalpha = per_sample(c.alpha, z), per_sample(c.dalpha, z)
        residual = z - alpha * value
        if kind == "ode":
            return dalpha * value + alpha * d_value + per_sample(c.dsigma / c.sigma, z) * residual
        return (dalpha / alpha) * z + alpha * d_value + per_sample(c.rate, z) * residual

    # -- the Flow contract ----------------------------------------------------------------------------
    def sampling_denoise(self, z: Tensor, t: Tensor) -> Tensor:
        """``x_hat`` used for sampling: :meth:`denoise`, clamped to ``[-clip, clip]`` when ``clip`` is set."""
        x_hat = self.denoise(z, t)
        return x_hat if self.clip is None else x_hat.clamp(-self.clip, self.clip)

    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        return self.velocity(x, t, self.sampling_denoise(x, t), self.mode)

    def ode_drift(self, x: Tensor, t: Tensor) -> Tensor:
        return self.velocity(x, t, self.denoise(x, t), "ode")

    def diffusion(self, t: Tensor) -> Tensor | float:
        if self.mode != "sde":
            return 0.0
        t = torch.as_tensor(t, dtype=torch.get_default_dtype()).reshape(1)
        return self.schedule.coefficients(t).g2.sqrt()[0]

    def time_grid(self, steps: int, grid: str | dict[str, Any] | None = None) -> Tensor:
        """``steps + 1`` times ``t_i = (1 - i/steps)^time_power`` from 1 (the prior) down to 0 (the data), or the
        registered time grid ``grid`` from 1 to 0 (``power`` with ``exponent = time_power`` is the default).

        ``time_power > 1`` refines the grid near t = 0, where ``sigma'/sigma`` is large (stiff ODE, small noise).
        """
        check_steps(steps)
        if grid is not None:
            return time_grid_over(grid, steps, 1.0, 0.0, self)
        return torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64).pow(self.time_power).float()

    def ancestral_step(self, z: Tensor, t: Tensor, s: Tensor, eta: float,
                       generator: torch.Generator | None) -> Tensor:
        """``z_s ~ p_theta(z_s | z_t) = q(z_s | z_t, x = x_hat_theta(z_t, t))`` (SPEC §3.1)."""
        t, s = as_time(t, z), as_time(s, z)
        mean, var = self.posterior(z, self.sampling_denoise(z, t), t, s, eta)
        if eta == 0:
            return mean
        return mean + per_sample(var.sqrt(), z) * draw_noise(z.shape, generator, z)
