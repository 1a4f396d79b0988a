"""A residual convolutional critic for small images: ``x [N, C, H, W] (, t, y) -> logit``.

Built for the time-conditioned discriminator of a Discriminator Flow (SPEC §2.8, eq 20, GPM Algorithm 3), where
the particles move along ``grad_x f(x, t)`` (eq 16): the drift at a pixel should depend on that pixel and its
neighbours (removing the per-pixel noise of the ``N(0, I)`` start needs an ``x``-dependent gradient at every
pixel), which 3x3 convolutions with shared weights give cheaply and a flattening MLP must learn pixel by pixel.

Layout, as a U-Net encoder: a 3x3 stem, then per resolution level ``blocks`` residual blocks at
``channels * mult[i]`` channels, each with the time/label embedding added between its two convolutions, and a
strided 3x3 convolution halving the resolution between levels; a linear read-out of the flattened last level
keeps where the features are. No normalisation layers: a batch norm would couple the samples of a batch and
break the per-sample gradient penalty, and the critic's gradient magnitude is itself what moves the particles.
"""
from __future__ import annotations

import math

from torch import Tensor, nn

from diffflow_core import validation as check
from diffflow_core.errors import ConfigError
from diffflow_core.networks.conditioning import Conditioning

__all__ = ["ConvCritic"]


class CriticBlock(nn.Module):
    """``skip(x) + conv(act(conv(act(x)) + W emb))`` (``skip`` is a 1x1 convolution when the width changes)."""

    def __init__(self, cin: int, cout: int, emb_width: int | None, slope: float) -> None:
        super().__init__()
        self.act = nn.LeakyReLU(slope)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.emb = nn.Linear(emb_width, cout) if emb_width else None
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor | None) -> Tensor:
        h = self.conv1(self.act(x))
        if self.emb is not None:
            h = h + self.emb(emb)[:, :, None, None]
        return self.skip(x) + self.conv2(self.act(h))


class ConvCritic(nn.Module):
    """``x [N, C, H, W] (, t [N], y [N]) -> [N, *out_shape]``, a scalar per sample (``out_shape`` ``()`` or ``(1,)``).

    ``channels * mult[i]`` channels at level ``i`` (resolution ``H / 2^i``; ``H`` and ``W`` must be divisible by
    ``2^(len(mult) - 1)``), ``blocks`` residual blocks per level, LeakyReLU with negative ``slope``; the
    conditioning (``time_embedding``, ``embedding_dim``, ``fourier_scale``, labels) is the U-Net's, projected to
    ``emb_width`` (default ``4 * channels``).
    """

    def __init__(self, in_shape: tuple[int, ...] = (1, 8, 8), out_shape: tuple[int, ...] | None = (),
                 time_conditioned: bool = True, num_classes: int | None = None, channels: int = 32,
                 mult: tuple[int, ...] = (1, 2), blocks: int = 1, slope: float = 0.2,
                 time_embedding: str = "fourier", embedding_dim: int = 128, fourier_scale: float = 16.0,
                 emb_width: int | None = None) -> None:
        super().__init__()
        in_shape = tuple(in_shape)
        out_shape = tuple(out_shape) if out_shape is not None else ()
        if len(in_shape) != 3:
            raise ConfigError(f"in_shape: the critic expects images (C, H, W), got {in_shape}")
        if math.prod(out_shape) != 1:
            raise ConfigError(f"out_shape: a critic returns one logit per sample; pass () or (1,), got {out_shape}")
        mult = tuple(mult)
        if not mult:
            raise ConfigError(f"mult: expected a non-empty list of positive integers, got {mult!r}")
        for m in mult:
            check.positive_int("mult", m, expected=f"a non-empty list of positive integers; {mult!r} holds")
        factor = 2 ** (len(mult) - 1)
        if in_shape[1] % factor or in_shape[2] % factor:
            raise ConfigError(f"mult: {mult} has {len(mult)} levels, which need H and W divisible by {factor}; "
                              f"the images are {in_shape[1]}x{in_shape[2]}")
        for field, value in (("channels", channels), ("blocks", blocks)):
            check.positive_int(field, value)
        if not 0 <= slope < 1:
            raise ConfigError(f"slope: expected a LeakyReLU negative slope in [0, 1), got {slope!r}")
        self.out_shape = out_shape
        width = emb_width if emb_width is not None else 4 * channels
        self.cond = Conditioning(width, time_conditioned, num_classes, time_embedding, embedding_dim, fourier_scale)
        emb = width if self.cond.active else None
        widths = [channels * m for m in mult]
        self.stem = nn.Conv2d(in_shape[0], channels, 3, padding=1)
        self.levels, self.downsample = nn.ModuleList(), nn.ModuleList()
        cin = channels
        for i, w in enumerate(widths):
            self.levels.append(nn.ModuleList(CriticBlock(cin if b == 0 else w, w, emb, slope) for b in range(blocks)))
            cin = w
            if i < len(widths) - 1:
                self.downsample.append(nn.Conv2d(w, widths[i + 1], 3, stride=2, padding=1))
                cin = widths[i + 1]
        self.act = nn.LeakyReLU(slope)
        self.readout = nn.Linear(cin * (in_shape[1] // factor) * (in_shape[2] // factor), 1)

    def forward(self, x: Tensor, t: Tensor | float | None = None, y: Tensor | None = None) -> Tensor:
        emb = self.cond(x, t, y)
        h = self.stem(x)
        for i, blocks in enumerate(self.levels):
            for block in blocks:
                h = block(h, emb)
            if i < len(self.downsample):
                h = self.downsample[i](self.act(h))
        return self.readout(self.act(h).flatten(1)).reshape(x.shape[0], *self.out_shape)
