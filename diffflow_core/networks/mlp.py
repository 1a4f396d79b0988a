"""Multi-layer perceptron with an optional time embedding and class conditioning (GPM's 4x512 MLPs)."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from diffflow_core import validation as check
from diffflow_core.errors import ConfigError
from diffflow_core.networks.embeddings import as_batch_time, make_embedding

_ACTIVATIONS = {"silu": nn.SiLU, "relu": nn.ReLU, "leaky_relu": lambda: nn.LeakyReLU(0.2), "gelu": nn.GELU,
                "tanh": nn.Tanh}


class MLP(nn.Module):
    """``x [N, *in_shape] (, t [N], y [N]) -> [N, *out_shape]``.

    The flattened input is concatenated with a time embedding (``fourier`` or ``sinusoidal``) and, with
    ``num_classes``, a learned label embedding whose extra row ``num_classes`` is the null label used for
    classifier-free guidance.
    """

    def __init__(self, in_shape: tuple[int, ...] = (2,), out_shape: tuple[int, ...] | None = None,
                 hidden: int = 512, depth: int = 4, activation: str = "silu", time_conditioned: bool = True,
                 time_embedding: str = "fourier", embedding_dim: int = 128, fourier_scale: float = 16.0,
                 num_classes: int | None = None, output_scale: float = 1.0) -> None:
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ConfigError(f"activation: expected one of {sorted(_ACTIVATIONS)}, got {activation!r}")
        for name, value in (("hidden", hidden), ("depth", depth), ("embedding_dim", embedding_dim)):
            check.positive_int(name, value, expected=f"a positive integer (the MLP's {name})")
        self.in_shape = tuple(in_shape)
        self.out_shape = tuple(out_shape) if out_shape is not None else self.in_shape
        self.num_classes = num_classes
        width_in = math.prod(self.in_shape)
        self.embed = make_embedding(time_embedding, embedding_dim, fourier_scale) if time_conditioned else None
        width_in += embedding_dim if time_conditioned else 0
        self.label_embed = nn.Embedding(num_classes + 1, embedding_dim) if num_classes else None
        width_in += embedding_dim if num_classes else 0
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [nn.Linear(width_in if i == 0 else hidden, hidden), _ACTIVATIONS[activation]()]
        layers.append(nn.Linear(hidden, math.prod(self.out_shape)))
        self.body = nn.Sequential(*layers)
        self.output_scale = output_scale

    def forward(self, x: Tensor, t: Tensor | float | None = None, y: Tensor | None = None) -> Tensor:
        features = [x.flatten(1)]
        if self.embed is not None:
            features.append(self.embed(as_batch_time(t, x)))
        if self.label_embed is not None:
            labels = y if y is not None else torch.full((x.shape[0],), self.num_classes, device=x.device)
            features.append(self.label_embed(labels))
        out = self.body(torch.cat(features, dim=1) if len(features) > 1 else features[0])
        return (self.output_scale * out).reshape(x.shape[0], *self.out_shape)
