"""Tensor helpers every family needs."""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["per_sample", "draw_device", "draw_noise", "NOISE_KINDS"]


def per_sample(values: Tensor, like: Tensor) -> Tensor:
    """Per-sample values ``[N]`` shaped ``[N, 1, ..., 1]`` to broadcast against particles ``like [N, *shape]``."""
    return values.reshape(-1, *([1] * (like.ndim - 1)))


def draw_device(generator: torch.Generator | None, fallback: torch.device | str) -> torch.device | str:
    """Where a draw with ``generator`` must happen: a generator draws only on its own device, so a CPU generator
    that drives CUDA particles draws on the CPU (the caller moves the result); ``fallback`` without one."""
    return generator.device if generator is not None else fallback


def _sign(shape: tuple[int, ...], *, generator: torch.Generator | None, device: torch.device | str,
          dtype: torch.dtype) -> Tensor:
    return torch.randint(0, 2, shape, generator=generator, device=device, dtype=dtype) * 2 - 1


#: what :func:`draw_noise` draws: standard normal, uniform on [0, 1), and Rademacher signs (+-1, Hutchinson's probes)
NOISE_KINDS = {"normal": torch.randn, "uniform": torch.rand, "sign": _sign}


def draw_noise(shape: tuple[int, ...] | torch.Size, generator: torch.Generator | None, like: Tensor,
          kind: str = "normal") -> Tensor:
    """Random numbers of ``shape`` for use with ``like`` (particles, times): the one rule for every seeded draw.

    The draw is made in ``like``'s dtype on :func:`draw_device` (the generator's device, ``like``'s without a
    generator), then moved to ``like``'s device. The numbers therefore depend only on the generator, its state
    and the dtype, never on where the particles live: a CPU generator drives particles on a GPU with the numbers
    it gives CPU particles, so two code paths that draw with one seed agree. The dtype is kept rather than a
    float32 draw cast, so float64 particles get full-precision noise (likelihoods and closed-form tests).
    """
    if kind not in NOISE_KINDS:
        raise ValueError(f"kind: expected one of {', '.join(NOISE_KINDS)}, got {kind!r}")
    draw = NOISE_KINDS[kind](tuple(shape), generator=generator, device=draw_device(generator, like.device),
                             dtype=like.dtype)
    return draw.to(like.device)
