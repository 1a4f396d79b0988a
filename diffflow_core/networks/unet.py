"""A small DDPM-style U-Net for images (8x8 digits, 28x28 MNIST, 32x32): residual blocks with GroupNorm,
the time/noise embedding and optional class label added in every block, dropout, one skip per resolution."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from diffflow_core.errors import ConfigError
from diffflow_core.networks.conditioning import Conditioning


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(8, channels), channels)


def image_shapes(in_shape: tuple[int, ...], out_shape: tuple[int, ...] | None,
                 levels: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """A U-Net's ``(in_shape, out_shape)`` checked: images ``(C, H, W)`` in, the same ``H, W`` out (``out_shape``
    None: the input's), ``H`` and ``W`` divisible by ``2^(levels - 1)`` for ``levels`` resolutions."""
    in_shape = tuple(in_shape)
    out_shape = tuple(out_shape) if out_shape is not None else in_shape
    if len(in_shape) != 3:
        raise ConfigError(f"in_shape: the U-Net expects images (C, H, W), got {in_shape}")
    if len(out_shape) != 3 or out_shape[1:] != in_shape[1:]:
        raise ConfigError(f"out_shape: expected (C, {in_shape[1]}, {in_shape[2]}), got {out_shape}")
    factor = 2 ** (levels - 1)
    if levels < 1 or in_shape[1] % factor or in_shape[2] % factor:
        raise ConfigError(f"mult: {levels} levels need H and W divisible by {factor}, got {in_shape[1:]}")
    return in_shape, out_shape


class ResBlock(nn.Module):
    """``x + conv(drop(act(norm(conv(act(norm(x))) + emb))))``, with a 1x1 skip when channels change."""

    def __init__(self, cin: int, cout: int, emb_width: int | None, dropout: float) -> None:
        super().__init__()
        self.in_layers = nn.Sequential(_norm(cin), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1))
        self.emb = nn.Linear(emb_width, cout) if emb_width else None
        self.out_layers = nn.Sequential(_norm(cout), nn.SiLU(), nn.Dropout(dropout), nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor | None) -> Tensor:
        h = self.in_layers(x)
        if self.emb is not None and emb is not None:
            h = h + self.emb(emb)[:, :, None, None]
        return self.skip(x) + self.out_layers(h)


class UNet(nn.Module):
    """``x [N, C, H, W] (, t [N], y [N]) -> [N, *out_shape]`` with ``out_shape = (C', H, W)``.

    ``channels * mult[i]`` channels at resolution level ``i`` (``H / 2^i``); ``H`` and ``W`` must be divisible
    by ``2^(len(mult) - 1)``. ``blocks`` residual blocks per level on each path, ``dropout`` inside blocks.
    """

    #: The constructor arguments at which ``diffflow list networks`` measures it (MNIST padded to 32x32, as GPM).
    EXAMPLE = {"in_shape": (1, 32, 32)}

    def __init__(self, in_shape: tuple[int, ...] = (1, 28, 28), out_shape: tuple[int, ...] | None = None,
                 time_conditioned: bool = True, num_classes: int | None = None, channels: int = 32,
                 mult: tuple[int, ...] = (1, 2, 2), blocks: int = 1, dropout: float = 0.0,
                 time_embedding: str = "fourier", embedding_dim: int = 128, fourier_scale: float = 16.0) -> None:
        super().__init__()
        in_shape, out_shape = image_shapes(in_shape, out_shape, len(mult))
        if channels < 1 or blocks < 1 or not 0 <= dropout < 1:
            raise ConfigError(f"channels/blocks/dropout: expected positive, positive, [0, 1); got "
                              f"{channels}, {blocks}, {dropout}")
        self.out_shape = out_shape
        emb_width = 4 * channels
        self.cond = Conditioning(emb_width, time_conditioned, num_classes, time_embedding, embedding_dim,
                                 fourier_scale)
        emb = emb_width if self.cond.active else None
        widths = [channels * m for m in mult]
        self.stem = nn.Conv2d(in_shape[0], channels, 3, padding=1)
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        cin = channels
        for i, width in enumerate(widths):
            self.down.append(nn.ModuleList(ResBlock(cin if b == 0 else width, width, emb, dropout) for b in range(blocks)))
            cin = width
            self.downsample.append(nn.Conv2d(width, width, 3, stride=2, padding=1) if i < len(widths) - 1 else nn.Identity())
        self.middle = nn.ModuleList([ResBlock(cin, cin, emb, dropout), ResBlock(cin, cin, emb, dropout)])
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i, width in reversed(list(enumerate(widths))):
            self.up.append(nn.ModuleList(ResBlock(cin + width if b == 0 else width, width, emb, dropout)
                                         for b in range(blocks)))
            self.upsample.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                               nn.Conv2d(width, widths[i - 1], 3, padding=1)) if i > 0 else nn.Identity())
            cin = widths[i - 1] if i > 0 else width
        self.head = nn.Sequential(_norm(cin), nn.SiLU(), nn.Conv2d(cin, out_shape[0], 3, padding=1))

    def forward(self, x: Tensor, t: Tensor | float | None = None, y: Tensor | None = None) -> Tensor:
        emb = self.cond(x, t, y)
        h = self.stem(x)
        skips = []
        for blocks, down in zip(self.down, self.downsample):
            for block in blocks:
                h = block(h, emb)
            skips.append(h)
            h = down(h)
        for block in self.middle:
            h = block(h, emb)
        for blocks, up in zip(self.up, self.upsample):
            h = blocks[0](torch.cat([h, skips.pop()], dim=1), emb)
            for block in blocks[1:]:
                h = block(h, emb)
            h = up(h)
        return self.head(h)
