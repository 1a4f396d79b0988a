"""Score flows with a closed-form denoiser in place of the network: the exact-score references of the tests
and of ``benchmarks/score_quality.py`` (SPEC §2.11.1-2)."""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn

from diffflow_core.tensors import per_sample
from diffflow_score.flow import ScoreFlow
from diffflow_score.schedules import SCHEDULES

__all__ = ["ExactNetwork", "gaussian_denoiser", "exact_flow"]


class ExactNetwork(nn.Module):
    """The native output of a parameterisation from a VE denoiser ``D(x, sigma) = E[y | y + sigma eps = x]``.

    Called ``net(x, t)`` by a flow built with ``precondition=False``: EDM gets ``D(x; t)``; VP/VE get
    ``eps_hat = (x - alpha D(x / alpha; sigma)) / std``, since ``x_t / alpha = y + sigma eps``.
    """

    def __init__(self, denoiser: Callable[[Tensor, Tensor], Tensor], parameterisation: str, **schedule: Any) -> None:
        super().__init__()
        self.denoiser, self.parameterisation = denoiser, parameterisation
        self.schedule = SCHEDULES[parameterisation](**schedule)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        if self.parameterisation == "edm":
            return self.denoiser(x, t)
        alpha, std = per_sample(self.schedule.alpha(t), x), per_sample(self.schedule.std(t), x)
        return (x - alpha * self.denoiser(x / alpha, self.schedule.sigma(t))) / std


def gaussian_denoiser(s: float) -> Callable[[Tensor, Tensor], Tensor]:
    """The ideal denoiser of data ``N(0, s^2 I)``: ``D(x; sigma) = s^2 x / (s^2 + sigma^2)`` (SPEC §2.11.1)."""

    def denoise(x: Tensor, sigma: Tensor) -> Tensor:
        sigma = per_sample(torch.as_tensor(sigma, dtype=x.dtype, device=x.device).expand(x.shape[0]), x)
        return s ** 2 * x / (s ** 2 + sigma ** 2)

    return denoise


def exact_flow(denoiser: Callable[[Tensor, Tensor], Tensor], parameterisation: str = "edm",
               event_shape: tuple[int, ...] = (1,), mode: str = "ode", **schedule: Any) -> ScoreFlow:
    """A :class:`ScoreFlow` whose network is the closed-form ``denoiser`` (e.g. ``dataset.denoise``)."""
    net = ExactNetwork(denoiser, parameterisation, **schedule)
    return ScoreFlow(parameterisation, mode=mode, network=net, precondition=False, event_shape=event_shape,
                     **schedule)
