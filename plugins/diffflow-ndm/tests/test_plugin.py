"""Registration, presets and a short end-to-end fit through the kernel's build / Trainer / sample."""
import pytest
import torch

from diffflow_core import build
from diffflow_core.errors import ConfigError
from diffflow_core.interfaces import Batch, Flow
from diffflow_core.plugins import registry
from diffflow_ndm.flow import NDMFlow
from diffflow_ndm.objectives import ContinuousNELBO, DiscreteNELBO

PRESETS = {"ndm": ("learned", ContinuousNELBO), "ddpm": ("identity", DiscreteNELBO),
           "ddim": ("identity", DiscreteNELBO), "vdm": ("identity", ContinuousNELBO),
           "flow-matching": ("identity", ContinuousNELBO)}


def test_components_are_registered_by_this_plugin():
    for kind, names in {"flows": ["ndm"], "objectives": ["nelbo", "nelbo-continuous"],
                        "solvers": ["ndm-ddpm", "ndm-ddim"], "presets": list(PRESETS)}.items():
        for name in names:
            assert registry(kind).entry(name).distribution == "diffflow-ndm"


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_build_the_special_cases(preset):
    data = torch.randn(64, 2)
    model = build(preset=preset, data=data)
    transform, objective = PRESETS[preset]
    assert isinstance(model.flow, NDMFlow) and isinstance(model.objective, objective)
    assert type(model.flow.transform).__name__.lower().startswith(transform)
    assert model.flow.sigma_data == 0.5  # EDM's constant, not the data std (which stalls training, see NDMFlow)
    sample = model.sample(8, 3, seed=0)
    assert sample.x.shape == (8, 2) and sample.nfe in (3, 6)
    assert torch.equal(sample.x, model.sample(8, 3, seed=0).x)  # seeded


def test_objective_rejects_bad_settings():
    with pytest.raises(ConfigError, match="steps: expected a positive integer number of diffusion steps T, got 0"):
        DiscreteNELBO(steps=0)
    with pytest.raises(ConfigError, match="proposal: unknown kind 'unifrom'; did you mean 'uniform'"):
        ContinuousNELBO(proposal="unifrom")
    with pytest.raises(ConfigError, match="the NELBO needs an 'ndm' flow, got Flow"):
        DiscreteNELBO().loss(Flow(), Batch(torch.randn(4, 2)))


def test_a_short_fit_lowers_the_nelbo_of_a_learned_transform():
    gen = torch.Generator().manual_seed(0)
    data = torch.cat([torch.randn(512, 2, generator=gen) * 0.3 + 2, torch.randn(512, 2, generator=gen) * 0.3 - 2])
    net = {"name": "mlp", "hidden": 32, "depth": 2}
    model = build(preset="ndm", data=data, flow={"network": net, "transform": {"name": "learned", "network": net}},
                  train={"steps": 150, "batch_size": 128, "ema": 0.0, "progress": False, "lr": 3e-3})

    def nelbo():
        with torch.no_grad():
            return float(model.objective.terms(model.flow, data, torch.Generator().manual_seed(1)).total.mean())

    before = nelbo()
    model.fit()
    after = nelbo()
    assert after < before - 0.5, (before, after)
    assert float(model.flow.transform.gate.abs()) > 0  # F moved away from the identity
