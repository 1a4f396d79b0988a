"""DCGAN-style bodies (SPEC §2.10) at GPM's sizes (``gpm/networks/conv/dcgan.py``): a generator ``latent -> image``
of transposed convolutions and a discriminator ``image (+ t) -> logit`` of strided convolutions, for 8x8, 28x28,
32x32 and 64x64 images.

Both halve (or double) the resolution ``k`` times, where ``k`` is the largest count with ``H / 2^k`` an integer
of at least 4 (8 -> 4, 28 -> 7, 32 -> 4, 64 -> 4); the channel width doubles at every coarser level. At 32x32 and
``width=64`` both are GPM's MNIST networks (512 channels at 4x4); at 64x64 (GPM's CelebA) the generator's output
layer and the discriminator's first layer do the outermost doubling / halving, so the widths stay the same.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from diffflow_core import validation as check
from diffflow_core.errors import ConfigError
from diffflow_core.networks.conditioning import Conditioning

__all__ = ["DCGANGenerator", "DCGANDiscriminator", "init_normal"]


def _levels(shape: tuple[int, ...], what: str) -> int:
    if len(shape) != 3 or shape[1] != shape[2] or shape[1] < 4:
        raise ConfigError(f"{what}: expected square images (C, H, H) with H >= 4, got {shape}")
    k, size = 0, shape[1]
    while size % 2 == 0 and size // 2 >= 4:
        size //= 2
        k += 1
    return k


def _outer_layer_resamples(shape: tuple[int, ...]) -> bool:
    """Whether the layer at full resolution (generator output, discriminator input) changes the resolution:
    from 64x64 on, as GPM's 64x64 DCGAN, so that the widths at 4x4 are those of the 32x32 networks."""
    return shape[1] >= 64


def init_normal(module: nn.Module, std: float | None) -> None:
    """GPM's (and DCGAN's) initialisation when ``std`` is given: the weights of every convolution and linear layer
    drawn from ``N(0, std^2)``, their biases zero (``std = 0.02`` in GPM's MNIST GANs); torch's default otherwise."""
    if std is None:
        return
    check.positive("init_std", std, expected="a positive standard deviation or None")
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(layer.weight, 0.0, std)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    raise ConfigError(f"norm: expected 'batch' or 'none', got {kind!r}")


class DCGANGenerator(nn.Module):
    """``z [N, *in_shape] (, t, y) -> [N, C, H, H]``: a linear map to ``width 2^h x s0 x s0``, then ``h``
    transposed 4x4 convolutions (each doubling the resolution, halving the channels), BN + ReLU, and an output
    layer to ``C`` channels with ``tanh`` (``output='tanh'``) or no squashing (``'linear'``).

    Below 64x64 the output layer is a 3x3 convolution and ``h = k``; from 64x64 on it is a transposed 4x4
    convolution that makes the last doubling, and ``h = k - 1`` (GPM's 64x64 generator). The linear map is
    GPM's 4x4 transposed convolution of the ``1 x 1`` latent; the convolutions before batch norms keep biases
    (redundant under BN, 448 parameters at ``width=64``) so checkpoints of this layout still load.
    ``init_std`` (e.g. GPM's 0.02) draws the weights from ``N(0, init_std^2)`` (:func:`init_normal`).
    """

    #: The constructor arguments at which ``diffflow list networks`` measures it (GPM's MNIST generator).
    EXAMPLE = {"in_shape": (128,), "out_shape": (1, 32, 32)}

    def __init__(self, in_shape: tuple[int, ...] = (128,), out_shape: tuple[int, ...] | None = None,
                 time_conditioned: bool = False, num_classes: int | None = None, width: int = 64,
                 norm: str = "batch", output: str = "tanh", embedding_dim: int = 128,
                 init_std: float | None = None) -> None:
        super().__init__()
        if out_shape is None:
            raise ConfigError("out_shape: the DCGAN generator needs the image shape (C, H, H)")
        if output not in ("tanh", "linear"):
            raise ConfigError(f"output: expected 'tanh' or 'linear', got {output!r}")
        self.out_shape = tuple(out_shape)
        k = _levels(self.out_shape, "out_shape")
        upsampling_output = _outer_layer_resamples(self.out_shape)
        hidden = k - upsampling_output
        self.start = (width * 2**hidden, self.out_shape[1] // 2**k)
        self.cond = Conditioning(embedding_dim, time_conditioned, num_classes)
        features = math.prod(in_shape) + (embedding_dim if self.cond.active else 0)
        channels, size = self.start
        self.project = nn.Sequential(nn.Linear(features, channels * size * size))
        layers: list[nn.Module] = [_norm(norm, channels), nn.ReLU()]
        for _ in range(hidden):
            layers += [nn.ConvTranspose2d(channels, channels // 2, 4, stride=2, padding=1),
                       _norm(norm, channels // 2), nn.ReLU()]
            channels //= 2
        layers.append(nn.ConvTranspose2d(channels, self.out_shape[0], 4, stride=2, padding=1) if upsampling_output
                      else nn.Conv2d(channels, self.out_shape[0], 3, padding=1))
        if output == "tanh":
            layers.append(nn.Tanh())
        self.body = nn.Sequential(*layers)
        init_normal(self, init_std)

    def forward(self, z: Tensor, t: Tensor | float | None = None, y: Tensor | None = None) -> Tensor:
        features = z.flatten(1)
        cond = self.cond(z, t, y)
        if cond is not None:
            features = torch.cat([features, cond], dim=1)
        channels, size = self.start
        return self.body(self.project(features).reshape(z.shape[0], channels, size, size))


class DCGANDiscriminator(nn.Module):
    """``x [N, C, H, H] (, t, y) -> [N, *out_shape]`` (a logit: pass ``out_shape=()`` or ``(1,)``).

    A first convolution to ``width`` channels without normalisation (3x3 at full resolution; from 64x64 on a
    strided 4x4 that halves it), then strided 4x4 convolutions doubling the channels down to ``H / 2^k``, all
    with LeakyReLU(0.2) (BatchNorm after the strided ones with ``norm='batch'``, as GPM's GAN; none by default,
    as its Discriminator Flow). The time/label embedding is added as a per-channel bias after each convolution
    (GPM modulates scale and shift from the same embedding); a linear read-out of the flattened features (GPM's
    final 4x4 valid convolution) gives the logit.
    ``init_std`` as for the generator.
    """

    #: The constructor arguments at which ``diffflow list networks`` measures it (GPM's MNIST discriminator).
    EXAMPLE = {"in_shape": (1, 32, 32), "out_shape": ()}

    def __init__(self, in_shape: tuple[int, ...] = (1, 28, 28), out_shape: tuple[int, ...] | None = (),
                 time_conditioned: bool = False, num_classes: int | None = None, width: int = 64,
                 norm: str = "none", embedding_dim: int = 128, time_embedding: str = "fourier",
                 fourier_scale: float = 16.0, init_std: float | None = None) -> None:
        super().__init__()
        self.in_shape = tuple(in_shape)
        self.out_shape = tuple(out_shape) if out_shape is not None else ()
        if self.out_shape == self.in_shape:
            raise ConfigError(f"out_shape: a discriminator returns logits; pass out_shape=() or (1,), got {out_shape}")
        k = _levels(self.in_shape, "in_shape")
        downsampling_input = _outer_layer_resamples(self.in_shape)
        self.cond = Conditioning(embedding_dim, time_conditioned, num_classes, time_embedding, embedding_dim,
                                 fourier_scale)
        first = nn.Conv2d(self.in_shape[0], width, 4, stride=2, padding=1) if downsampling_input \
            else nn.Conv2d(self.in_shape[0], width, 3, padding=1)
        self.convs, self.norms = nn.ModuleList([first]), nn.ModuleList([nn.Identity()])
        channels = width
        for _ in range(k - downsampling_input):
            self.convs.append(nn.Conv2d(channels, 2 * channels, 4, stride=2, padding=1))
            self.norms.append(_norm(norm, 2 * channels))
            channels *= 2
        self.biases = nn.ModuleList(nn.Linear(embedding_dim, conv.out_channels) if self.cond.active else nn.Identity()
                                    for conv in self.convs)
        self.act = nn.LeakyReLU(0.2)
        size = self.in_shape[1] // 2**k
        self.readout = nn.Linear(channels * size * size, max(1, math.prod(self.out_shape)))
        init_normal(self, init_std)

    def forward(self, x: Tensor, t: Tensor | float | None = None, y: Tensor | None = None) -> Tensor:
        cond = self.cond(x, t, y)
        h = x
        for conv, norm, bias in zip(self.convs, self.norms, self.biases):
            h = norm(conv(h))
            if cond is not None:
                h = h + bias(cond)[:, :, None, None]
            h = self.act(h)
        return self.readout(h.flatten(1)).reshape(x.shape[0], *self.out_shape)
