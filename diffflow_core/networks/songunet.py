"""The DDPM++ U-Net (Song et al. 2021, "Score-Based Generative Modeling through Stochastic Differential Equations")
at the layout EDM trains on CIFAR-10 (Karras et al. 2022, ``SongUNet`` with ``--arch=ddpmpp``) and ScoreFlow uses.

Layout, for ``len(mult)`` resolution levels (level ``i`` at ``H / 2^i``, ``channels * mult[i]`` channels):

- encoder: a 3x3 stem, then per level (after the first) a residual block that halves the resolution, and
  ``blocks`` residual blocks; every output is kept as a skip;
- bottleneck: two residual blocks, the first with self-attention;
- decoder: per level (from the coarsest) a residual block that doubles the resolution (not at the coarsest),
  then ``blocks + 1`` residual blocks, each taking one skip by concatenation; GroupNorm, SiLU and a 3x3
  convolution to the output channels.

A residual block is ``(skip(x) + conv(drop(act(norm(conv(act(norm(x))) + W emb)))) / sqrt(2)``, resampling (2x2
average pool down, nearest up) before its first convolution and in its skip, whose 1x1 projection exists when
the width changes or the block resamples. Blocks at the ``attention`` resolutions end with single- or multi-head
self-attention over the pixels, also residual and scaled by ``1 / sqrt(2)``. GroupNorm uses 32 groups where the
width allows (at most width / 4 groups, a divisor of the width). Weights start as EDM's: Xavier-uniform, zero
biases, the last convolution of every residual branch (and the output) scaled by 1e-5 so that each block
starts near the identity, the attention's query/key/value by sqrt(0.2).

The conditioning vector is the kernel's (:class:`~diffflow_core.networks.conditioning.Conditioning`): a noise
embedding of ``embedding_dim`` (default ``channels``) channels through a two-layer MLP to ``emb_mult * channels``,
plus a learned label embedding with a null row for classifier-free guidance. Differences from EDM's module, none
of which changes the layout or the parameter count by more than a few thousand: labels are an embedding table
added after the MLP (EDM: a linear map of the one-hot label added before it), and there is no augmentation
input.
"""
from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import Tensor, nn
from torch.nn import functional as F

from diffflow_core import validation as check
from diffflow_core.errors import ConfigError
from diffflow_core.networks.conditioning import Conditioning
from diffflow_core.networks.unet import image_shapes

__all__ = ["SongUNet"]

#: Residual sums are scaled by this so that a sum of two unit-variance branches keeps unit variance.
SKIP_SCALE = 1 / math.sqrt(2)
#: The initial scale of each residual branch's last layer (EDM's ``init_zero``): blocks start near the identity.
ZERO_INIT = 1e-5


def group_norm(channels: int, eps: float = 1e-6) -> nn.GroupNorm:
    """GroupNorm with the most groups up to 32 that keeps at least 4 channels per group and divides ``channels``."""
    groups = max(1, min(32, channels // 4))
    while channels % groups:
        groups -= 1
    return nn.GroupNorm(groups, channels, eps=eps)


def resample(x: Tensor, how: str | None) -> Tensor:
    """Halve (``"down"``: 2x2 average) or double (``"up"``: nearest) the resolution; ``None`` leaves ``x``."""
    if how == "down":
        return F.avg_pool2d(x, 2)
    if how == "up":
        return F.interpolate(x, scale_factor=2, mode="nearest")
    return x


class SelfAttention(nn.Module):
    """``x + proj(attention(q, k, v))`` over the ``H * W`` pixels, ``heads`` heads, q/k/v from one 1x1 conv."""

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = rearrange(self.qkv(self.norm(x)), "n (three h c) y x -> three n h (y x) c", three=3, h=self.heads)
        out = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj(rearrange(out, "n h (y x) c -> n (h c) y x", y=x.shape[2]))


class SongBlock(nn.Module):
    """The residual block of the module docstring, with optional resampling and self-attention at its end."""

    def __init__(self, cin: int, cout: int, emb_width: int | None, dropout: float, resampling: str | None = None,
                 attention: bool = False, heads: int = 1) -> None:
        super().__init__()
        self.dropout, self.resampling = dropout, resampling
        self.norm0 = group_norm(cin)
        self.conv0 = nn.Conv2d(cin, cout, 3, padding=1)
        self.affine = nn.Linear(emb_width, cout) if emb_width else None
        self.norm1 = group_norm(cout)
        self.conv1 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout or resampling else None
        self.attention = SelfAttention(cout, heads) if attention else None

    def forward(self, x: Tensor, emb: Tensor | None) -> Tensor:
        h = self.conv0(resample(F.silu(self.norm0(x)), self.resampling))
        if self.affine is not None:
            h = h + self.affine(emb)[:, :, None, None]
        h = self.conv1(F.dropout(F.silu(self.norm1(h)), self.dropout, self.training))
        x = resample(x, self.resampling)
        x = (h + (self.skip(x) if self.skip is not None else x)) * SKIP_SCALE
        return x if self.attention is None else self.attention(x) * SKIP_SCALE

    def zero_init(self) -> list[nn.Module]:
        """The layers that end a residual branch (scaled to start near zero)."""
        return [self.conv1] + ([self.attention.proj] if self.attention is not None else [])


class SongUNet(nn.Module):
    """``x [N, C, H, W] (, t [N], y [N]) -> [N, *out_shape]`` with ``out_shape = (C', H, W)``: the DDPM++ U-Net.

    Defaults are EDM's CIFAR-10 DDPM++ (``channels=128``, ``mult=(2, 2, 2)``, ``blocks=4``, attention at
    16x16, ``dropout=0.13``, positional noise embedding): about 56M parameters at 3x32x32. Small variants for
    tests and CPU runs shrink ``channels``, ``mult`` and ``blocks`` (e.g. ``channels=32, mult=(1, 2),
    blocks=1``). ``attention`` lists heights ``H / 2^i`` of levels that attend (their last block on each
    path); the bottleneck always attends. ``heads`` must divide every attending width. ``H`` and ``W`` must be
    divisible by ``2^(len(mult) - 1)``. ``time_embedding`` is ``positional`` (DDPM++; suits inputs ``t`` of
    order 1, as the score flow's ``c_noise = ln(sigma) / 4``), ``fourier`` (NCSN++, with ``fourier_scale``) or
    ``sinusoidal`` (DDPM's, for times in [0, 1]).
    """

    #: The constructor arguments at which ``diffflow list networks`` measures it (EDM's CIFAR-10 input).
    EXAMPLE = {"in_shape": (3, 32, 32)}

    def __init__(self, in_shape: tuple[int, ...] = (3, 32, 32), out_shape: tuple[int, ...] | None = None,
                 time_conditioned: bool = True, num_classes: int | None = None, channels: int = 128,
                 mult: tuple[int, ...] = (2, 2, 2), blocks: int = 4, attention: tuple[int, ...] = (16,),
                 heads: int = 1, dropout: float = 0.13, time_embedding: str = "positional",
                 embedding_dim: int | None = None, fourier_scale: float = 16.0, emb_mult: int = 4) -> None:
        super().__init__()
        mult = tuple(mult)
        if not mult:
            raise ConfigError(f"mult: expected a non-empty list of positive integers, got {mult!r}")
        for m in mult:
            check.positive_int("mult", m, expected=f"a non-empty list of positive integers; {mult!r} holds")
        in_shape, out_shape = image_shapes(in_shape, out_shape, len(mult))
        for field, value in (("channels", channels), ("blocks", blocks), ("heads", heads), ("emb_mult", emb_mult)):
            check.positive_int(field, value)
        check.in_range("dropout", dropout, 0, 1)
        heights = [in_shape[1] >> level for level in range(len(mult))]
        attention = tuple(attention)
        for res in attention:
            check.positive_int("attention", res, expected=f"a list of level heights; {attention!r} holds")
            if res not in heights:
                raise ConfigError(f"attention: {res!r} is not a resolution of this U-Net; its levels are "
                                  f"{', '.join(map(str, heights))} ({in_shape[1]}x{in_shape[2]} images, "
                                  f"{len(mult)} levels in mult)")
        widths = [channels * m for m in mult]
        for width in {w for w, h in zip(widths, heights) if h in attention} | {widths[-1]}:
            if width % heads:
                raise ConfigError(f"heads: {heads} heads do not divide the attending width {width}")
        self.out_shape = out_shape
        emb_width = emb_mult * channels
        self.cond = Conditioning(emb_width, time_conditioned, num_classes, time_embedding,
                                 embedding_dim if embedding_dim is not None else channels, fourier_scale)
        emb = emb_width if self.cond.active else None

        def block(cin: int, cout: int, **kwargs) -> SongBlock:
            return SongBlock(cin, cout, emb, dropout, heads=heads, **kwargs)

        self.stem = nn.Conv2d(in_shape[0], channels, 3, padding=1)
        self.encoder = nn.ModuleDict()
        skips, cout = [channels], channels
        for level, (width, height) in enumerate(zip(widths, heights)):
            name = f"{height}x{in_shape[2] >> level}"
            if level:
                self.encoder[f"{name}_down"] = block(cout, cout, resampling="down")
                skips.append(cout)
            for i in range(blocks):
                self.encoder[f"{name}_block{i}"] = block(cout, width, attention=height in attention)
                cout = width
                skips.append(cout)
        self.decoder = nn.ModuleDict()
        self.concat: set[str] = set()  # the decoder blocks that take a skip
        for level in reversed(range(len(mult))):
            width, height, name = widths[level], heights[level], f"{heights[level]}x{in_shape[2] >> level}"
            if level == len(mult) - 1:
                self.decoder[f"{name}_in0"] = block(cout, cout, attention=True)
                self.decoder[f"{name}_in1"] = block(cout, cout)
            else:
                self.decoder[f"{name}_up"] = block(cout, cout, resampling="up")
            for i in range(blocks + 1):
                key = f"{name}_block{i}"
                self.decoder[key] = block(cout + skips.pop(), width, attention=i == blocks and height in attention)
                self.concat.add(key)
                cout = width
        self.head = nn.Sequential(group_norm(cout), nn.SiLU(), nn.Conv2d(cout, out_shape[0], 3, padding=1))
        self._init_weights()

    def _init_weights(self) -> None:
        """EDM's initialisation (see the module docstring); the conditioning's label table keeps torch's."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        with torch.no_grad():
            blocks = [m for m in self.modules() if isinstance(m, SongBlock)]
            for layer in [layer for b in blocks for layer in b.zero_init()] + [self.head[-1]]:
                layer.weight.mul_(ZERO_INIT)
            for attention in (m for m in self.modules() if isinstance(m, SelfAttention)):
                attention.qkv.weight.mul_(math.sqrt(0.2))

    def forward(self, x: Tensor, t: Tensor | float | None = None, y: Tensor | None = None) -> Tensor:
        emb = self.cond(x, t, y)
        emb = F.silu(emb) if emb is not None else None
        h = self.stem(x)
        skips = [h]
        for layer in self.encoder.values():
            h = layer(h, emb)
            skips.append(h)
        for key, layer in self.decoder.items():
            if key in self.concat:
                h = torch.cat([h, skips.pop()], dim=1)
            h = layer(h, emb)
        return self.head(h)
