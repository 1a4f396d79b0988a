import pytest
import torch

from diffflow_core import Flow, plots, registry
from diffflow_core.data import load_dataset
from diffflow_core.errors import ConfigError

PNG = b"\x89PNG"
GIF = b"GIF8"


class VEProbabilityFlow(Flow):
    """dx/dsigma = -sigma s_{q_sigma}(x) with ring5's exact smoothed score (SPEC §1.1), sigma from 4 down."""

    def __init__(self, data):
        super().__init__()
        self.data = data

    def drift(self, x, t):
        return -t * self.data.smoothed_score(x, t)


class Still(Flow):
    def drift(self, x, t):
        return torch.zeros_like(x)


@pytest.fixture(scope="module")
def run():
    data = load_dataset("ring5", n_train=2000, n_test=10)
    flow = VEProbabilityFlow(data)
    times = torch.linspace(4.0, 0.01, 21, dtype=torch.float64)
    x0 = 4.0 * torch.randn(400, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    solver = registry("solvers").create("euler")
    x = solver.solve(flow, x0, times, record=True)
    return data, flow, times, solver.trajectory, x


def _is(path, magic):
    data = path.read_bytes()
    return len(data) > 2000 and data.startswith(magic)


def test_snapshots_with_drift_arrows_and_density_background(run, tmp_path):
    data, flow, times, trajectory, _ = run
    path = plots.snapshots(trajectory, tmp_path / "sub" / "snap.png", times=times, flow=flow, data=data,
                           background=lambda g: data.log_prob(g).exp(), panels=4)
    assert _is(path, PNG)
    still = plots.snapshots(trajectory, tmp_path / "still.png", times=times, flow=Still(), panels=2)
    assert _is(still, PNG)
    plain = plots.snapshots(list(trajectory), tmp_path / "plain.png")
    assert _is(plain, PNG) and plain.stat().st_size != path.stat().st_size


def test_animation_scatter_curve_and_image_grid(run, tmp_path):
    data, _, times, trajectory, x = run
    assert _is(plots.animate(trajectory[::4], tmp_path / "flow.gif", data=data, times=times[::4]), GIF)
    assert _is(plots.scatter(x, tmp_path / "scatter.png", data=data, title="VE PF-ODE"), PNG)
    assert _is(plots.curve([0, 10, 20], {"w2": [2.0, 1.0, 0.4], "mmd": [1.0, 0.5, 0.2]}, tmp_path / "c.png",
                           reference=0.31, logy=True), PNG)
    digits = load_dataset("digits")
    assert _is(plots.image_grid(digits.train[:30], tmp_path / "grid.png", nrow=10), PNG)


def test_plots_reject_bad_input(run, tmp_path):
    _, _, times, trajectory, _ = run
    with pytest.raises(ConfigError, match="trajectory"):
        plots.snapshots(torch.zeros(3, 10, 3), tmp_path / "x.png")
    with pytest.raises(ConfigError, match="times"):
        plots.snapshots(trajectory, tmp_path / "x.png", times=times[:3])
    with pytest.raises(ConfigError, match="samples"):
        plots.scatter(torch.zeros(10), tmp_path / "x.png")
    with pytest.raises(ConfigError, match="images"):
        plots.image_grid(torch.zeros(4, 3, 8, 8), tmp_path / "x.png")
    with pytest.raises(ConfigError, match=r"ys\['a'\]"):
        plots.curve([1, 2], {"a": [1.0]}, tmp_path / "x.png")
