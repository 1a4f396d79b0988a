"""The MMD gradient flow (SPEC §2.1 table, row ``1/2 MMD^2``; Arbel et al. 2019).

For particles ``x_1..x_N`` and fixed target samples ``y_1..y_M`` the velocity is

``v(x_i) = (1/M) sum_m grad_1 k(x_i, y_m) - (1/N) sum_j grad_1 k(x_i, x_j) = -d/dx_i [N * 1/2 MMD^2]``

(the gradient of the witness function; SPEC §2.11.5 checks it against autograd). Both sums are one fused pair
reduction (:mod:`diffflow_kl.interactions`) over row blocks, so memory is O((N + M) * chunk). With ``noise > 0``
the witness gradient is evaluated at ``x_i + noise * u_i``, ``u ~ N(0, I)`` (noise injection, which helps the
flow escape local optima), drawn from the solve's generator (the sampling context), so a seed fixes the whole
run and the flow holds no RNG state.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from diffflow_core import validation as check
from diffflow_core.data import load_dataset
from diffflow_core.errors import missing_data
from diffflow_core.interfaces import Flow, SamplingContext, check_steps
from diffflow_core.tensors import draw_noise
from diffflow_kl.interactions import kernel_sums
from diffflow_kl.kernels import RadialKernel, make_kernel

__all__ = ["MMDFlow"]


class MMDFlow(Flow):
    """MMD flow towards ``points`` fixed data samples (drawn once with ``seed``).

    ``kernel``: ``gaussian`` (``bandwidth`` one value or a list: a sum of Gaussians), ``imq`` (``scale``),
    ``laplace`` (``bandwidth``), ``energy`` (``-||x - y||``), a dict ``{"name": ..., **params}`` or a kernel.
    ``horizon``: the flow time sampled over; ``noise``: the injection level; ``chunk``: rows per block.
    """

    #: the drift's repulsion term is a kernel sum over the particle batch
    interacting = True

    def __init__(self, data: Any = None, kernel: str | dict | RadialKernel = "gaussian",
                 bandwidth: float | Sequence[float] | None = None, scale: float | None = None,
                 points: int = 2000, seed: int = 0, horizon: float = 100.0, noise: float = 0.0,
                 chunk: int | None = None, event_shape: tuple[int, ...] = (2,)) -> None:
        super().__init__()
        params = {k: v for k, v in (("bandwidth", bandwidth), ("scale", scale)) if v is not None}
        self.kernel = make_kernel(kernel, **params)
        if data is None:
            raise missing_data("the MMD flow needs target samples")
        points = check.integer("points", points, 2)
        horizon, noise = check.positive("horizon", horizon), check.non_negative("noise", noise)
        dataset = load_dataset(data)
        self.register_buffer("targets", dataset.sample(points, torch.Generator().manual_seed(int(seed))))
        self.event_shape = tuple(event_shape)
        self.horizon, self.noise, self.chunk, self.seed = horizon, noise, chunk, int(seed)

    def witness_grad(self, z: Tensor, x: Tensor) -> Tensor:
        """``grad`` of the witness ``E_p k(., y) - E_rho k(., x)`` at ``z`` (``x`` the particles): one gradient sum
        over the targets and the particles together, weighted ``1/M`` and ``-1/N``."""
        y = self.targets.to(dtype=x.dtype, device=x.device)
        m, n = y.shape[0], x.shape[0]
        weights = torch.cat([x.new_full((m,), 1.0 / m), x.new_full((n,), -1.0 / n)])
        _, grad = kernel_sums(self.kernel, z, torch.cat([y, x]), weights=weights, chunk=self.chunk)
        return grad

    def drift(self, x: Tensor, t: Tensor, context: SamplingContext) -> Tensor:
        z = x
        if self.noise > 0:
            z = x + self.noise * draw_noise(x.shape, context.generator, x)
        return self.witness_grad(z, x)

    def time_grid(self, steps: int) -> Tensor:
        check_steps(steps)
        return torch.linspace(0.0, self.horizon, steps + 1, dtype=torch.float64)
