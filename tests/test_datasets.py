import math

import numpy as np
import pytest
import torch

from diffflow_core import registry
from diffflow_core.data import load_dataset
from diffflow_core.data.mixture import GaussianMixture
from diffflow_core.errors import ConfigError


def _mixture():
    return GaussianMixture([0.2, 0.5, 0.3], [[0.0, 1.0], [2.0, -1.0], [-1.5, 0.5]], [0.4, 0.7, 0.3],
                           n_train=4000, n_test=1000, seed=3)


def test_ring5_is_gpms_toy():
    data = load_dataset("ring5", n_train=50_000, n_test=1000)
    assert data.name == "ring5" and data.event_shape == (2,)
    angles = torch.atan2(data.means[:, 1], data.means[:, 0]) % (2 * math.pi)
    expected = 2 * math.pi * torch.arange(5, dtype=torch.float64) / 5
    assert torch.allclose(torch.sort(angles).values, expected, atol=1e-12)
    assert torch.allclose(data.means.norm(dim=1), torch.full((5,), 3.0, dtype=torch.float64))
    share = torch.bincount(data.nearest_component(data.train), minlength=5).double() / 50_000
    assert (share - 0.2).abs().max() < 0.01
    # within-mode spread: the distance to the nearest centre is Rayleigh(0.5), mean 0.5 sqrt(pi/2)
    dist = (data.train.double() - data.means[data.nearest_component(data.train)]).norm(dim=1)
    assert abs(dist.mean().item() - 0.5 * math.sqrt(math.pi / 2)) < 0.01


def test_split_is_fixed_and_sample_is_fresh():
    a, b = load_dataset("ring5", n_train=100, n_test=50, seed=1), load_dataset("ring5", n_train=100, n_test=50, seed=1)
    assert torch.equal(a.train, b.train) and torch.equal(a.test, b.test)
    assert not torch.equal(a.train[:50], a.test)
    g = torch.Generator().manual_seed(0)
    assert not torch.equal(a.sample(100, g), a.sample(100, g))


def test_mixture_log_prob_matches_brute_force_and_integrates_to_one():
    data = _mixture()
    x = torch.randn(50, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    brute = sum(w * torch.exp(-((x - m) ** 2).sum(1) / (2 * s ** 2)) / (2 * math.pi * s ** 2)
                for w, m, s in zip(data.weights, data.means, data.stds))
    assert torch.allclose(data.log_prob(x), torch.log(brute), atol=1e-12)
    grid = torch.linspace(-6, 6, 601, dtype=torch.float64)
    xx = torch.cartesian_prod(grid, grid)
    mass = data.log_prob(xx).exp().sum() * (grid[1] - grid[0]) ** 2
    assert abs(mass.item() - 1) < 1e-6


@pytest.mark.parametrize("kind", ["ve", "vp"])
def test_smoothed_score_is_autograd_of_smoothed_log_prob(kind):
    data = _mixture()
    x = torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).requires_grad_()
    sigma = torch.rand(64, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 0.9
    (grad,) = torch.autograd.grad(data.smoothed_log_prob(x, sigma, kind).sum(), x)
    assert torch.allclose(data.smoothed_score(x.detach(), sigma, kind), grad, atol=1e-10)
    assert torch.allclose(data.score(x.detach()), data.smoothed_score(x.detach(), 0.0, kind), atol=1e-12)


@pytest.mark.parametrize("kind", ["ve", "vp"])
def test_smoothed_law_matches_monte_carlo_noising(kind):
    """q_sigma from SPEC §1.1 equals the law of the noised data: compare E[f(x)] for f = exp(-|x|^2/8)."""
    data = _mixture()
    sigma = 0.6
    g = torch.Generator().manual_seed(4)
    y = data.sample(400_000, g).double()
    eps = torch.randn(y.shape, generator=g, dtype=torch.float64)
    x = (y + sigma * eps) if kind == "ve" else (math.sqrt(1 - sigma ** 2) * y + sigma * eps)
    f = lambda z: torch.exp(-(z ** 2).sum(1) / 8)  # noqa: E731
    grid = torch.linspace(-8, 8, 801, dtype=torch.float64)
    xx = torch.cartesian_prod(grid, grid)
    quad = (f(xx) * data.smoothed_log_prob(xx, sigma, kind).exp()).sum() * (grid[1] - grid[0]) ** 2
    assert abs(quad.item() - f(x).mean().item()) < 3e-3


def test_denoiser_is_tweedie_on_a_single_gaussian():
    one = GaussianMixture([1.0], [[1.0, -2.0]], 0.5, n_train=10, n_test=10)
    x = torch.randn(20, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    sigma = 0.8
    shrink = 0.25 / (0.25 + sigma ** 2)  # E[y|x] = m + s^2/(s^2+sigma^2) (x - m)
    expected = one.means + shrink * (x - one.means)
    assert torch.allclose(one.denoise(x, sigma), expected, atol=1e-12)


def test_one_dimensional_mixture():
    one_d = GaussianMixture([1.0, 3.0], [0.0, 2.0], [0.5, 1.0], n_train=20_000, n_test=10)
    assert one_d.event_shape == (1,)
    x = torch.linspace(-2, 4, 7, dtype=torch.float64)[:, None]
    dens = 0.25 * torch.exp(-x ** 2 / 0.5) / math.sqrt(2 * math.pi * 0.25) \
        + 0.75 * torch.exp(-(x - 2) ** 2 / 2) / math.sqrt(2 * math.pi)
    assert torch.allclose(one_d.log_prob(x), torch.log(dens[:, 0]), atol=1e-12)
    assert abs(one_d.train.double().mean().item() - 1.5) < 0.02


def test_eight_gaussians_registered():
    data = registry("datasets").create("8gaussians", n_train=1000, n_test=100)
    assert data.num_components == 8 and data.has_density


@pytest.mark.parametrize("kwargs, field", [
    ({"weights": [1, -1], "means": [[0, 0], [1, 1]], "stds": 1}, "weights"),
    ({"weights": [1, 1], "means": [[0, 0], [1, 1]], "stds": [1, 0]}, "stds"),
    ({"weights": [1], "means": [[0, 0]], "stds": 1, "n_train": 1}, "n_train"),
])
def test_mixture_rejects_bad_parameters(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        GaussianMixture(**kwargs)


def test_mixture_rejects_bad_queries():
    data = _mixture()
    with pytest.raises(ConfigError, match="x: expected shape"):
        data.log_prob(torch.zeros(3, 3))
    with pytest.raises(ConfigError, match="sigma"):
        data.smoothed_score(torch.zeros(3, 2), torch.ones(2) * 0.1)
    with pytest.raises(ConfigError, match="VP"):
        data.smoothed_score(torch.zeros(3, 2), 1.0, "vp")
    with pytest.raises(ConfigError, match="kind"):
        data.smoothed_score(torch.zeros(3, 2), 0.1, "vx")


def _law(name, **kw):
    return registry("datasets").create(name, n_train=4000, n_test=100, **kw)


def test_toys_are_registered_seeded_and_two_dimensional():
    for name in ("moons", "circles", "checkerboard", "swissroll", "pinwheel"):
        a, b = _law(name, seed=7), _law(name, seed=7)
        assert a.event_shape == (2,) and a.name == name and not a.has_density
        assert torch.equal(a.train, b.train)
        assert not torch.equal(a.train, _law(name, seed=8).train)
        assert a.train.abs().max() < 6


def test_noiseless_toys_lie_on_their_curves():
    moons = _law("moons", noise=0.0).train.double()
    z = (moons + torch.tensor([1.0, 0.5], dtype=torch.float64)) / 2
    on_upper = ((z.norm(dim=1) - 1).abs() < 1e-5) & (z[:, 1] >= -1e-6)
    on_lower = (((z - torch.tensor([1.0, 0.5], dtype=torch.float64)).norm(dim=1) - 1).abs() < 1e-5)
    assert bool((on_upper | on_lower).all())
    radius = _law("circles", noise=0.0).train.double().norm(dim=1)
    assert bool((((radius - 3).abs() < 1e-5) | ((radius - 1.5).abs() < 1e-5)).all())
    assert abs((radius > 2).double().mean().item() - 0.5) < 0.03
    roll = 5 * _law("swissroll", noise=0.0).train.double()
    t = roll.norm(dim=1)
    assert torch.allclose(roll, t[:, None] * torch.stack([torch.cos(t), torch.sin(t)], 1), atol=1e-4)


def test_checkerboard_fills_the_black_squares_uniformly():
    x = _law("checkerboard").train.double() / 2
    cells = torch.floor(x)
    assert bool(((cells.sum(1) % 2) == 0).all())
    counts = torch.unique(cells, dim=0, return_counts=True)[1]
    assert len(counts) == 8 and (counts.double() / 4000 - 1 / 8).abs().max() < 0.02


def test_pinwheel_has_five_fold_symmetry():
    from diffflow_core.metrics import sliced_wasserstein

    x = _law("pinwheel").train.double()
    a = 2 * math.pi / 5
    rot = torch.tensor([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]], dtype=torch.float64)
    same = sliced_wasserstein(x[:2000] @ rot, x[2000:])
    twisted = sliced_wasserstein(x[:2000] @ rot.T @ rot.T @ torch.diag(torch.tensor([1.0, -1.0], dtype=torch.float64)),
                                 x[2000:])
    assert same < 0.1 and twisted > 2 * same


def test_toys_reject_bad_parameters():
    from diffflow_core.data.toys import Moons

    with pytest.raises(ConfigError, match="n_train"):
        Moons(n_train=0)
    with pytest.raises(ConfigError, match="noise"):
        _law("checkerboard", noise=0.1)
    with pytest.raises(ConfigError, match="noise"):
        _law("moons", noise=-1.0)


def test_digits_split_scaling_and_labels():
    data = load_dataset("digits")
    assert data.event_shape == (1, 8, 8) and data.train.shape[0] == 1497 and data.test.shape[0] == 300
    assert data.num_classes == 10 and data.train.min() == -1 and data.train.max() == 1
    pixels = data.to_data_space(data.train)
    assert torch.equal(pixels, pixels.round()) and pixels.max() == 16
    assert bool(((torch.bincount(data.test_labels, minlength=10) - 30).abs() <= 1).all())  # stratified
    assert torch.equal(load_dataset("digits").test, data.test)
    with pytest.raises(ConfigError, match="test_size"):
        load_dataset("digits", test_size=5)


def test_user_arrays_tensors_and_npy_files(tmp_path, monkeypatch):
    array = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float64)
    from_array, from_tensor = load_dataset(array), load_dataset(torch.from_numpy(array))
    assert from_array.event_shape == (3,) and torch.equal(from_array.train, from_tensor.train)
    np.save(tmp_path / "points.npy", array)
    monkeypatch.chdir(tmp_path)
    from_file = load_dataset("points.npy")  # a relative path is recorded absolutely
    assert from_file.name == "points" and torch.equal(from_file.train, from_array.train)
    assert from_file.path == str(tmp_path / "points.npy") and from_array.path is None
    assert from_file.sample(10, torch.Generator().manual_seed(0)).shape == (10, 3)


def test_user_data_hold_out_a_seeded_disjoint_test_split():
    rows = np.arange(200, dtype=np.float64)[:, None] * np.array([[1.0, -1.0]])  # row i is (i, -i): traceable
    data = load_dataset(rows)
    train, test = data.train[:, 0].long(), data.test[:, 0].long()
    assert (data.train.shape[0], data.test.shape[0]) == (180, 20)
    assert sorted(train.tolist() + test.tolist()) == list(range(200))  # disjoint, nothing lost
    assert torch.equal(train, train.sort().values) and torch.equal(test, test.sort().values)  # file order kept
    assert torch.equal(load_dataset(rows).test, data.test)  # deterministic
    assert not torch.equal(load_dataset(rows, seed=1).test, data.test)
    assert data.describe() == {"name": "array", "train": 180, "test": 20, "split": "held out 10% (20 rows, seed 0)"}
    assert load_dataset({"name": rows, "test_fraction": 0.25}).test.shape[0] == 50
    whole = load_dataset(rows, test_fraction=0)
    assert whole.test is whole.train and whole.split == "none (test_fraction = 0): test = train"
    tiny = load_dataset(rows[:12])  # 10% of 12 rows is 1: too few to hold out
    assert tiny.test is tiny.train and "12 rows are too few" in tiny.split
    for params, field in (({"test_fraction": 1.0}, "test_fraction"), ({"seed": "a"}, "seed"),
                          ({"n_train": 5}, "n_train")):
        with pytest.raises(ConfigError, match=f"data.{field}"):
            load_dataset(rows, **params)


def test_small_user_data_round_trip_through_their_state():
    from diffflow_core.data import Dataset

    data = load_dataset(np.random.default_rng(1).normal(size=(40, 2)))
    again = Dataset.from_state(data.state())
    assert torch.equal(again.train, data.train) and torch.equal(again.test, data.test)
    assert again.split == data.split and again.describe() == data.describe()
    whole = Dataset.from_state(load_dataset(data.train, test_fraction=0).state())
    assert whole.test is whole.train
    assert load_dataset("ring5", n_train=10, n_test=10).state() is None  # registered data rebuild by name
    assert load_dataset(np.random.default_rng(1).normal(size=(300_000, 16))).state() is None  # 19 MB: too big


def _write_header(path, shape, descr="<f8", payload=b""):
    with open(path, "wb") as fp:
        np.lib.format.write_array_header_1_0(fp, {"descr": descr, "fortran_order": False, "shape": shape})
        fp.write(payload)


def _bad_files(folder):
    """(file, the words its error must contain) for each kind of bad .npy file."""
    np.savez(folder / "archive.npz", a=np.zeros((4, 2)))
    (folder / "archive.npz").rename(folder / "renamed.npy")
    (folder / "text.npy").write_text("1.0 2.0\n3.0 4.0\n")
    (folder / "empty.npy").write_bytes(b"")
    _write_header(folder / "huge.npy", (1_000_000, 100_000), payload=bytes(64))
    np.save(folder / "strings.npy", np.array([["a", "b"], ["c", "d"]]))
    np.save(folder / "records.npy", np.zeros(4, dtype=[("x", "f4"), ("y", "f4")]))
    np.save(folder / "complex.npy", np.ones((10, 2)) * (1 + 2j))
    np.save(folder / "objects.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    np.save(folder / "constant.npy", np.ones((10, 2)))
    np.save(folder / "huge_values.npy", 1e30 * np.random.default_rng(0).normal(size=(10, 2)))
    np.save(folder / "overflow.npy", 1e39 * np.random.default_rng(0).normal(size=(10, 2)))
    (folder / "folder.npy").mkdir()
    return {"renamed.npy": ".npz archive", "text.npy": "not a .npy file", "empty.npy": "empty (0 bytes)",
            "huge.npy": "745.1 GiB", "strings.npy": "text (dtype <U1); expected numbers",
            "records.npy": "structured dtype with fields ['x', 'y']", "complex.npy": "complex values",
            "objects.npy": "Python objects", "constant.npy": "all 10 training rows are identical",
            "huge_values.npy": "standardise", "overflow.npy": "values reach", "folder.npy": "is not a file",
            "missing.npy": "does not exist"}


def test_bad_npy_files_get_one_line_errors_naming_the_file_before_any_allocation(tmp_path):
    for name, words in _bad_files(tmp_path).items():
        with pytest.raises(ConfigError) as error:
            load_dataset(str(tmp_path / name))
        message = str(error.value)
        assert words in message and str(tmp_path / name) in message and "\n" not in message, (name, message)


def test_bad_arrays_get_clear_errors():
    from diffflow_core.data import Dataset

    bad = np.random.default_rng(0).normal(size=(10, 2))
    bad[3, 1] = np.nan
    cases = [(bad, "non-finite"), (np.zeros(10), "shape"), (np.ones((10, 3)), "identical"),
             (np.ones((10, 2)) * [1 + 1j, 1], "complex values"), (np.array([["a"]] * 5), "text"),
             (torch.ones(10, 2, dtype=torch.complex64), "complex values"),
             (np.array([[1e30, 0.0], [0.0, 1.0]]), "values reach 1e+30")]
    for values, words in cases:
        with pytest.raises(ConfigError, match=words.replace("+", r"\+")):
            load_dataset(values)
    with pytest.raises(ConfigError, match="test split"):
        Dataset(torch.randn(10, 2), torch.randn(5, 3))
