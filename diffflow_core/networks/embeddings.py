"""Time / noise-level embeddings: random Fourier features (GPM, SPEC §2.8; NCSN++) and sinusoidal (DDPM; EDM's
DDPM++ "positional")."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from diffflow_core.errors import ConfigError


class FourierEmbedding(nn.Module):
    """``[cos(2 pi w t), sin(2 pi w t)]`` with fixed frequencies ``w ~ N(0, scale^2)`` (``dim`` channels)."""

    def __init__(self, dim: int = 128, scale: float = 16.0) -> None:
        super().__init__()
        if dim % 2:
            raise ConfigError(f"embedding_dim: expected an even number, got {dim}")
        gen = torch.Generator().manual_seed(0)  # fixed features: same network for the same seed
        self.register_buffer("freqs", torch.randn(dim // 2, generator=gen) * scale)

    def forward(self, t: Tensor) -> Tensor:
        angles = 2 * math.pi * t[:, None] * self.freqs[None, :]
        return torch.cat([angles.cos(), angles.sin()], dim=1)


class SinusoidalEmbedding(nn.Module):
    """Transformer/DDPM sinusoidal embedding ``[cos(s t w_i), sin(s t w_i)]`` with geometric frequencies
    ``w_i = max_period ** (-i / (half - endpoint))``, ``i < half = dim / 2``.

    The defaults (``time_scale = 1000``, no endpoint) are DDPM's, for ``t`` in [0, 1]; ``time_scale = 1`` with
    ``endpoint`` is EDM's DDPM++ "positional" embedding of ``c_noise = ln(sigma) / 4``, whose frequencies run
    from 1 down to exactly ``1 / max_period``.
    """

    def __init__(self, dim: int = 128, max_period: float = 10_000.0, time_scale: float = 1000.0,
                 endpoint: bool = False) -> None:
        super().__init__()
        if dim % 2 or dim < 2 + 2 * endpoint:
            raise ConfigError(f"embedding_dim: expected an even number{' of at least 4' if endpoint else ''}, "
                              f"got {dim}")
        half = dim // 2
        self.time_scale = time_scale
        self.register_buffer("freqs", torch.exp(-math.log(max_period) * torch.arange(half) / (half - endpoint)))

    def forward(self, t: Tensor) -> Tensor:
        angles = self.time_scale * t[:, None] * self.freqs[None, :]
        return torch.cat([angles.cos(), angles.sin()], dim=1)


def make_embedding(kind: str, dim: int, scale: float) -> nn.Module:
    """The embedding named by a network's ``time_embedding``: ``fourier`` (random features of scale ``scale``),
    ``sinusoidal`` (DDPM's, for times in [0, 1]) or ``positional`` (EDM's DDPM++, for ``c_noise``)."""
    if kind == "fourier":
        return FourierEmbedding(dim, scale)
    if kind == "sinusoidal":
        return SinusoidalEmbedding(dim)
    if kind == "positional":
        return SinusoidalEmbedding(dim, time_scale=1.0, endpoint=True)
    raise ConfigError(f"time_embedding: expected 'fourier', 'sinusoidal' or 'positional', got {kind!r}")


def as_batch_time(t: Tensor | float | None, x: Tensor) -> Tensor:
    """``t`` as a ``[N]`` tensor on ``x``'s device and dtype."""
    if t is None:
        raise ConfigError("t: this network is time-conditioned; call it as net(x, t)")
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    return t.expand(x.shape[0]) if t.ndim == 0 else t.reshape(x.shape[0])
