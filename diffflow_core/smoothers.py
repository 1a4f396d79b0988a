"""Built-in smoothers: ``identity`` (free particles) and ``generator`` (Int-PM, SPEC §2.3)."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, jvp, vjp

from diffflow_core.errors import ConfigError
from diffflow_core.interfaces import Flow, IdentitySmoother, SamplingContext, Smoother
from diffflow_core.tensors import draw_noise

__all__ = ["IdentitySmoother", "GeneratorSmoother"]


class GeneratorSmoother(Smoother, nn.Module):
    """Particles are ``g_theta(z)``: a drift moves them through the generator's NTK (SPEC eqs 10-14).

    One explicit step of size ``dt`` is one optimiser step on ``theta`` for the surrogate loss
    ``L(theta) = -E_z <stopgrad(v(g(z))), g_theta(z)>`` (eq 10/16). With plain SGD of learning rate ``dt``
    the particles move by ``dt * A[v] + O(dt^2)`` where ``A[v](z) = J(z) E_z'[J(z')^T v(z')]`` (eq 13) is
    :meth:`operator`, computed exactly with ``torch.func`` (a VJP then a JVP; no per-sample Jacobians).

    ``network`` is a generator module or a network spec (``{"name": "mlp", ...}``) built for
    ``latent_dim -> event_shape``.
    """

    name = "generator"

    def __init__(self, network: nn.Module | dict[str, Any] | str = "mlp", latent_dim: int = 128,
                 event_shape: tuple[int, ...] = (2,), batch_size: int = 128, optimizer: str = "sgd",
                 lr: float | None = None, betas: tuple[float, float] = (0.5, 0.999)) -> None:
        nn.Module.__init__(self)
        if latent_dim < 1:
            raise ConfigError(f"latent_dim: expected a positive integer, got {latent_dim!r}")
        if optimizer not in ("sgd", "adam"):
            raise ConfigError(f"optimizer: expected 'sgd' or 'adam', got {optimizer!r}")
        self.latent_dim = int(latent_dim)
        self.event_shape = tuple(event_shape)
        self.batch_size = int(batch_size)
        self.optimizer_name, self.lr, self.betas = optimizer, lr, tuple(betas)
        if isinstance(network, nn.Module):
            self.net = network
        else:
            from diffflow_core.networks import build_network

            self.net = build_network(network, in_shape=(self.latent_dim,), out_shape=self.event_shape,
                                     time_conditioned=False)
        self._optimizer: torch.optim.Optimizer | None = None
        self.z: Tensor | None = None

    # -- particles -----------------------------------------------------------------------------------
    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``z ~ N(0, I)`` on the generator network's device, drawn by :func:`~diffflow_core.tensors.draw_noise` (the
        trainer's generator is a CPU one)."""
        return draw_noise((n, self.latent_dim), generator, next(self.net.parameters()))

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Fresh particles ``g_theta(z)``, ``z ~ N(0, I)``: one network evaluation (1 NFE)."""
        return self(self.sample_latent(n, generator))

    def init_particles(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Fix the latents ``z`` the particles are attached to and return ``g_theta(z)``."""
        self.z = self.sample_latent(n, generator)
        with torch.no_grad():
            return self(self.z)

    # -- the Int-PM --------------------------------------------------------------------------------------
    def surrogate_loss(self, flow: Flow | None, z: Tensor | None, t: Tensor | None, x: Tensor | None = None,
                       drift: Tensor | None = None, context: SamplingContext | None = None) -> Tensor:
        """``-E_z <stopgrad(v(g(z), t)), g(z)>``: its theta-gradient is ``-E_z[J^T v]`` (eq 11).

        ``x`` is ``g(z)`` when the caller already evaluated it with its graph (saves one generator pass);
        ``drift`` is ``v`` at ``x`` when the caller already has it (then ``flow``, ``t`` and ``context`` are not
        used)."""
        x = self(z) if x is None else x
        v = (flow.evaluate_drift(x.detach(), t, context) if drift is None else drift).detach()
        return -(v * x).flatten(1).sum(1).mean()

    def operator(self, v: Tensor, z: Tensor) -> Tensor:
        """Exact ``A[v](z) = J(z) E_z'[J(z')^T v(z')]`` for values ``v`` given at ``g(z)`` (eq 13)."""
        params = {k: p.detach() for k, p in self.net.named_parameters()}
        buffers = dict(self.net.named_buffers())

        def g(p: dict[str, Tensor]) -> Tensor:
            return functional_call(self.net, (p, buffers), (z,))

        _, pullback = vjp(g, params)
        (tangent,) = pullback(v / z.shape[0])
        _, moved = jvp(g, (params,), (tangent,))
        return moved

    def velocity(self, flow: Flow, x: Tensor, t: Tensor, context: SamplingContext) -> Tensor:
        if self.z is None or self.z.shape[0] != x.shape[0]:
            raise ConfigError("generator smoother: call init_particles(n) before integrating its particles")
        return self.operator(flow.evaluate_drift(x, t, context).detach(), self.z)

    def optimizer(self, lr: float) -> torch.optim.Optimizer:
        if self._optimizer is None:
            params = list(self.net.parameters())
            self._optimizer = (torch.optim.SGD(params, lr=lr) if self.optimizer_name == "sgd"
                               else torch.optim.Adam(params, lr=lr, betas=self.betas))
        for group in self._optimizer.param_groups:
            group["lr"] = lr
        return self._optimizer

    def advance(self, flow: Flow, x: Tensor, t: Tensor, dt: Tensor, context: SamplingContext) -> Tensor:
        """One optimiser step on theta with learning rate ``|dt|`` (or the fixed ``lr``); returns the new ``g(z)``.

        On a decreasing grid (``dt < 0``) the surrogate loss changes sign, so the particles move by
        ``dt * A[v]`` like free particles move by ``dt * v``.
        """
        if self.z is None:
            raise ConfigError("generator smoother: call init_particles(n) before integrating its particles")
        opt = self.optimizer(self.lr if self.lr is not None else float(abs(dt)))
        opt.zero_grad(set_to_none=True)
        sign = -1.0 if float(dt) < 0 else 1.0
        with torch.enable_grad():
            (sign * self.surrogate_loss(flow, self.z, t, context=context)).backward()
        opt.step()
        with torch.no_grad():
            return self(self.z)
