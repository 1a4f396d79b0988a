"""Registration, presets and build-time validation of the velocity plugin."""
import pytest
import torch

from diffflow_core import Flow, registry
from diffflow_core import build
from diffflow_core.errors import ConfigError
from diffflow_velocity.flow import VelocityFlow
from diffflow_velocity.objectives import FlowMatching, PathConstrained


def test_components_and_presets_are_registered_by_this_plugin():
    assert registry("flows").entry("velocity").distribution == "diffflow-velocity"
    for name in ("flow-matching", "path-constrained"):
        assert registry("objectives").entry(name).distribution == "diffflow-velocity"
    for name in ("rectified-flow", "scoreflow", "scoreflow-translate"):
        assert registry("presets").entry(name).distribution == "diffflow-velocity"


@pytest.mark.parametrize("preset,objective", [("rectified-flow", FlowMatching), ("scoreflow", PathConstrained)])
def test_presets_build_on_toy_data(preset, objective):
    model = build(preset=preset, data="ring5")
    assert isinstance(model.flow, VelocityFlow) and isinstance(model.objective, objective)
    assert model.sample(8, 2, seed=0).x.shape == (8, 2)


def test_translate_preset_is_class_conditional_on_digits():
    model = build(preset="scoreflow-translate")
    assert model.flow.conditional and model.flow.num_classes == 10 and model.objective.label_dropout > 0
    assert model.sample(4, 1, seed=0, label=3, guidance=2.0).x.shape == (4, 1, 8, 8)


def test_dataset_and_class_sources():
    model = build(preset="rectified-flow", data="moons", flow={"source": {"name": "dataset", "data": "8gaussians"}})
    start = model.flow.prior(500, torch.Generator().manual_seed(0))
    assert start.norm(dim=1).mean() > 2.0  # 8gaussians sits on a circle of radius ~2.8, not at the origin
    digits = build(preset="rectified-flow", data="digits", flow={"source": {"name": "dataset", "label": 3}})
    rows = digits.flow.prior(20, torch.Generator().manual_seed(0))
    train, labels = digits.data.train, digits.data.train_labels
    matches = (rows.flatten(1)[:, None] == train.flatten(1)[None]).all(-1)
    assert bool((labels[matches.float().argmax(1)] == 3).all()) and bool(matches.any(1).all())


@pytest.mark.parametrize("flow,field", [({"path": "curved"}, "path"),
                                        ({"path": "ve", "source": {"name": "dataset", "data": "moons"}}, "source"),
                                        ({"source": {"name": "uniform"}}, "source.name"),
                                        ({"source": {"name": "gaussian", "std": -1}}, "source.std"),
                                        ({"source": {"name": "dataset", "data": "digits"}}, "source")])
def test_bad_flow_configs_name_the_field(flow, field):
    with pytest.raises(ConfigError, match=field):
        build(preset="rectified-flow", data="ring5", flow=flow)


def test_objective_rejects_a_foreign_flow():
    class Decay(Flow):
        def drift(self, x, t):
            return -x

    with pytest.raises(ConfigError, match="velocity"):
        FlowMatching(flow=Decay())
