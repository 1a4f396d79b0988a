"""Importance sampling of time for the NELBO (SPEC §3.4): piecewise-constant proposals on [0, 1].

A proposal ``pi`` is a positive weight per bin of a uniform partition of [0, 1] into ``bins`` cells. Drawing
``t ~ pi`` and weighting the integrand by ``1 / pi(t)`` is unbiased for any ``pi > 0``; a good ``pi`` follows the
loss scale. Discrete objectives use the induced probabilities of the T steps (:meth:`Proposal.step_probabilities`).

- ``uniform``: ``pi = 1``;
- ``logsnr``: ``pi`` proportional to ``|d lambda/dt|`` (uniform in log-SNR, where the NELBO integrand is flatter);
- ``adaptive``: ``pi`` proportional to the running root mean square of the per-bin loss (the variance-minimising
  choice for a piecewise-constant ``pi``), mixed with ``floor`` of the uniform law so it stays positive.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from diffflow_core import validation as check
from diffflow_core.errors import ConfigError, did_you_mean
from diffflow_core.tensors import draw_device

__all__ = ["Proposal", "build_proposal", "PROPOSALS"]

PROPOSALS = ("uniform", "logsnr", "adaptive")


class Proposal:
    """A piecewise-constant density on [0, 1] with ``bins`` cells."""

    def __init__(self, kind: str = "uniform", bins: int = 100, floor: float = 0.1, decay: float = 0.99) -> None:
        if kind not in PROPOSALS:
            raise ConfigError(f"proposal: unknown kind {kind!r}{did_you_mean(kind, PROPOSALS)}; "
                              f"expected one of {', '.join(PROPOSALS)}")
        bins = check.positive_int("proposal.bins", bins)
        floor = check.in_range("proposal.floor", floor, 0, 1, low_open=True, high_open=False)
        decay = check.in_range("proposal.decay", decay, 0, 1)
        self.kind, self.bins, self.floor, self.decay = kind, bins, floor, decay
        self.second_moment = torch.ones(bins, dtype=torch.float64)

    def weights(self, flow) -> Tensor:
        """Bin probabilities ``[bins]`` (sum 1), float64 on the CPU."""
        if self.kind == "uniform":
            return torch.full((self.bins,), 1.0 / self.bins, dtype=torch.float64)
        if self.kind == "logsnr":
            with torch.no_grad():
                edges = torch.linspace(0, 1, self.bins + 1, dtype=torch.float64)
                where = next((p.device for p in flow.schedule.parameters()), torch.device("cpu"))  # a learned one's
                lam = flow.schedule.log_snr(edges.to(where, torch.get_default_dtype())).double().cpu()
            raw = (lam[1:] - lam[:-1]).abs().nan_to_num(posinf=0.0)
        else:
            raw = self.second_moment.sqrt()
        raw = raw / raw.sum()
        return (1 - self.floor) * raw + self.floor / self.bins

    def sample(self, n: int, flow, generator: torch.Generator | None, device, dtype) -> tuple[Tensor, Tensor]:
        """``t [n]`` drawn from the proposal and the density ``pi(t) [n]`` at those times."""
        probs = self.weights(flow)
        where = draw_device(generator, "cpu")  # the proposal's state is on the CPU; a generator draws on its own device
        cells = torch.multinomial(probs.to(where), n, replacement=True, generator=generator).cpu()
        offset = torch.rand(n, generator=generator, dtype=torch.float64, device=where).cpu()
        t = (cells + offset) / self.bins
        return t.to(device=device, dtype=dtype), (probs[cells] * self.bins).to(device=device, dtype=dtype)

    def step_probabilities(self, steps: int, flow) -> Tensor:
        """``P(i)`` for the T steps ``i = 1..T`` with ``t(i) = i / T``: the mass of ``pi`` on ``((i-1)/T, i/T]``."""
        probs = self.weights(flow)
        cdf = torch.cat([probs.new_zeros(1), probs.cumsum(0)])
        grid = torch.linspace(0, 1, steps + 1, dtype=torch.float64) * self.bins
        cell = grid.floor().clamp(max=self.bins - 1).long()
        at = cdf[cell] + (grid - cell) * probs[cell]
        return (at[1:] - at[:-1]).clamp_min(1e-300)

    def update(self, t: Tensor, losses: Tensor) -> None:
        """Feed per-example (unweighted) losses at times ``t`` to the ``adaptive`` proposal's running moments."""
        if self.kind != "adaptive":
            return
        cells = (t.detach().double().cpu() * self.bins).long().clamp(0, self.bins - 1)
        sq = losses.detach().double().cpu() ** 2
        total = torch.zeros(self.bins, dtype=torch.float64).index_add_(0, cells, sq)
        count = torch.zeros(self.bins, dtype=torch.float64).index_add_(0, cells, torch.ones_like(sq))
        seen = count > 0
        self.second_moment[seen] = (self.decay * self.second_moment[seen]
                                    + (1 - self.decay) * total[seen] / count[seen])


def build_proposal(spec: str | dict[str, Any] | Proposal) -> Proposal:
    if isinstance(spec, Proposal):
        return spec
    params = dict(spec) if isinstance(spec, dict) else {"kind": spec}
    if "name" in params:
        params["kind"] = params.pop("name")
    return Proposal(**params)
