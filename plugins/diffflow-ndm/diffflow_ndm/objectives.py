"""NELBO objectives of Neural Diffusion Models: ``nelbo`` (T discrete steps, SPEC §3.2) and ``nelbo-continuous``
(T -> infinity, SPEC §3.3). Both train ``F_phi``, ``x_hat_theta`` and a learnable schedule jointly on

    L = L_rec + L_diff + L_prior,

with ``L_diff`` estimated by one importance-sampled time per example (SPEC §3.4). The training loss is the
batch mean of ``L / D`` (nats per dimension); :meth:`NELBOObjective.terms` returns the three terms per example.
"""
from __future__ import annotations

import math
from typing import Any

import attrs
import torch
from torch import Tensor

from diffflow_core import validation as check
from diffflow_core.errors import ConfigError
from diffflow_core.interfaces import Batch, Objective

from diffflow_ndm.flow import NDMFlow
from diffflow_ndm.proposals import Proposal, build_proposal
from diffflow_core.tensors import draw_device, draw_noise, per_sample

__all__ = ["WEIGHTINGS", "NELBOTerms", "NELBOObjective", "DiscreteNELBO", "ContinuousNELBO", "reconstruction_nll", "prior_kl",
           "discrete_kl", "continuous_integrand"]


@attrs.frozen
class NELBOTerms:
    """Per-example NELBO terms in nats ``[N]``: ``rec = -log p(x | z_0)``, ``diff = L_diff``, ``prior = L_prior``."""

    rec: Tensor
    diff: Tensor
    prior: Tensor

    @property
    def total(self) -> Tensor:
        return self.rec + self.diff + self.prior


def _flat_sq(x: Tensor) -> Tensor:
    return x.flatten(1).pow(2).sum(1)


def _times(value: float, x: Tensor) -> Tensor:
    return torch.full((x.shape[0],), value, dtype=x.dtype, device=x.device)


def reconstruction_nll(flow: NDMFlow, x: Tensor, eps: Tensor) -> Tensor:
    """``L_rec = -log p(x | z_0)``, ``z_0 = alpha_0 F(x, 0) + sigma_0 eps`` and the Gaussian decoder
    ``N(x; decode(z_0 / alpha_0), tau^2 I)`` with ``tau = sigma_0 / alpha_0`` by default (SPEC §3.2).
    A transform with ``F(x, 0) = x`` skips its network here (its parameters get no gradient from ``t = 0``)."""
    zero = _times(0.0, x)
    alpha_0, sigma_0 = flow.schedule(zero)
    value = x if flow.transform.identity_at_zero else flow.transform(x, zero)
    mean = flow.transform.decode(value + per_sample(sigma_0 / alpha_0, x) * eps)
    log_tau = flow.transform.decoder_log_scale((sigma_0 / alpha_0).log())
    dims = x[0].numel()
    return (0.5 * _flat_sq(x - mean) * torch.exp(-2 * log_tau) + dims * log_tau
            + 0.5 * dims * math.log(2 * math.pi))


def prior_kl(flow: NDMFlow, x: Tensor) -> Tensor:
    """``L_prior = KL(q(z_1 | x) || N(0, I)) = 1/2 [alpha_1^2 ||F(x, 1)||^2 + D (sigma_1^2 - 1 - log sigma_1^2)]``."""
    one = _times(1.0, x)
    alpha_1, sigma_1 = flow.schedule(one)
    var = sigma_1 ** 2
    return 0.5 * (alpha_1 ** 2 * _flat_sq(flow.transform(x, one)) + x[0].numel() * (var - 1 - var.log()))


def discrete_kl(flow: NDMFlow, x: Tensor, t: Tensor, s: Tensor, eps: Tensor) -> Tensor:
    """``KL(q(z_s | z_t, x) || p_theta(z_s | z_t)) = ||dmu||^2 / (2 sigma~^2_{s|t})`` at ``z_t = alpha_t F(x, t) + sigma_t eps``,
    ``dmu = alpha_s [F(x, s) - F(x_hat, s)] - c alpha_t [F(x, t) - F(x_hat, t)]`` (SPEC §3.2)."""
    x_hat = flow.denoise(flow.marginal(x, t, eps), t)
    alpha_s, c, var = flow.posterior_coefficients(t, s)
    alpha_t = flow.schedule(t)[0]
    gap_s = flow.transform(x, s) - flow.transform(x_hat, s)
    gap_t = flow.transform(x, t) - flow.transform(x_hat, t)
    dmu = per_sample(alpha_s, x) * gap_s - per_sample(c * alpha_t, x) * gap_t
    return _flat_sq(dmu) / (2 * var)


def continuous_integrand(flow: NDMFlow, x: Tensor, t: Tensor, eps: Tensor) -> Tensor:
    """The continuous diffusion-loss integrand at ``t`` (SPEC §3.3), ``L_diff^inf = E_t[.]``:

        1/2 g^-2 || alpha (d_tF(x) - d_tF(x_hat)) - (g^2 alpha / sigma^2)(F(x) - F(x_hat)) ||^2,

    written with ``r = g^2 / sigma^2 = -d lambda/dt`` as ``||alpha (dF gap - r F gap)||^2 / (2 sigma^2 r)``.
    ``(F, d_tF)`` come from one JVP at ``x`` and one at ``x_hat`` (gradients flow through ``x_hat``).
    """
    c = flow.schedule.coefficients(t)
    value, d_value = flow.transform.with_time_derivative(x, t)
    z = per_sample(c.alpha, x) * value + per_sample(c.sigma, x) * eps
    value_hat, d_value_hat = flow.transform.with_time_derivative(flow.denoise(z, t), t)
    rate = c.rate
    gap = per_sample(c.alpha, x) * ((d_value - d_value_hat) - per_sample(rate, x) * (value - value_hat))
    return _flat_sq(gap) / (2 * c.sigma ** 2 * rate)


WEIGHTINGS = ("elbo", "sigmoid")


class NELBOObjective(Objective):
    """Shared parts: the proposal of times, the three terms, the per-dimension training loss.

    ``dequantize = delta`` trains on ``x + U[0, delta)`` (uniform dequantisation of data quantised in bins of width
    ``delta``, e.g. 2/16 for digits in [-1, 1]), so the NELBO bounds the discrete data's negative log-probability
    as ``NELBO(x + u) - D log delta``, instead of rewarding density spikes on the grid.

    ``weighting`` chooses the *training* loss; :meth:`terms` (evaluation, likelihood) stays the plain NELBO:

    - ``"elbo"``: the NELBO itself (the best likelihood);
    - ``"sigmoid"``: each time's ``L_diff`` contribution times ``w(lambda_t) = sigmoid(weighting_bias - lambda_t)``,
      Kingma & Gao's monotone weighting (for ``F = x`` the ELBO of noise-augmented data). The NELBO gives every
      log-SNR level about the same weight of the preconditioned network's error, from ``lambda ~ -2 log sigma_data``
      up to ``lambda_max = 10``, so a small network spends most of its capacity on nearly clean inputs, which barely
      move samples; ``w`` moves it to the middle noise levels that decide an image's shape (measured on digits in
      docs/benchmarks/ndm.md). Only for a fixed forward process (``F`` and schedule without parameters): a learned
      ``F`` collapses to cheat a loss that is no longer a bound, so :meth:`loss` refuses that combination.
    """

    def __init__(self, proposal: str | dict[str, Any] | Proposal = "uniform", dequantize: float | None = None,
                 weighting: str = "elbo", weighting_bias: float = 2.0) -> None:
        if dequantize is not None:
            dequantize = check.positive("dequantize", dequantize, expected="a positive bin width or None")
        if weighting not in WEIGHTINGS:
            raise ConfigError(f"weighting: expected one of {', '.join(WEIGHTINGS)}, got {weighting!r}")
        weighting_bias = check.finite("weighting_bias", weighting_bias,
                                      expected="a finite number (the log-SNR where w = 1/2)")
        self.proposal = build_proposal(proposal)
        self.dequantize = dequantize
        self.weighting, self.weighting_bias = weighting, float(weighting_bias)

    def weight(self, flow: NDMFlow, t: Tensor) -> Tensor | float:
        """Training weight ``w(lambda_t)`` of the diffusion loss at times ``t`` (1 for ``"elbo"``)."""
        if self.weighting == "elbo":
            return 1.0
        return torch.sigmoid(self.weighting_bias - flow.schedule.log_snr(t))

    def diffusion_term(self, flow: NDMFlow, x: Tensor, generator: torch.Generator | None,
                       weighted: bool = False) -> Tensor:
        """One-sample estimate of ``L_diff`` per example; ``weighted``: of the weighted training loss."""
        raise NotImplementedError

    def terms(self, flow: NDMFlow, x: Tensor, generator: torch.Generator | None = None,
              weighted: bool = False) -> NELBOTerms:
        """One-sample estimates of ``L_rec``, ``L_diff`` (weighted by :meth:`weight` if ``weighted``), ``L_prior``
        for each example of ``x``."""
        if not isinstance(flow, NDMFlow):
            raise ConfigError(f"objective: the NELBO needs an 'ndm' flow, got {type(flow).__name__}")
        eps = draw_noise(x.shape, generator, x)
        return NELBOTerms(reconstruction_nll(flow, x, eps), self.diffusion_term(flow, x, generator, weighted),
                          prior_kl(flow, x))

    def loss(self, flow: NDMFlow, batch: Batch, generator: torch.Generator | None = None) -> Tensor:
        """Batch mean per dimension (nats) of the NELBO with the ``weighting``'s diffusion term, on dequantised
        data when ``dequantize`` is set."""
        if self.weighting != "elbo":
            learned = [name for name, part in (("transform", flow.transform), ("schedule", flow.schedule))
                       if any(p.requires_grad for p in part.parameters())]
            if learned:
                raise ConfigError(
                    f"weighting: {self.weighting!r} needs a fixed forward process, but the flow's "
                    f"{' and '.join(learned)} {'has' if len(learned) == 1 else 'have'} trainable parameters; a "
                    "weighted loss is no longer a bound, so a learned F or schedule collapses to cheat it (seen "
                    "with a learned F on digits: docs/benchmarks/ndm.md); use weighting='elbo'")
        x = batch.x
        if self.dequantize is not None:
            x = x + self.dequantize * draw_noise(x.shape, generator, x, "uniform")
        return self.terms(flow, x, generator, weighted=True).total.mean() / x[0].numel()


class DiscreteNELBO(NELBOObjective):
    """``nelbo``: ``T`` steps ``t(i) = i/T``, ``s(i) = (i-1)/T``; ``L_diff = E_{i ~ P}[KL_i / P(i)]``
    (``T E_i[KL_i]`` for the uniform proposal)."""

    def __init__(self, steps: int = 1000, proposal: str | dict[str, Any] | Proposal = "uniform",
                 dequantize: float | None = None, weighting: str = "elbo", weighting_bias: float = 2.0) -> None:
        steps = check.positive_int("steps", steps, expected="a positive integer number of diffusion steps T")
        super().__init__(proposal, dequantize, weighting, weighting_bias)
        self.steps = steps

    def diffusion_term(self, flow: NDMFlow, x: Tensor, generator: torch.Generator | None,
                       weighted: bool = False) -> Tensor:
        probs = self.proposal.step_probabilities(self.steps, flow)
        index = torch.multinomial(probs.to(draw_device(generator, "cpu")), x.shape[0], replacement=True,
                                  generator=generator).cpu()
        t = ((index + 1).double() / self.steps).to(device=x.device, dtype=x.dtype)
        s = (index.double() / self.steps).to(device=x.device, dtype=x.dtype)
        eps = draw_noise(x.shape, generator, x)
        kl = discrete_kl(flow, x, t, s, eps)
        if weighted:
            kl = self.weight(flow, t) * kl
        self.proposal.update(t, kl * self.steps)
        return kl / probs[index].to(device=x.device, dtype=x.dtype)


class ContinuousNELBO(NELBOObjective):
    """``nelbo-continuous``: ``L_diff^inf = E_{t ~ pi}[integrand(t) / pi(t)]`` (SPEC §3.3-3.4)."""

    def diffusion_term(self, flow: NDMFlow, x: Tensor, generator: torch.Generator | None,
                       weighted: bool = False) -> Tensor:
        t, density = self.proposal.sample(x.shape[0], flow, generator, x.device, x.dtype)
        eps = draw_noise(x.shape, generator, x)
        value = continuous_integrand(flow, x, t, eps)
        if weighted:
            value = self.weight(flow, t) * value
        self.proposal.update(t, value)
        return value / density
