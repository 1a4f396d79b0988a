"""2-D toy laws without a closed-form density, each a vectorised seeded sampler (the usual flow benchmarks).

Every class draws its fixed train/test split from one generator seeded with ``seed`` and draws fresh points
with :meth:`SampledDataset.sample`. Shapes and scales follow the common FFJORD-style conventions, so the
laws span roughly [-4, 4]^2.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from diffflow_core import validation as check
from diffflow_core.data.base import Dataset
from diffflow_core.errors import ConfigError

__all__ = ["SampledDataset", "Moons", "Circles", "Checkerboard", "SwissRoll", "Pinwheel"]


def _uniform(n: int, generator: torch.Generator | None, low: float = 0.0, high: float = 1.0) -> Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)


class SampledDataset(Dataset):
    """A law known only through its sampler :meth:`draw`; the split is ``n_train`` then ``n_test`` draws.

    ``noise`` overrides the std of the Gaussian jitter of the laws that have one (class attribute ``noise``).
    """

    noise: float | None = None

    def __init__(self, n_train: int = 100_000, n_test: int = 10_000, seed: int = 0, noise: float | None = None):
        for field, value in (("n_train", n_train), ("n_test", n_test)):
            check.integer(field, value, 2)
        if noise is not None:
            if type(self).noise is None:
                raise ConfigError(f"noise: dataset '{self.name}' has no noise parameter")
            self.noise = check.number("noise", noise, 0)
        generator = torch.Generator().manual_seed(int(seed))
        train = self.sample(n_train, generator)
        super().__init__(train, self.sample(n_test, generator), split=f"independent draws (seed {seed})")

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` fresh float32 points of the law."""
        return self.draw(n, generator).float()

    def draw(self, n: int, generator: torch.Generator | None) -> Tensor:
        raise NotImplementedError

    def _jitter(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        return x + self.noise * torch.randn(x.shape, generator=generator, dtype=torch.float64)


class Moons(SampledDataset):
    """Two interleaved half circles (as scikit-learn's ``make_moons``), scaled by 2 and centred."""

    name = "moons"
    noise = 0.1

    def draw(self, n, generator):
        t = _uniform(n, generator, 0.0, math.pi)
        upper = torch.rand(n, generator=generator) < 0.5
        x = torch.where(upper, torch.cos(t), 1 - torch.cos(t))
        y = torch.where(upper, torch.sin(t), 0.5 - torch.sin(t))
        points = self._jitter(torch.stack([x, y], dim=1), generator)
        return 2 * points - torch.tensor([1.0, 0.5], dtype=torch.float64)


class Circles(SampledDataset):
    """Two concentric circles of radius 3 and 1.5, equally likely."""

    name = "circles"
    noise = 0.08

    def draw(self, n, generator):
        angle = _uniform(n, generator, 0.0, 2 * math.pi)
        radius = torch.where(torch.rand(n, generator=generator) < 0.5, 1.0, 0.5).double()
        points = radius[:, None] * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
        return 3 * self._jitter(points, generator)


class Checkerboard(SampledDataset):
    """Uniform on the 8 black squares of a 4x4 checkerboard over [-4, 4]^2."""

    name = "checkerboard"

    def draw(self, n, generator):
        x = _uniform(n, generator, -2.0, 2.0)
        row = torch.randint(0, 2, (n,), generator=generator).double()
        y = _uniform(n, generator) - 2 * row + torch.floor(x) % 2
        return 2 * torch.stack([x, y], dim=1)


class SwissRoll(SampledDataset):
    """The 2-D swiss roll ``t (cos t, sin t)``, t uniform in [1.5 pi, 4.5 pi], scaled by 1/5."""

    name = "swissroll"
    noise = 0.25

    def draw(self, n, generator):
        t = 1.5 * math.pi * (1 + 2 * _uniform(n, generator))
        points = t[:, None] * torch.stack([torch.cos(t), torch.sin(t)], dim=1)
        return self._jitter(points, generator) / 5


class Pinwheel(SampledDataset):
    """Five curved arms: Gaussian blobs stretched radially and rotated by an angle growing with the radius."""

    name = "pinwheel"
    arms, radial_std, tangential_std, rate = 5, 0.3, 0.1, 0.25

    def draw(self, n, generator):
        arm = torch.randint(0, self.arms, (n,), generator=generator)
        feats = torch.randn(n, 2, generator=generator, dtype=torch.float64)
        feats = feats * torch.tensor([self.radial_std, self.tangential_std], dtype=torch.float64)
        feats[:, 0] += 1.0
        angle = 2 * math.pi * arm.double() / self.arms + self.rate * torch.exp(feats[:, 0])
        cos, sin = torch.cos(angle), torch.sin(angle)
        x = cos * feats[:, 0] - sin * feats[:, 1]
        y = sin * feats[:, 0] + cos * feats[:, 1]
        return 2 * torch.stack([x, y], dim=1)
