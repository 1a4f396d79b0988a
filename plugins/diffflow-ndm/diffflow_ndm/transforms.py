"""Forward transforms ``F_phi(x, t)`` of Neural Diffusion Models (SPEC §3.1, §3.5) and their registry.

Every transform maps data ``x [N, *shape]`` and times ``t [N]`` to ``F [N, *shape]``.
:meth:`Transform.with_time_derivative` returns ``(F, dF/dt)`` in one forward-mode pass (SPEC §3.4, a JVP in
``t`` only), differentiable in ``x`` and in the transform's parameters, as the continuous NELBO needs.

Names: ``identity`` (DDPM/VDM/flow matching), ``learned`` (NDM), ``linear`` (a fixed matrix or a blur, soft /
blurring diffusion), ``encoder`` (a time-independent learned encoder with its decoder, latent-diffusion-like).
Third parties add their own with :func:`register_transform`.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import Tensor, nn
from torch.func import jvp

from diffflow_core.errors import ConfigError
from diffflow_core.networks import build_network
from diffflow_core.specs import from_spec
from diffflow_core.tensors import per_sample

__all__ = ["Transform", "IdentityTransform", "LearnedTransform", "LinearTransform", "EncoderTransform",
           "TRANSFORMS", "register_transform", "build_transform", "blur_matrix"]


class Transform(nn.Module):
    """``F(x, t)``; by default ``F(x, 0) = x``, so the Gaussian decoder ``p(x | z_0)`` is centred at ``z_0 / alpha_0``."""

    #: Whether ``F`` depends on ``t`` (a time-independent one has ``dF/dt = 0`` without a JVP).
    time_dependent: bool = True
    #: Whether ``F(x, 0) = x`` holds exactly: then ``L_rec`` needs no evaluation of ``F`` (no network pass).
    identity_at_zero: bool = True

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        raise NotImplementedError

    def with_time_derivative(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """``(F(x, t), dF/dt(x, t))`` by ``jvp(t -> F(x, t), (t,), (1,))`` (SPEC §3.4)."""
        if not self.time_dependent:
            value = self(x, t)
            return value, torch.zeros_like(value)
        t = t.contiguous()  # forward-mode AD rejects expanded (stride-0) inputs
        return jvp(lambda tt: self(x, tt), (t,), (torch.ones_like(t),))

    def decode(self, u: Tensor) -> Tensor:
        """Mean of the decoder ``p(x | z_0)`` given ``u = z_0 / alpha_0``: ``u`` itself when ``F(x, 0) = x``."""
        return u

    def decoder_log_scale(self, default: Tensor) -> Tensor:
        """Log standard deviation of the Gaussian decoder; ``log(sigma_0 / alpha_0)`` matches ``q(z_0 | x)``."""
        return default


class IdentityTransform(Transform):
    """``F(x, t) = x``: DDPM, DDIM, VDM and flow matching (SPEC §3.5)."""

    time_dependent = False

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return x


class LearnedTransform(Transform):
    """NDM's ``F(x, t) = (1 - t) x + t Fbar_phi(x, t)`` (SPEC §3.1) with any registered network; ``F(x, 0) = x``
    holds exactly.

    With ``residual`` (the default) ``Fbar = x + gate * net(x, t)`` with a learned scalar ``gate`` starting at 0:
    the same family of transforms, but training starts from ``F = x`` (the plain diffusion model) and departs
    from it only where that lowers the NELBO.
    """

    def __init__(self, event_shape: tuple[int, ...], network: str | dict[str, Any] | nn.Module = "mlp",
                 residual: bool = True) -> None:
        super().__init__()
        self.net = build_network(network, in_shape=tuple(event_shape), out_shape=tuple(event_shape),
                                 time_conditioned=True)
        self.gate = nn.Parameter(torch.zeros(())) if residual else None

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        t_col = per_sample(t, x)
        out = self.net(x, t)
        f_bar = out if self.gate is None else x + self.gate.to(x.dtype) * out
        return (1 - t_col) * x + t_col * f_bar


def blur_matrix(side: int, width: float) -> Tensor:
    """A ``side x side`` row-stochastic Gaussian blur of standard deviation ``width`` pixels."""
    idx = torch.arange(side, dtype=torch.float64)
    weights = torch.exp(-0.5 * ((idx[:, None] - idx[None, :]) / width) ** 2)
    return weights / weights.sum(1, keepdim=True)


class LinearTransform(Transform):
    """A fixed linear transform ``F(x, t) = (1 - t) x + t M x`` (soft / blurring diffusion, SPEC §3.5).

    ``matrix`` is any ``D x D`` matrix acting on flattened particles; ``blur=w`` builds a separable Gaussian
    blur of width ``w`` pixels for images ``[C, H, W]`` instead.
    """

    def __init__(self, event_shape: tuple[int, ...], matrix: Sequence[Sequence[float]] | Tensor | None = None,
                 blur: float | None = None) -> None:
        super().__init__()
        dims = math.prod(event_shape)
        if (matrix is None) == (blur is None):
            raise ConfigError("transform linear: expected exactly one of 'matrix' (D x D) or 'blur' (a width)")
        if blur is not None:
            if len(event_shape) != 3 or not blur > 0:
                raise ConfigError(f"transform linear: blur needs images [C, H, W] and a positive width, got "
                                  f"event_shape={tuple(event_shape)}, blur={blur!r}")
            channels, height, width = event_shape
            block = torch.kron(blur_matrix(height, blur), blur_matrix(width, blur))
            matrix = torch.block_diag(*[block] * channels)
        matrix = torch.as_tensor(matrix, dtype=torch.float32)
        if matrix.shape != (dims, dims):
            raise ConfigError(f"transform linear: matrix: expected shape ({dims}, {dims}), got {tuple(matrix.shape)}")
        self.register_buffer("matrix", matrix)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        mixed = (x.flatten(1) @ self.matrix.to(x.dtype).T).reshape(x.shape)
        t_col = per_sample(t, x)
        return (1 - t_col) * x + t_col * mixed


class EncoderTransform(Transform):
    """A time-independent learned encoder ``F(x, t) = E_phi(x) = x + Ebar(x)`` with its decoder
    ``D(u) = u + Dbar(u)`` and a learned decoder scale (LSGM-like latent diffusion, SPEC §3.5)."""

    time_dependent = False
    identity_at_zero = False

    def __init__(self, event_shape: tuple[int, ...], network: str | dict[str, Any] = "mlp") -> None:
        super().__init__()
        shape = tuple(event_shape)
        self.encoder = build_network(network, in_shape=shape, out_shape=shape, time_conditioned=False)
        self.decoder = build_network(network, in_shape=shape, out_shape=shape, time_conditioned=False)
        self.log_scale = nn.Parameter(torch.tensor(math.log(0.1)))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return x + self.encoder(x)

    def decode(self, u: Tensor) -> Tensor:
        return u + self.decoder(u)

    def decoder_log_scale(self, default: Tensor) -> Tensor:
        return self.log_scale.to(default.dtype).expand_as(default)


TRANSFORMS: dict[str, type[Transform]] = {"identity": IdentityTransform, "learned": LearnedTransform,
                                          "linear": LinearTransform, "encoder": EncoderTransform}


def register_transform(name: str, cls: type[Transform]) -> None:
    """Add a transform class under ``name`` (constructed as ``cls(event_shape=..., **params)`` when it takes it)."""
    if name in TRANSFORMS:
        raise ConfigError(f"transform: name {name!r} is already registered ({TRANSFORMS[name].__name__})")
    if not (isinstance(cls, type) and issubclass(cls, Transform)):
        raise ConfigError(f"transform: expected a Transform subclass for {name!r}, got {cls!r}")
    TRANSFORMS[name] = cls


def build_transform(spec: str | dict[str, Any] | Transform, event_shape: tuple[int, ...]) -> Transform:
    """A transform from a name, ``{"name": ..., **params}`` or an instance."""
    return from_spec("transform", TRANSFORMS, spec, Transform, context={"event_shape": tuple(event_shape)})
