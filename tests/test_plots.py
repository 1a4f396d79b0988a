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
    out = solver.solve(flow, x0, times, record=True)
    return data, flow, times, out.trajectory, out.x


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
        plots.image_grid(torch.zeros(4, 2, 8, 8), tmp_path / "x.png")
    with pytest.raises(ConfigError, match="dims"):
        plots.pairs(torch.zeros(10, 5), tmp_path / "x.png", dims=0)
    with pytest.raises(ConfigError, match="4 coordinates but the samples have 5"):
        plots.pairs(torch.zeros(10, 5), tmp_path / "x.png", data=torch.zeros(10, 4))
    with pytest.raises(ConfigError, match=r"ys\['a'\]"):
        plots.curve([1, 2], {"a": [1.0]}, tmp_path / "x.png")


def _size(path):
    from PIL import Image

    with Image.open(path) as picture:
        return picture.size


def test_pairs_draws_a_matrix_of_the_first_coordinates(tmp_path):
    g = torch.Generator().manual_seed(0)
    data, samples = torch.randn(500, 5, generator=g), torch.randn(300, 5, generator=g) + 1
    four = plots.pairs(samples, tmp_path / "four.png", data=data)
    two = plots.pairs(samples, tmp_path / "two.png", data=data, dims=2)
    assert _is(four, PNG) and _is(two, PNG)
    (w4, h4), (w2, h2) = _size(four), _size(two)
    assert w4 > 1.6 * w2 and h4 > 1.6 * h2  # 4 x 4 panels against 2 x 2
    three = samples[:, :3]  # dims beyond D draw all D coordinates
    exact, beyond = plots.pairs(three, tmp_path / "3.png", dims=3), plots.pairs(three, tmp_path / "9.png", dims=9)
    assert _size(beyond) == _size(exact)
    line = plots.pairs(samples[:, :1], tmp_path / "one.png", data=data[:, :1])  # one coordinate: a histogram
    images = plots.pairs(torch.randn(50, 1, 3, 3, generator=g), tmp_path / "flat.png")  # rows are flattened
    assert _is(line, PNG) and _is(images, PNG) and _size(images)[0] > 1.6 * _size(line)[0]


def test_image_grid_draws_colour_images_over_their_value_range(tmp_path):
    from PIL import Image

    red = torch.zeros(4, 3, 8, 8)
    red[:, 0] = 255.0
    path = plots.image_grid(red, tmp_path / "red.png", value_range=(0.0, 255.0))
    with Image.open(path) as picture:
        colours = {c for _, c in picture.convert("RGB").getcolors(1 << 16)}
    assert (255, 0, 0) in colours and (0, 255, 0) not in colours
