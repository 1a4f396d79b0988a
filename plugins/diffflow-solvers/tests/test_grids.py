"""Time grids: sizes, directions and EDM's rho-grid formula (SPEC §2.6)."""
from __future__ import annotations

import pytest
import torch

from diffflow_core import ConfigError, registry


def test_uniform_grid_values_and_direction():
    grid = registry("grids").get("uniform")
    assert torch.equal(grid(4, dtype=torch.float64), torch.tensor([0, 0.25, 0.5, 0.75, 1.0], dtype=torch.float64))
    down = grid(3, start=1.0, end=0.0)
    assert down.dtype == torch.float32 and torch.allclose(down, torch.tensor([1.0, 2 / 3, 1 / 3, 0.0]))


def test_edm_grid_matches_the_spec_formula_and_ends_at_zero():
    grid = registry("grids").get("edm")
    steps, smin, smax, rho = 18, 0.002, 80.0, 7.0
    sigmas = grid(steps, sigma_min=smin, sigma_max=smax, rho=rho, dtype=torch.float64)
    assert sigmas.shape == (steps + 1,) and sigmas[-1] == 0
    i = torch.arange(steps, dtype=torch.float64)
    expected = (smax ** (1 / rho) + i / (steps - 1) * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho
    assert torch.allclose(sigmas[:-1], expected, rtol=1e-12, atol=0)
    assert sigmas[0] == pytest.approx(smax) and sigmas[-2] == pytest.approx(smin)
    assert bool((sigmas[1:] < sigmas[:-1]).all())
    no_zero = grid(steps, sigma_min=smin, sigma_max=smax, append_zero=False, dtype=torch.float64)
    assert no_zero.shape == (steps + 1,) and no_zero[-1] == pytest.approx(smin) and no_zero[0] == pytest.approx(smax)


@pytest.mark.parametrize("name,params,field", [
    ("uniform", {"steps": 0}, "steps"), ("uniform", {"steps": 2.0}, "steps"), ("edm", {"steps": None}, "steps"),
    ("uniform", {"steps": 4, "start": 1.0, "end": 1.0}, "start/end"),
    ("edm", {"steps": 4, "sigma_min": 1.0, "sigma_max": 0.5}, "sigma_min/sigma_max"),
    ("edm", {"steps": 4, "rho": 0.0}, "rho")])
def test_bad_grid_arguments_name_the_field(name, params, field):
    with pytest.raises(ConfigError, match=f"^{field}: expected"):
        registry("grids").get(name)(**params)
