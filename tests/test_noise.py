"""diffflow_core.tensors.draw_noise: the one rule for seeded draws, so one seed gives one stream of numbers
whatever device or dtype the particles have and whichever code path draws them."""
from __future__ import annotations

import pytest
import torch

from diffflow_core import Flow, SamplingContext, registry
from diffflow_core.tensors import NOISE_KINDS, draw_noise


def _gen(seed: int = 7) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("kind", list(NOISE_KINDS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_draw_is_made_in_the_particles_dtype(kind, dtype):
    """float64 particles get full-precision noise, not a float32 draw cast (closed-form tests rely on it)."""
    drawn = draw_noise((64, 3), _gen(), torch.empty(0, dtype=dtype), kind)
    direct = NOISE_KINDS[kind]((64, 3), generator=_gen(), device="cpu", dtype=dtype)
    assert drawn.dtype == dtype and torch.equal(drawn, direct)


@pytest.mark.parametrize("kind", list(NOISE_KINDS))
def test_a_cpu_generator_drives_particles_on_another_device_with_the_same_stream(kind):
    """Particles on the meta device stand for a GPU: the draw is made on the generator's device and moved, so the
    generator advances exactly as for CPU particles and the next draw is the same number."""
    cpu, other = _gen(), _gen()
    draw_noise((5, 2), cpu, torch.empty(0), kind)
    moved = draw_noise((5, 2), other, torch.empty(0, device="meta"), kind)
    assert moved.device.type == "meta" and moved.shape == (5, 2)
    assert torch.equal(cpu.get_state(), other.get_state())
    assert torch.equal(draw_noise((3,), cpu, torch.empty(0)), draw_noise((3,), other, torch.empty(0)))


def test_without_a_generator_the_draw_happens_on_the_particles_device():
    assert draw_noise((4,), None, torch.empty(0, device="meta")).device.type == "meta"


def test_the_kinds_draw_what_they_name():
    normal = draw_noise((20_000,), _gen(), torch.empty(0))
    uniform = draw_noise((20_000,), _gen(), torch.empty(0), "uniform")
    sign = draw_noise((20_000,), _gen(), torch.empty(0), "sign")
    assert abs(float(normal.mean())) < 0.05 and abs(float(normal.std()) - 1) < 0.05
    assert float(uniform.min()) >= 0 and float(uniform.max()) < 1 and abs(float(uniform.mean()) - 0.5) < 0.02
    assert set(sign.unique().tolist()) == {-1.0, 1.0}
    with pytest.raises(ValueError, match="kind: expected one of normal, uniform, sign, got 'gauss'"):
        draw_noise((2,), None, torch.empty(0), "gauss")


class _NoisyDecay(Flow):
    """An SDE ``dx = -x dt + 0.5 dW`` with the default prior: both the prior and the solver draw noise."""

    event_shape = (2,)

    def drift(self, x, t):
        return -x

    def diffusion(self, t):
        return 0.5


def _sample(seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    flow, generator = _NoisyDecay(), _gen(seed)
    x0 = flow.prior(256, generator)
    solution = registry("solvers").create("euler-maruyama").solve(
        flow, x0.to(dtype), torch.linspace(0, 1, 9, dtype=dtype), context=SamplingContext(generator))
    return solution.x


def test_the_same_seed_gives_the_same_particles():
    assert torch.equal(_sample(3), _sample(3))
    assert not torch.equal(_sample(3), _sample(4))


def test_the_prior_goes_through_the_helper():
    flow = _NoisyDecay()
    assert torch.equal(flow.prior(16, _gen()), draw_noise((16, 2), _gen(), torch.empty(0)))
    assert flow.prior(16, _gen(), device="meta").device.type == "meta"


def test_float64_particles_keep_full_precision_noise():
    double = _sample(5, torch.float64)
    assert double.dtype == torch.float64 and not torch.equal(double, double.float().double())
