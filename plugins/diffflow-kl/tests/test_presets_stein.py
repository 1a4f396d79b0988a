"""SVGD's two forms (SPEC eq 18), the Stein smoother, and presets on data with and without a closed form."""
import math

import pytest
import torch

from diffflow_core import SamplingContext, build
from diffflow_core.data.mixture import GaussianMixture, ring5
from diffflow_core.errors import ConfigError
from diffflow_kl.sde import kl
from diffflow_kl.kernels import Gaussian, sq_dists
from diffflow_kl.scores import AnalyticSource
from diffflow_kl.stein import SteinSmoother

F64 = torch.float64


def test_both_svgd_forms_agree_for_a_gaussian_rho():
    """E_rho[k (s_q - s_rho)] (direct, exact s_rho) = E_rho[k s_q + grad_y k] (integration by parts), up to the
    Monte Carlo error of the Stein identity E_rho[k s_rho + grad_y k] = 0, checked against 5 standard errors."""
    rho = GaussianMixture([1.0], [[0.5, -0.3]], 0.9, n_train=2, n_test=2)
    x = rho.sample(3000, torch.Generator().manual_seed(0)).to(F64)
    t = torch.tensor(0.0, dtype=F64)
    h = 0.7
    ibp_flow = kl(target=ring5(n_train=2, n_test=2), particles=None, smooth_target=False)
    direct_flow = kl(target=ring5(n_train=2, n_test=2), particles=AnalyticSource(rho), smooth_target=False)
    ibp = SteinSmoother(bandwidth=h).velocity(ibp_flow, x, t, SamplingContext())
    direct = SteinSmoother(bandwidth=h, form="direct").velocity(direct_flow, x, t, SamplingContext())
    # per-point standard error of the mean of the Stein-identity terms, on the first 40 points
    q = x[:40]
    k = Gaussian(h)(q, x)
    terms = -k[..., None] * rho.score(x)[None] - k[..., None] * (q[:, None] - x[None]) / h ** 2
    se = terms.std(1) / math.sqrt(x.shape[0])
    diff = (direct - ibp)[:40]
    assert bool((diff.abs() < 5 * se + 1e-3).all())
    assert ibp.abs().mean() > 20 * se.mean()  # the velocity itself is far above the tolerance
    flipped = SteinSmoother(bandwidth=h).velocity(ibp_flow, x, t, SamplingContext()) - 2 * (ibp - Gaussian(h)(x, x) @ ibp_flow.target_score(x, t) / x.shape[0])
    assert not bool(((direct - flipped)[:40].abs() < 5 * se + 1e-3).all())


def test_stein_smoother_median_bandwidth_and_direct_smoothing():
    x = torch.randn(300, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    smoother = SteinSmoother(scale=0.5)
    h = smoother.kernel(x).bandwidths[0]
    med = sq_dists(x, x)[~torch.eye(300, dtype=torch.bool)].median()
    assert h == pytest.approx(0.5 * math.sqrt(float(med) / (2 * math.log(301))))
    flow = kl(target=ring5(n_train=2, n_test=2), particles="gaussian", smooth_target=False)
    v = SteinSmoother(form="direct", bandwidth=1.0).velocity(flow, x, torch.tensor(0.0, dtype=F64),
                                                            SamplingContext())
    expected = Gaussian(1.0)(x, x) @ flow.drift(x, torch.tensor(0.0, dtype=F64)) / 300
    assert torch.allclose(v, expected, atol=1e-12)
    with pytest.raises(ConfigError, match="bandwidth"):
        SteinSmoother(bandwidth="silverman")


@pytest.mark.parametrize("preset", ["langevin", "annealed-langevin", "kl", "svgd", "diffflow-sde", "diffflow-ve",
                                    "diffflow-pf-ode", "diffflow-gan-kde", "diffflow-nsgan-kde"])
def test_presets_run_on_data_with_and_without_closed_form(preset):
    """A preset uses the dataset's analytic score when it has one and a KDE of data samples otherwise."""
    data = torch.randn(500, 2, generator=torch.Generator().manual_seed(0)) + torch.tensor([2.0, 0.0])
    for source in ("ring5", data):
        model = build(preset=preset, data=source)
        out = model.sample(64, steps=4, seed=0)
        assert out.x.shape == (64, 2) and bool(torch.isfinite(out.x).all()) and out.nfe >= 4
    again = build(preset=preset, data="ring5")
    assert torch.equal(again.sample(64, steps=4, seed=3).x, again.sample(64, steps=4, seed=3).x)
