import math

import numpy as np
import pytest
import torch

from diffflow_core import registry
from diffflow_core.data import load_dataset
from diffflow_core.errors import ConfigError
from diffflow_core.metrics import (W2Result, class_histogram, data_distances, digits_classifier, energy_distance,
                                  frechet_digits, frechet_distance, log_density, mmd, mode_coverage,
                                  sliced_wasserstein, w2, w2_ratio)
from diffflow_core.metrics._common import reference_draw, reference_rows


def test_w2_of_a_translation_is_the_shift():
    x = torch.randn(300, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    shift = torch.tensor([0.3, -0.4], dtype=torch.float64)
    assert w2(x, x + shift) == pytest.approx(0.5, abs=1e-9)
    assert w2(x, x) == pytest.approx(0.0, abs=1e-6)


def test_w2_between_gaussians_approaches_closed_form():
    """W2(N(0, I), N(m, 4 I)) = sqrt(|m|^2 + d (2 - 1)^2); the empirical value converges from above."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1500, 1, generator=g, dtype=torch.float64)
    y = 1.0 + 2 * torch.randn(1500, 1, generator=g, dtype=torch.float64)
    assert w2(x, y) == pytest.approx(math.sqrt(2.0), rel=0.05)


def test_w2_ratio_separates_perfect_from_broken_samplers():
    data = load_dataset("ring5", n_train=2000, n_test=200)
    perfect = w2_ratio(lambda n, s: data.sample(n, torch.Generator().manual_seed(s)), data, n=400, seeds=3)
    assert 0.75 < perfect.ratio < 1.1
    assert perfect.floor_std > 0 and len(perfect.floor_values) == 3
    wide = w2_ratio(lambda n, s: 1.3 * data.sample(n, torch.Generator().manual_seed(s)), data, n=400, seeds=3)
    assert wide.ratio > 1.5 * perfect.ratio
    assert wide.floor_values == perfect.floor_values  # one fixed floor: every model meets the same references
    assert 0 < perfect.ratio_stderr < 0.5 * perfect.ratio
    # a list of arrays gives the same numbers as the sampler that produced them
    listed = w2_ratio([data.sample(400, torch.Generator().manual_seed(s)) for s in range(3)], data, n=400)
    assert listed.w2_values == perfect.w2_values
    assert registry("metrics").create("w2", samples=[data.train[:400]], dataset=data, n=400).seeds == 1


def test_w2_ratio_rejects_bad_input():
    data = load_dataset("ring5", n_train=100, n_test=10)
    with pytest.raises(ConfigError, match="at least n=50"):
        w2_ratio([torch.zeros(10, 2)], data, n=50)
    with pytest.raises(ConfigError, match="non-finite"):
        w2_ratio([torch.full((50, 2), float("nan"))], data, n=50)
    with pytest.raises(ConfigError, match="features per row"):
        w2_ratio([torch.zeros(50, 3)], data, n=50)
    with pytest.raises(ConfigError, match="seeds"):
        w2_ratio([torch.zeros(50, 2)], data, n=50, seeds=0)


def test_sliced_wasserstein_of_a_shift_and_isotropy():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(500, 2, generator=g, dtype=torch.float64)
    # for a pure shift every 1-D W2 is |<shift, theta>|, so SW^2 = |shift|^2 / d in expectation
    sw = sliced_wasserstein(x, x + torch.tensor([1.0, 0.0], dtype=torch.float64), projections=3000)
    assert sw == pytest.approx(math.sqrt(0.5), rel=0.03)
    assert sliced_wasserstein(x, x) == 0.0


def _gauss(n, seed, shift=0.0, scale=1.0, d=2):
    return shift + scale * torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_mmd_is_unbiased_and_matches_closed_form():
    """For N(0, I) vs N(m, I) with a Gaussian kernel of width h in d dims, MMD^2 has a closed form."""
    d, h = 2, 1.0
    m = torch.tensor([0.7, 0.0], dtype=torch.float64)
    c = (h * h / (h * h + 2)) ** (d / 2)  # E k(X, X') for X, X' ~ N(0, I)
    exact = 2 * c * (1 - math.exp(-(m @ m).item() / (2 * (h * h + 2))))
    est = mmd(_gauss(3000, 0), _gauss(3000, 1, shift=m), bandwidths=[h])
    assert est.mmd2 == pytest.approx(exact, rel=0.1)
    same = [mmd(_gauss(200, s), _gauss(200, 100 + s), bandwidths=[h]).mmd2 for s in range(40)]
    assert abs(np.mean(same)) < 3 * np.std(same) / math.sqrt(40)  # unbiased: centred at 0
    assert min(same) < 0  # the biased V-statistic would never go negative
    assert len(mmd(_gauss(100, 0), _gauss(100, 1)).bandwidths) == 5


def test_energy_distance_closed_form_in_one_dimension():
    """For N(0, 1) vs N(m, 1): 2 E|X - Y| - E|X - X'| - E|Y - Y'| with X - Y ~ N(-m, 2), X - X' ~ N(0, 2)."""
    m = 1.0
    # E|X - Y| for X - Y ~ N(m, 2): sqrt(2) * (sqrt(2/pi) e^{-m^2/4} + (m / sqrt 2) erf(m / 2))
    s = math.sqrt(2)
    cross = s * math.sqrt(2 / math.pi) * math.exp(-m * m / 4) + m * math.erf(m / 2)
    exact = 2 * cross - 2 * s * math.sqrt(2 / math.pi)
    value = energy_distance(_gauss(2500, 0, d=1), _gauss(2500, 1, shift=m, d=1))
    assert value == pytest.approx(exact, rel=0.1)
    assert abs(energy_distance(_gauss(1000, 2), _gauss(1000, 3))) < 0.02


def test_mode_coverage_and_log_density_detect_imbalance_and_concentration():
    data = load_dataset("ring5", n_train=100, n_test=10)
    g = torch.Generator().manual_seed(0)
    good = data.sample(5000, g)
    cov = mode_coverage(good, data)
    assert cov.max_deviation < 2.5 and cov.modes_covered == 5 and cov.outside < 0.03
    dropped = good[data.nearest_component(good) != 0]
    bad = mode_coverage(dropped, data)
    assert bad.shares[0] == 0 and bad.modes_covered == 4 and bad.max_deviation == pytest.approx(20, abs=0.01)
    fair = log_density(good, data, reference=20_000)
    assert abs(fair.gap) < 0.05
    assert fair.data_mean == pytest.approx(float(data.log_prob(data.sample(50_000, g).double()).mean()), abs=0.03)
    centres = data.means[data.nearest_component(good)]
    tight = log_density(centres + 0.5 * (good.double() - centres), data, reference=20_000)
    assert tight.gap > 0.5  # over-concentration reads as a log-density above the data's
    with pytest.raises(ConfigError, match="Gaussian mixture"):
        mode_coverage(good, load_dataset("moons", n_train=10, n_test=10))


def test_frechet_distance_closed_form():
    """Between N(0, I) and N(m, 4 I) in D dims: |m|^2 + D (1 + 4 - 2 * 2) = |m|^2 + D."""
    a = _gauss(20_000, 0, d=3)
    b = _gauss(20_000, 1, shift=1.0, scale=2.0, d=3)
    assert frechet_distance(a, b) == pytest.approx(3 + 3, rel=0.05)


def test_digits_classifier_floor_and_histogram():
    from diffflow_core.metrics.digits import REPORT, frechet_floor

    data = load_dataset("digits")
    model = digits_classifier()
    with torch.no_grad():
        accuracy = (model(data.test).argmax(1) == data.test_labels).double().mean().item()
    assert accuracy > 0.95
    report = __import__("json").loads(REPORT.read_text())
    assert report["test_accuracy"] == pytest.approx(accuracy, abs=1e-9)
    # the test images sit at the floor; noise-corrupted or single-class images are far above it
    real = frechet_digits(torch.cat([data.test, data.test]))
    assert real.fd == pytest.approx(real.floor, rel=1e-9) and real.chunks == 2
    assert real.floor == pytest.approx(frechet_floor(model), rel=1e-9)
    noisy = frechet_digits((data.train[:600] + 0.5 * torch.randn(600, 1, 8, 8, generator=torch.Generator().manual_seed(0))).clamp(-1, 1))
    assert noisy.ratio > 3
    hist = class_histogram(data.test)
    assert sum(hist.counts) == 300 and 0.08 < hist.min_share and hist.max_share < 0.12
    ones = class_histogram(data.train[data.train_labels == 1])
    assert ones.counts[1] > 0.9 * sum(ones.counts)
    with pytest.raises(ConfigError, match="at least 300"):
        frechet_digits(data.test[:100])
    with pytest.raises(ConfigError, match="64 values"):
        frechet_digits(torch.zeros(300, 2))


def test_classifier_training_is_deterministic():
    from diffflow_core.metrics.digits import train_digits_classifier

    (a, acc_a), (b, acc_b) = train_digits_classifier(epochs=1), train_digits_classifier(epochs=1)
    assert acc_a == acc_b and all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_metrics_registered():
    names = set(registry("metrics").names())
    assert {"w2", "sliced-w2", "mmd", "energy", "distances", "mode-coverage", "log-density", "frechet-digits",
            "class-histogram"} <= names


def _blobs(n, seed, d=5):
    """Two separated Gaussian blobs in ``d`` dimensions: a law whose distances do not vanish by accident."""
    g = torch.Generator().manual_seed(seed)
    side = torch.where(torch.rand(n, 1, generator=g) < 0.5, -1.5, 1.5).double()
    return side + 0.5 * torch.randn(n, d, generator=g, dtype=torch.float64)


def test_array_references_are_held_out_rows_without_replacement():
    data = load_dataset(_blobs(1000, 0))  # 900 train / 100 test rows
    assert reference_rows(data) == 100
    reference, partner = reference_draw(data, 100, 0)
    as_set = lambda rows: {tuple(r) for r in rows.float().tolist()}  # noqa: E731
    assert as_set(reference) == as_set(data.test) and as_set(partner) <= as_set(data.train)
    assert len(as_set(partner)) == 100  # no row drawn twice
    whole = load_dataset(_blobs(1000, 0), test_fraction=0)
    first, second = reference_draw(whole, 500, 1)
    assert reference_rows(whole) == 500 and not as_set(first) & as_set(second)
    with pytest.raises(ConfigError, match="at most 100 reference rows"):
        reference_draw(data, 101, 0)
    assert reference_rows(load_dataset("ring5", n_train=10, n_test=10)) > 10 ** 9  # a sampler: fresh draws


def test_data_distances_put_a_perfect_sampler_and_a_copier_at_the_floor_and_a_broken_one_above():
    data = load_dataset(_blobs(2000, 0))
    perfect = data_distances(lambda n, s: _blobs(n, 100 + s), data, n=200, seeds=3)
    copier = data_distances(lambda n, s: data.train[200 * s:200 * (s + 1)], data, n=200, seeds=3)
    broken = data_distances(lambda n, s: _blobs(n, 100 + s) + 1.0, data, n=200, seeds=3)
    assert perfect.sliced_w2.floors == broken.sliced_w2.floors  # one fixed floor per (data, n, seeds)
    for result in (perfect, copier):
        assert 0.6 < result.sliced_w2.ratio < 1.6
        for statistic in (result.mmd2, result.energy):
            assert statistic.mean < statistic.floor_mean + 4 * np.std(statistic.floors, ddof=1) + 0.02
    assert broken.sliced_w2.ratio > 2
    for statistic in (broken.mmd2, broken.energy):
        assert statistic.mean > statistic.floor_mean + 10 * max(np.std(statistic.floors, ddof=1), 1e-3)
    report = broken.as_dict()
    assert report["n"] == 200 and report["seeds"] == 3 and set(report["sliced_w2"]) >= {"model", "floor", "ratio"}
    assert "ratio" not in report["mmd2"] and "ratio" not in report["energy"]  # unbiased: floors scatter around 0
    images = load_dataset(torch.randn(300, 1, 4, 4, generator=torch.Generator().manual_seed(0)))
    flat = registry("metrics").create("distances", samples=[images.train[:30]], dataset=images, n=30)
    assert flat.seeds == 1 and flat.sliced_w2.floor_mean > 0


def test_a_zero_floor_gives_no_ratio_instead_of_dividing_by_zero():
    result = W2Result(0.5, 0.1, 0.0, 0.0, 100, 3, (0.4, 0.5, 0.6), (0.0, 0.0, 0.0))
    assert result.ratio is None and result.ratio_stderr is None and "undefined" in str(result)
    assert __import__("json").loads(__import__("json").dumps(result.as_dict()))["ratio"] is None
