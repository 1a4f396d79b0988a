"""The path-constrained loss against the RF loss (SPEC §4.5.2), its multi-step variant, label dropout, reflow."""
import pytest
import torch

from diffflow_core.errors import ConfigError
from diffflow_core.interfaces import Batch
from diffflow_core.model import Model
from diffflow_velocity.flow import VelocityFlow
from diffflow_velocity.objectives import WEIGHTS, FlowMatching, PathConstrained


def mlp_flow(**kwargs):
    torch.manual_seed(0)
    return VelocityFlow(network={"name": "mlp", "hidden": 32, "depth": 2}, event_shape=(3,), **kwargs).double()


def batch(n=256, seed=0):
    return Batch(torch.randn(n, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + 2.0)


@pytest.mark.parametrize("path", ["linear", "ve"])
@pytest.mark.parametrize("weight", sorted(WEIGHTS))
def test_one_step_pc_is_lambda_t2_times_rf_residual_per_sample(weight, path):
    flow = mlp_flow(path=path)
    pc, rf = PathConstrained(weight=weight), FlowMatching()
    sample = pc.path_sample(flow, batch(), torch.Generator().manual_seed(3))
    expected = WEIGHTS[weight](sample.t) * sample.t ** 2 * rf.per_sample(flow, sample)
    assert torch.allclose(pc.per_sample(flow, sample), expected, rtol=1e-10, atol=1e-12)
    assert float(expected.detach().std()) > 0  # a real per-sample comparison, not a constant


def test_inverse_square_weight_turns_the_one_step_loss_into_the_rf_loss():
    flow = mlp_flow()
    pc, rf = PathConstrained(weight="inverse-square", t_min=0.2), FlowMatching(t_min=0.2)
    loss_pc = pc.loss(flow, batch(), torch.Generator().manual_seed(5))
    loss_rf = rf.loss(flow, batch(), torch.Generator().manual_seed(5))
    assert torch.allclose(loss_pc, loss_rf, rtol=1e-10)


class PointMassField(torch.nn.Module):
    """The exact field to a point mass c: f*(x, t) = (c - x) / (1 - t); paths are straight lines."""

    def __init__(self, c):
        super().__init__()
        self.register_buffer("c", c)

    def forward(self, x, t):
        return (self.c - x) / (1 - t[:, None])


@pytest.mark.parametrize("steps,horizon", [(2, 0.1), (4, 0.5), (8, 1.0)])
def test_multi_step_pc_vanishes_for_the_exact_field_only(steps, horizon):
    c = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    data = Batch(c.expand(128, 3).clone())
    exact = VelocityFlow(network=PointMassField(c), event_shape=(3,))
    pc = PathConstrained(steps=steps, horizon=horizon)
    assert float(pc.loss(exact, data, torch.Generator().manual_seed(0))) < 1e-20
    assert float(pc.loss(mlp_flow(), data, torch.Generator().manual_seed(0)).detach()) > 1e-3


def test_multi_step_pc_trains_end_to_end():
    flow = mlp_flow()
    pc = PathConstrained(steps=3, horizon=0.2)
    loss = pc.loss(flow, batch(), torch.Generator().manual_seed(0))
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in flow.parameters())


def test_label_dropout_replaces_labels_by_the_null_label_at_its_rate():
    flow = VelocityFlow(event_shape=(3,), conditional=True, num_classes=4,
                        network={"name": "mlp", "hidden": 8, "depth": 1})
    labels = torch.randint(0, 4, (20_000,), generator=torch.Generator().manual_seed(0))
    data = Batch(torch.randn(20_000, 3), labels)
    y = FlowMatching(label_dropout=0.2).path_sample(flow, data, torch.Generator().manual_seed(1)).y
    dropped = y == 4
    assert abs(float(dropped.float().mean()) - 0.2) < 0.01
    assert torch.equal(y[~dropped], labels[~dropped])
    with pytest.raises(ConfigError, match="labelled"):
        FlowMatching().path_sample(flow, Batch(data.x), None)


def test_reflow_pairs_are_the_models_own_couplings():
    flow = mlp_flow()
    objective = FlowMatching()
    model = Model(flow, objective)
    coupling = objective.reflow(model, 64, 8, seed=4, solver="heun")
    assert torch.allclose(coupling.x2, model.sample(64, 8, seed=4, solver="heun").x)
    sample = objective.path_sample(flow, batch(32), torch.Generator().manual_seed(0))
    rows = (sample.x1[:, None, :] == coupling.x1[None]).all(-1)
    partner = rows.float().argmax(1)
    assert bool(rows.any(1).all()) and torch.equal(sample.x2, coupling.x2[partner])


@pytest.mark.parametrize("kwargs,field", [({"weight": "cube"}, "weight"), ({"steps": 0}, "steps"),
                                          ({"horizon": 0.0}, "horizon"), ({"t_min": 0.0}, "t_min"),
                                          ({"label_dropout": 1.0}, "label_dropout")])
def test_bad_parameters_name_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        PathConstrained(**kwargs)
