"""The small parts the plugin's objectives are composed from (``gan``, ``discriminator-flow``, ``generated-dsm``).

* what an objective needs of the model's smoother, checked by capability before any training, never by class:
  a generator smoother (:func:`require_generator`: it offers the Int-PM surrogate of SPEC §2.3 eq 11) or free
  particles (:func:`require_free_particles`: the smoother declares that samples integrate the flow);
* what it needs of the flow (:func:`require_discriminator`: a logit and a GAN loss, SPEC §2.4);
* :class:`Handoff`, the one piece of state that passes between two players of an iteration;
* the check of the Adam betas the objectives share (:func:`check_betas`).
"""
from __future__ import annotations

from typing import Any

import attrs

from diffflow_core import validation as check
from diffflow_core.errors import ConfigError
from diffflow_core.interfaces import Smoother

__all__ = ["Handoff", "require_generator", "require_free_particles", "require_discriminator",
           "check_betas"]


def _name(smoother: Smoother) -> str:
    return getattr(smoother, "name", type(smoother).__name__)


def require_generator(smoother: Smoother, objective: str) -> Any:
    """``smoother`` when it is a generator ``g(z)`` that a drift moves through its NTK (SPEC §2.3): it draws
    latents (``sample_latent``), maps them (a call) and offers the surrogate loss whose gradient is
    ``-E[J^T v]`` (``surrogate_loss``, eq 11); otherwise a one-line ConfigError naming ``smoother``."""
    if not all(callable(getattr(smoother, attr, None)) for attr in ("surrogate_loss", "sample_latent")):
        raise ConfigError(f"smoother: objective {objective!r} trains a generator through the 'generator' smoother "
                          f"(surrogate_loss, eq 11), got {_name(smoother)!r}; for free particles (a Discriminator "
                          "Flow) use objective 'discriminator-flow'")
    return smoother


def require_free_particles(smoother: Smoother, objective: str) -> Smoother:
    """``smoother`` when its samples are the solver's solution of the flow from its prior
    (:attr:`Smoother.integrates_flow`), the particles Algorithm 3 simulates in training; otherwise a one-line
    ConfigError naming ``smoother``."""
    if not getattr(smoother, "integrates_flow", False):
        raise ConfigError(f"smoother: objective {objective!r} trains on free particles and needs the 'identity' "
                          f"smoother, got {_name(smoother)!r}; for a generator (a GAN) use objective 'gan'")
    return smoother


def require_discriminator(flow: Any, objective: str) -> None:
    """Refuse a flow without a discriminator logit ``f(x, t)`` and a GAN loss ``(a, b, c)`` (SPEC §2.4)."""
    if not (callable(getattr(flow, "logit", None)) and hasattr(flow, "loss") and hasattr(flow, "net")):
        raise ConfigError(f"flow: objective {objective!r} needs a discriminator flow (with logit, loss and net), "
                          f"got {type(flow).__name__}")


def check_betas(field: str, betas: Any) -> tuple[float, float]:
    """Two Adam betas in ``[0, 1)``."""
    betas = tuple(betas)
    if len(betas) != 2:
        raise ConfigError(f"{field}: expected two Adam betas in [0, 1), got {betas!r}")
    expected = f"two Adam betas in [0, 1); {betas!r} holds"
    return check.in_range(field, betas[0], 0, 1, expected=expected), check.in_range(field, betas[1], 0, 1,
                                                                                   expected=expected)


@attrs.define
class Handoff:
    """A draw that one player's loss leaves for the next player's loss in the same training iteration.

    The trainer calls the players in order, so with ``reuse_particles`` the GAN's generator step moves the
    particles ``g(z)`` the discriminator step just saw (their graph kept), and with simultaneous updates the
    Score GAN's generator step reuses the score step's draw ``(x, sigma, x_tilde, D_rho(x_tilde))``. It holds at
    most one draw: :meth:`put` replaces it (a player repeated within an iteration leaves its last draw, and the
    Score GAN's generator, stepping every ``score_steps`` iterations, reads the latest) and :meth:`take` empties
    it, so a draw and its graph live no longer than one iteration.
    """

    draw: tuple | None = None

    def put(self, *draw: Any) -> None:
        self.draw = draw

    def take(self) -> tuple | None:
        """The draw left by the previous player, or None when there is none."""
        draw, self.draw = self.draw, None
        return draw
