"""GAN losses as ``(a, b, c)`` triples (SPEC §2.4, eqs 15-16).

The discriminator maximises ``E_p[a(f(y))] - E_rho[b(f(x))]`` (eq 15); the generator, or the particles,
descend ``c(f(x))`` (eq 16), i.e. they follow ``grad h`` with ``h = -c o f``. At the optimum of the vanilla
discriminator ``f = log(p / rho)`` and, with ``D = sigmoid(f)``:

* ``vanilla`` (saturating, G minimises ``log(1 - D)``): ``c(u) = -softplus(u)``, ``grad h = D grad f``;
* ``non-saturating`` (G maximises ``log D``):         ``c(u) = softplus(-u)``, ``grad h = (1 - D) grad f``;
* ``wgan`` (IPM) and ``hinge``:                        ``c(u) = -u``,           ``grad h = grad f``.

Every loss keeps the convention "high on real data" (S1 writes the IPM critic with the opposite sign).
:class:`DiscriminatorLoss` is eq 15 negated plus the penalties: the one discriminator loss of both objectives
of this plugin, ``gan`` (generated particles) and ``discriminator-flow`` (simulated particles).
"""
from __future__ import annotations

from typing import Any, Callable

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffflow_core import validation as check
from diffflow_core.errors import ConfigError, did_you_mean
from diffflow_core.tensors import draw_noise

__all__ = ["GanLoss", "LOSSES", "DiscriminatorLoss", "batch_normalised", "get_loss", "gradient_penalty", "r1_penalty"]

Fn = Callable[[Tensor], Tensor]


@attrs.frozen
class GanLoss:
    """One row of the SPEC §2.4 table: ``a`` scores real data, ``b`` generated data, ``c`` is the generator loss."""

    name: str
    a: Fn
    b: Fn
    c: Fn

    def discriminator_loss(self, real: Tensor, fake: Tensor) -> Tensor:
        """``E[b(f(fake))] - E[a(f(real))]``: the negated objective of eq 15, minimised by the discriminator."""
        return self.b(fake).mean() - self.a(real).mean()

    def potential(self, logits: Tensor) -> Tensor:
        """``h = -c(f)`` (eq 16): the particles ascend it."""
        return -self.c(logits)

    def slopes(self, logits: Tensor) -> tuple[Tensor, Tensor]:
        """``(b'(f), h'(f))`` per sample: the weights of ``grad_x f`` in the discriminator loss's gradient at a
        generated point and in the particle drift, whose ratio turns one into the other."""
        with torch.enable_grad():
            f = logits.detach().requires_grad_(True)
            (db,) = torch.autograd.grad(self.b(f).sum(), f)
            (dh,) = torch.autograd.grad(self.potential(f).sum(), f)
        return db, dh


def _identity(u: Tensor) -> Tensor:
    return u


def _neg(u: Tensor) -> Tensor:
    return -u


LOSSES: dict[str, GanLoss] = {
    "vanilla": GanLoss("vanilla", F.logsigmoid, F.softplus, lambda u: -F.softplus(u)),
    "non-saturating": GanLoss("non-saturating", F.logsigmoid, F.softplus, lambda u: F.softplus(-u)),
    "wgan": GanLoss("wgan", _identity, _identity, _neg),
    "hinge": GanLoss("hinge", lambda u: -F.relu(1 - u), lambda u: F.relu(1 + u), _neg),
}


def get_loss(name: str | GanLoss) -> GanLoss:
    """The loss named ``name`` (a :class:`GanLoss` is returned as is)."""
    if isinstance(name, GanLoss):
        return name
    if name not in LOSSES:
        raise ConfigError(f"loss: unknown GAN loss {name!r}{did_you_mean(str(name), LOSSES)}; "
                          f"expected one of {', '.join(LOSSES)}")
    return LOSSES[name]


def gradient_penalty(logit: Callable[[Tensor, Tensor | None], Tensor], real: Tensor, fake: Tensor,
                     t: Tensor | None, generator: torch.Generator | None, center: float = 0.0) -> Tensor:
    """``E[(||grad_x f(x_hat, t)|| - c0)^2]`` at ``x_hat = alpha real + (1 - alpha) fake``, ``alpha ~ U(0, 1)``
    per sample (SPEC §2.8 step 4; WGAN-GP has ``c0 = 1``, GPM's Discriminator Flows ``c0 = 0``)."""
    shape = (real.shape[0],) + (1,) * (real.ndim - 1)
    alpha = draw_noise(shape, generator, real, "uniform")
    x_hat = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(logit(x_hat, t).sum(), x_hat, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - center).pow(2).mean()


def r1_penalty(real_logits: Tensor, real: Tensor) -> Tensor:
    """``E[||grad_x f(y)||^2]`` over data points ``y`` (the R1 penalty), from ``real_logits = f(real)`` computed
    with ``real`` requiring grad; the graph is kept so the discriminator's weights get its gradient.

    Unlike :func:`gradient_penalty` it acts on the data only: it flattens the discriminator around the data
    without constraining it between data and particles, so the drift of eq 16 still pulls stray particles
    back while it fades as the generated law reaches the data's."""
    (grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
    return grad.flatten(1).pow(2).sum(1).mean()


def batch_normalised(net: nn.Module) -> bool:
    """Whether ``net`` normalises by batch statistics in training (a batch-norm layer in train mode): its output for
    a point then depends on the batch the point is in. Such a discriminator is trained on real and fake batches
    apart (as DCGAN does): the generator's drift evaluates it on fakes alone, and a discriminator trained on joint
    batches would be normalised by other statistics there (measured: a DCGAN discriminator with batch norm then
    wins outright and the generator collapses, docs/benchmarks/mnist.md)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training for m in net.modules())


@attrs.frozen
class DiscriminatorLoss:
    """``E[b(f(fake, t))] - E[a(f(real, t))] + gp_weight * GP + r1_weight / 2 * R1``: eq 15 negated plus penalties.

    ``f`` and ``(a, b)`` are a discriminator flow's ``logit`` and ``loss``; real and fake points are evaluated at
    the same times ``t`` (``None`` for a discriminator without time input). ``gp_weight`` and ``gp_center`` (c0)
    set the penalty on interpolates (:func:`gradient_penalty`, SPEC §2.8 step 4); ``r1_weight`` (gamma) the
    penalty on the data points alone (:func:`r1_penalty`). A GAN and a Discriminator Flow differ only in where
    their fake points come from (a generator, eq 10; a simulation of the flow, Algorithm 3), so both objectives
    call this one loss.
    """

    gp_weight: float = check.attrs_field(check.non_negative, default=0.0)
    gp_center: float = check.attrs_field(check.finite, default=0.0)
    r1_weight: float = check.attrs_field(check.non_negative, default=0.0)

    def __call__(self, flow: Any, real: Tensor, fake: Tensor, t: Tensor | None,
                 generator: torch.Generator | None) -> Tensor:
        """The loss with ``fake`` detached: a step of the discriminator alone."""
        return self.with_logits(flow, real, fake.detach(), t, generator)[0]

    def with_logits(self, flow: Any, real: Tensor, fake: Tensor, t: Tensor | None,
                    generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """The loss keeping ``fake``'s graph (the penalties never see it), and the fake points' logits (detached):
        one backward then also reaches whatever made ``fake`` (the GAN's simultaneous updates)."""
        if self.r1_weight:
            real = real.detach().requires_grad_(True)
        if batch_normalised(flow.net):  # real and fake apart, as the generator's drift sees the fakes alone
            real_logits, logits = flow.logit(real, t), flow.logit(fake, t)
        else:  # one pass over both
            times = None if t is None else torch.cat([t, t])
            real_logits, logits = flow.logit(torch.cat([real, fake]), times).split(real.shape[0])
        loss = flow.loss.discriminator_loss(real_logits, logits)
        if self.gp_weight:
            loss = loss + self.gp_weight * gradient_penalty(flow.logit, real, fake, t, generator, self.gp_center)
        if self.r1_weight:
            loss = loss + self.r1_weight / 2 * r1_penalty(real_logits, real)
        return loss, logits.detach()
