"""The ``discriminator`` flow: particles ascend ``h = -c(f(x, t))`` with gradient strength eta (SPEC §2.4, §2.8).

Without time conditioning the discriminator ``f(x)`` is a GAN's (smoothed by a generator, SPEC §2.3); with it,
``f(x, t)`` is the single time-conditioned discriminator of a Discriminator Flow (eq 20, Algorithm 3), whose
particles start at ``N(0, I)`` at ``t = 0`` and move by ``x <- x + (eta / N) grad h(x, k / N)``.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn

from diffflow_core import validation as check
from diffflow_core.errors import ConfigError
from diffflow_core.interfaces import Flow, SamplingContext, as_time, check_steps
from diffflow_core.tensors import draw_noise
from diffflow_discriminator.losses import GanLoss, get_loss

__all__ = ["DiscriminatorFlow", "DEFAULT_NETWORK", "logit_gradient"]

#: GPM's toy discriminator: MLP 4x512, leaky ReLU, Fourier time features (128 channels, scale 16).
DEFAULT_NETWORK = {"name": "mlp", "hidden": 512, "depth": 4, "activation": "leaky_relu"}


def logit_gradient(logit: Callable[[Tensor], Tensor], x: Tensor, potential: Callable[[Tensor], Tensor]) -> Tensor:
    """``grad_x potential(logit(x))`` per particle. ``autograd.grad`` with respect to ``x`` only runs the backward
    nodes on the path to ``x``: no weight gradient is computed. No graph is kept, unless ``x`` itself requires
    grad: then the gradient is differentiable in ``x`` (the divergence of the likelihood's probability-flow ODE,
    SPEC §1.7, differentiates the drift)."""
    with torch.enable_grad():
        track = x.requires_grad
        x = x if track else x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(potential(logit(x)).sum(), x, create_graph=track)
    return grad


class DiscriminatorFlow(Flow):
    """Drift ``v(x, t) = eta * grad_x(-c(f(x, t)))`` of a learned discriminator ``f`` (eqs 16, 20).

    ``network`` is a spec for :func:`diffflow_core.networks.build_network` (scalar output); ``loss`` a name of
    :data:`diffflow_discriminator.losses.LOSSES`; ``time_conditioned`` gives ``f`` the time input of a
    Discriminator Flow; ``grid`` names a registered time grid on ``[0, 1]`` used for sampling (uniform as in
    GPM, any other increasing grid as an option); ``init_std`` re-initialises linear weights with
    ``N(0, init_std^2)`` (GPM's GAN) and zero biases.

    ``sigma_max > 0`` makes it DiffFlow's GAN row in discriminator-logit form (SPEC §1.2, §1.4, §1.6): the
    discriminator at time ``t`` separates the particles from the data smoothed by ``sigma(t) = sigma_max (1 - t)``
    (VE, :meth:`smooth`), so at the optimum ``f = d_t = log q_sigma(t) - log p_t`` and the drift is
    ``eta D grad d`` (``vanilla``: beta = gamma = D) or ``eta (1 - D) grad d`` (``non-saturating``).
    """

    def __init__(self, network: dict[str, Any] | str | nn.Module = DEFAULT_NETWORK, loss: str | GanLoss = "vanilla",
                 eta: float = 1.0, time_conditioned: bool = True, event_shape: tuple[int, ...] = (2,),
                 grid: str | dict[str, Any] = "uniform", init_std: float | None = None, sigma_max: float = 0.0) -> None:
        super().__init__()
        sigma_max = check.non_negative("sigma_max", sigma_max, expected="a smoothing level >= 0")
        if sigma_max and not time_conditioned:
            raise ConfigError("sigma_max: data smoothing needs a time-conditioned (noise-conditioned) discriminator")
        self.sigma_max = float(sigma_max)
        eta = check.positive("eta", eta, expected="a positive gradient strength")
        if init_std is not None:
            check.positive("init_std", init_std, expected="a positive standard deviation or None")
        self.loss = get_loss(loss)
        self.eta = float(eta)
        self.time_conditioned = bool(time_conditioned)
        # Trained at t = k/N < 1 only (Algorithm 3), and the DiffFlow rows' sigma(1) = 0: solvers treat t = 1 as
        # a singular end (Heun's last step is Euler, no noise on the last Euler-Maruyama step), so f(., 1) is
        # never evaluated.
        self.singular_end = self.time_conditioned
        self.event_shape = tuple(event_shape)
        self.grid = {"name": grid} if isinstance(grid, str) else dict(grid)
        from diffflow_core.networks import build_network

        self.net = build_network(network, in_shape=self.event_shape, out_shape=(1,),
                                 time_conditioned=self.time_conditioned)
        if init_std is not None:
            for m in self.net.modules():
                if isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, 0.0, init_std)
                    nn.init.zeros_(m.bias)

    # -- the discriminator and its potential ---------------------------------------------------------
    def logit(self, x: Tensor, t: Tensor | float | None = None) -> Tensor:
        """``f(x, t)`` ``[N]`` (``t`` is ignored without time conditioning)."""
        if self.time_conditioned:
            if t is None:
                raise ConfigError("t: this discriminator is time-conditioned; call logit(x, t)")
            return self.net(x, as_time(t, x)).reshape(x.shape[0])
        return self.net(x).reshape(x.shape[0])

    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        """``eta * grad_x h(x, t)`` with ``h = -c(f)`` (eq 16)."""
        return self.eta * self.potential_gradient(x, t, self.loss.potential)

    def potential_gradient(self, x: Tensor, t: Tensor, potential: Callable[[Tensor], Tensor]) -> Tensor:
        """``grad_x potential(f(x, t))`` per particle (:func:`logit_gradient`)."""
        return logit_gradient(lambda y: self.logit(y, t), x, potential)

    def smooth(self, real: Tensor, t: Tensor, generator: torch.Generator | None) -> Tensor:
        """Data seen by the discriminator at times ``t`` ``[N]``: ``y + sigma(t) eps`` (SPEC §1.6 step a)."""
        if not self.sigma_max:
            return real
        sigma = self.sigma(t).reshape(-1, *([1] * (real.ndim - 1)))
        return real + sigma * draw_noise(real.shape, generator, real)

    def sigma(self, t: Tensor) -> Tensor:
        """The smoothing level ``sigma(t) = sigma_max (1 - t)``."""
        return self.sigma_max * (1 - torch.as_tensor(t))

    #: Fraction of [0, 1] on which the discriminator drives the particles (TDPM's GAN phase is shorter).
    gan_horizon: float = 1.0

    # -- sampling conventions ------------------------------------------------------------------------
    def time_grid(self, steps: int) -> Tensor:
        """``steps + 1`` increasing times from 0 to 1 from the registered grid ``self.grid``."""
        check_steps(steps)
        from diffflow_core.plugins import registry

        params = {k: v for k, v in self.grid.items() if k != "name"}
        times = torch.as_tensor(registry("grids").get(self.grid["name"])(steps, **params), dtype=torch.float32)
        if times.shape != (steps + 1,) or not bool((times[1:] > times[:-1]).all()) \
                or abs(float(times[0])) > 1e-6 or abs(float(times[-1]) - 1) > 1e-6:
            raise ConfigError(f"grid: {self.grid['name']!r} must give {steps + 1} increasing times from 0 to 1, "
                              f"got {times.tolist()[:4]}...")
        return times

    @torch.no_grad()
    def simulate(self, x0: Tensor, k: Tensor, steps: int, generator: torch.Generator | None = None) -> Tensor:
        """``z_k`` per particle: ``k[i]`` uniform Euler steps of size ``1/steps`` from ``x0[i]`` (Algorithm 3 step 2).

        Particles do not interact, so each one is only advanced until its own ``k``: particles are sorted by
        ``k`` (descending) and step ``j`` moves the prefix with ``k > j``, about half the work of simulating
        every particle for ``steps - 1`` steps. A stochastic flow adds ``g(t) sqrt(dt) eps`` (Euler-Maruyama);
        the drift gets the simulation's :class:`SamplingContext` (``generator``, step ``j`` of ``steps``).
        """
        if k.shape != x0.shape[:1]:
            raise ConfigError(f"k: expected one step count per particle, shape {tuple(x0.shape[:1])}, got {tuple(k.shape)}")
        order = torch.argsort(k, descending=True)
        counts = k[order].tolist()
        x = x0[order].clone()
        active = len(counts)
        for j in range(counts[0] if counts else 0):
            while counts[active - 1] <= j:  # counts[0] > j: the prefix never empties
                active -= 1
            self._euler_step(x[:active], j, steps, generator)  # a view: the step writes into x
        out = torch.empty_like(x)
        out[order] = x
        return out

    @torch.no_grad()
    def trajectories(self, x0: Tensor, horizon: int, steps: int, generator: torch.Generator | None = None) -> Tensor:
        """``[horizon, N, ...]``: the states ``z_0 .. z_{horizon-1}`` of each particle of ``x0`` along one
        simulation with ``steps`` uniform Euler steps on ``[0, 1]`` (the steps of :meth:`simulate`)."""
        states = torch.empty(horizon, *x0.shape, dtype=x0.dtype, device=x0.device)
        states[0] = x0
        for j in range(horizon - 1):
            states[j + 1] = states[j]
            self._euler_step(states[j + 1], j, steps, generator)
        return states

    def _euler_step(self, x: Tensor, j: int, steps: int, generator: torch.Generator | None) -> None:
        """Step ``j`` of ``steps`` in place: ``x += v(x, j/steps) dt (+ g sqrt(dt) eps)``."""
        dt = 1.0 / steps
        t = torch.tensor(j * dt, dtype=x.dtype, device=x.device)
        x.add_(self.evaluate_drift(x, t, SamplingContext(generator, step=j, steps=steps)), alpha=dt)
        scale = float(self.diffusion(t)) * dt ** 0.5
        if scale:  # no draw where the noise is 0 (deterministic flows, TDPM's GAN phase)
            x.add_(draw_noise(x.shape, generator, x), alpha=scale)
