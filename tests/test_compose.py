"""The ``compose`` flow (diffflow_core.compose): closed forms of the drift algebra and its refusals."""
from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from diffflow_core import build
from diffflow_core.compose import ComposedFlow, ImpliedDenoiser
from diffflow_core.errors import ConfigError
from diffflow_core.interfaces import Flow, SamplingContext
from diffflow_core.plugins import registry
from diffflow_core.testing import AnalyticNetwork

C2 = 0.7 ** 2  # data law N(0, C2 I) of the analytic fields
TINY = {"name": "mlp", "hidden": 16, "depth": 2}


class GaussianScore(Flow):
    """Langevin flow of N(mean, s^2) in 1-D: drift = its score, diffusion sqrt(2) (SPEC §2.2 eq 4) or none."""

    def __init__(self, mean: float, std: float, noise: bool = False) -> None:
        super().__init__()
        self.mean, self.std, self.noise = mean, std, noise
        self.event_shape = (1,)

    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        return -(x - self.mean) / self.std ** 2

    def diffusion(self, t: Tensor) -> float:
        return math.sqrt(2.0) if self.noise else 0.0



def gaussian_denoiser(x: Tensor, sigma: Tensor) -> Tensor:
    """``E[y | y + sigma eps = x]`` for ``y ~ N(0, C2 I)``."""
    return C2 * x / (C2 + sigma ** 2)


def edm_flow(network=None) -> Flow:
    return registry("flows").create("score", parameterisation="edm", precondition=network is None,
                                    network=network or TINY, event_shape=(2,))


def rf_flow(network) -> Flow:
    return registry("flows").create("velocity", network=network, event_shape=(2,))


def exact_rf() -> Flow:
    """Rectified flow's optimum for N(0, C2 I) data: ``f = (E[y | x_t] - x_t) / (1 - t)``, ``x_t / t = y + sigma eps``
    with ``sigma = (1 - t) / t`` (SPEC §4.1)."""
    return rf_flow(AnalyticNetwork(lambda x, t: (gaussian_denoiser(x / t, (1 - t) / t) - x) / (1 - t)))


def compose(terms, event_shape=(2,)) -> ComposedFlow:
    return registry("flows").create("compose", terms=terms, event_shape=event_shape)


SIGMAS = torch.tensor([0.05, 0.3, 1.0, 4.0, 19.0])


def test_weighted_gaussian_scores_move_a_gaussian_as_the_geometric_mixture():
    """``w s_1 + (1 - w) s_2`` is the score of N(m, s^2), ``m = w m1 + (1 - w) m2``: under Langevin dynamics
    N(m0, v0) keeps Gaussian with mean ``m + (m0 - m) e^{-t/s^2}`` and variance ``s^2 + (v0 - s^2) e^{-2t/s^2}``."""
    w, s, m1, m2 = 0.3, 0.8, 2.0, -1.0
    flow = compose([{"flow": GaussianScore(m1, s, noise=True), "weight": w},
                    {"flow": GaussianScore(m2, s), "weight": 1 - w}], event_shape=(1,))
    m = w * m1 + (1 - w) * m2
    x = torch.linspace(-3, 3, 7).reshape(-1, 1)
    torch.testing.assert_close(flow.evaluate_drift(x, torch.tensor(0.0)), -(x - m) / s ** 2)
    assert flow.is_stochastic
    generator = torch.Generator().manual_seed(0)
    x0 = 0.5 + 0.4 * torch.randn(100_000, 1, generator=generator)
    end, steps = 1.0, 200
    out = registry("solvers").create("euler-maruyama").solve(flow, x0, torch.linspace(0, end, steps + 1),
                                                             generator=generator).x
    mean = m + (0.5 - m) * math.exp(-end / s ** 2)
    var = s ** 2 + (0.16 - s ** 2) * math.exp(-2 * end / s ** 2)
    assert abs(float(out.mean()) - mean) < 0.015
    assert abs(float(out.var()) - var) < 0.03 * var


def test_classifier_free_guidance_as_a_composition_equals_built_in_guidance():
    """Terms ``w * cond + (1 - w) * uncond`` equal the flow's own ``guidance = w`` (SPEC §4.4); ``w = 1`` is the
    conditional flow."""
    torch.manual_seed(0)
    flow = registry("flows").create("velocity", network=TINY, conditional=True, num_classes=3, event_shape=(2,))
    x, t = torch.randn(6, 2), torch.tensor(0.4)
    for w in (1.0, 2.5):
        guided = compose([{"flow": flow, "weight": w, "options": {"label": 1}},
                          {"flow": flow, "weight": 1 - w}])
        expected = flow.evaluate_drift(x, t, SamplingContext(options=flow.check_sampling_options(
            {"label": 1, "guidance": w})))
        torch.testing.assert_close(guided.evaluate_drift(x, t), expected)
    torch.testing.assert_close(guided.term_drift(0, x, t), flow.field(x, t, torch.ones(6, dtype=torch.long)))


@pytest.mark.parametrize("term", ["rf", "vp"])
def test_a_noise_mapped_term_is_the_same_flow_on_the_edm_axis(term):
    """For N(0, C2) data, rectified flow's and VP's exact PF-ODEs mapped onto EDM's sigma axis by (C1) are EDM's
    exact PF-ODE ``(x - D(x; sigma)) / sigma`` (SPEC §2.2 eq 8): one law, two clocks."""
    if term == "rf":
        other = exact_rf()
    else:  # VP's eps_hat = -std * score, score of x_t ~ N(0, alpha^2 C2 + std^2) (precondition=False)
        vp = registry("flows").create("score", parameterisation="vp", precondition=False, network=TINY,
                                      event_shape=(2,))
        schedule = vp.schedule
        vp.net = AnalyticNetwork(lambda x, t: schedule.std(t) * x
                                 / (schedule.alpha(t) ** 2 * C2 + schedule.std(t) ** 2))
        other = vp
    exact_edm = edm_flow(AnalyticNetwork(gaussian_denoiser))
    composite = compose([{"flow": exact_edm, "weight": 0.0}, {"flow": other, "time": "noise"}])
    x = torch.randn(len(SIGMAS), 2, generator=torch.Generator().manual_seed(1)) * 3
    expected = (x - gaussian_denoiser(x, SIGMAS[:, None])) / SIGMAS[:, None]
    torch.testing.assert_close(composite.evaluate_drift(x, SIGMAS), expected, rtol=2e-4, atol=2e-5)
    torch.testing.assert_close(ImpliedDenoiser(other).denoise(x, SIGMAS), gaussian_denoiser(x, SIGMAS[:, None]),
                               rtol=2e-4, atol=2e-5)


def test_a_composition_across_conventions_matches_the_hand_mapped_drift():
    """EDM axis + rectified-flow term (a random network): ``tau = 1 / (1 + sigma)``, ``x_rf = tau x``, so
    ``A[f](x, sigma) = (f(tau x, tau) tau' - tau' x) / tau`` with ``tau' = -1 / (1 + sigma)^2``; the weights add."""
    torch.manual_seed(0)
    edm, rf = edm_flow(), rf_flow(TINY)
    composite = compose([{"flow": edm, "weight": 0.5}, {"flow": rf, "weight": 2.0, "time": "noise"}])
    x = torch.randn(len(SIGMAS), 2)
    tau = 1 / (1 + SIGMAS)
    rate = (-1 / (1 + SIGMAS) ** 2)[:, None]
    mapped = (rf.field(tau[:, None] * x, tau) * rate - rate * x) / tau[:, None]
    expected = 0.5 * edm.evaluate_drift(x, SIGMAS) + 2.0 * mapped
    torch.testing.assert_close(composite.evaluate_drift(x, SIGMAS), expected, rtol=1e-5, atol=1e-5)
    assert composite.time_grid(4)[0] == edm.time_grid(4)[0] and composite.singular_end


def test_linear_weight_schedule_runs_over_the_composite_grid():
    """``{kind = "linear", start, end}``: ``start`` at the grid's first time (EDM: sigma_max), ``end`` at its last."""
    edm = registry("flows").create("score", parameterisation="edm", sigma_max=20.0, network=TINY, event_shape=(2,))
    ramp = compose([{"flow": edm, "weight": {"kind": "linear", "start": 2.0, "end": 0.0}}])
    x = torch.randn(3, 2)
    for sigma, w in ((20.0, 2.0), (10.0, 1.0), (1.0, 0.1)):
        torch.testing.assert_close(ramp.evaluate_drift(x, torch.tensor(sigma)),
                                   w * edm.evaluate_drift(x, torch.tensor(sigma)))


def test_terms_from_config_and_checkpoint(tmp_path):
    """``flow = {name = "compose", terms = [...]}`` builds its terms through the registry; a ``checkpoint`` term is the
    saved model's flow (loaded once per path); the composite samples like any flow."""
    teacher = build(preset="rectified-flow", data="ring5", flow={"network": TINY})
    path = str(tmp_path / "rf.pt")
    teacher.save(path)
    model = build({"flow": {"name": "compose", "terms": [
        {"checkpoint": path, "weight": 1.5}, {"checkpoint": path, "weight": -0.5}]},
        "solver": "euler", "data": "ring5"})
    composite = model.flow
    assert composite.terms[0] is composite.terms[1]
    x, t = torch.randn(5, 2), torch.tensor(0.3)
    torch.testing.assert_close(composite.evaluate_drift(x, t), teacher.flow.evaluate_drift(x, t))
    assert model.sample(16, 4).x.shape == (16, 2)
    spec = build({"flow": {"name": "compose", "terms": [{"flow": {"name": "velocity", "network": TINY}}]},
                  "data": "ring5"})
    assert spec.flow.terms[0].event_shape == (2,)


@pytest.mark.parametrize("terms, message", [
    ([], "terms: expected a non-empty list"),
    ([{"weight": 1.0}], "exactly one of 'flow'"),
    ([{"flow": "velocity", "wieght": 1.0}], "unknown keys ['wieght']"),
    ([{"flow": "velocity", "weight": "big"}], "terms[0].weight: expected a finite number"),
    ([{"flow": "velocity", "weight": {"kind": "cosine", "start": 1, "end": 0}}], "terms[0].weight"),
    ([{"flow": "velocity", "time": "sigma"}], "terms[0].time: expected one of identity, noise"),
    ([{"flow": {"name": "score", "network": TINY}}, {"flow": {"name": "velocity", "network": TINY}}],
     "terms[1].time: flow VelocityFlow runs on another noise-level convention"),
    ([{"flow": {"name": "score", "network": TINY}}, {"flow": {"name": "mmd"}, "time": "noise"}],
     "terms[1].time: 'noise' maps noise levels, but flow MMDFlow declares none"),
    ([{"flow": {"name": "score", "network": TINY}}, {"flow": {"name": "score", "network": TINY, "mode": "sde"}}],
     "terms[1]: flow ScoreFlow is stochastic"),
])
def test_refusals_are_one_line(terms, message):
    with pytest.raises(ConfigError) as info:
        build({"flow": {"name": "compose", "terms": terms}, "data": "ring5"})
    assert message in str(info.value) and "\n" not in str(info.value)
