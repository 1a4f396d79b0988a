"""The testing kit (``diffflow_core.testing``) and the kernel's contract suite it runs.

The contract suite runs over every solver and flow the registries hold (every installed plugin's), so a new
plugin is checked without editing this file. The kit's checks are themselves tested on components that break
the contract, so they can fail. ``hookimpl`` must import without torch, so a plugin's hook module stays cheap.
"""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import Tensor

from diffflow_core import Flow, Solver, build, load_config, plugins, registry
from diffflow_core.testing import Decay, check_flow, check_solver, decay_problem, fitted_order

SOLVERS = registry("solvers").names()
FLOWS = registry("flows").names()


#: Flows made of other models, which no preset builds: the smallest config of each (``{teacher}`` is the path of
#: a saved ``rectified-flow`` model).
ASSEMBLED = {
    "compose": {"name": "compose", "terms": [{"flow": {"name": "velocity"}, "weight": 0.5},
                                             {"flow": {"name": "velocity"}, "weight": 0.5}]},
    "distill": {"name": "distill", "teacher": "{teacher}", "network": {"name": "mlp", "hidden": 16, "depth": 2}},
    "discriminator-guidance": {"name": "discriminator-guidance", "base": "{teacher}",
                               "network": {"name": "mlp", "hidden": 16, "depth": 2}},
}


def _flow(name: str, tmp_path) -> Flow:
    """A registered flow as its first preset builds it, an assembled one from :data:`ASSEMBLED`, else built on
    ``moons`` with default parameters."""
    if name in ASSEMBLED:
        teacher = tmp_path / "teacher.pt"
        build(preset="rectified-flow", flow={"network": {"name": "mlp", "hidden": 16, "depth": 2}}).save(teacher)
        spec = {k: (str(teacher) if v == "{teacher}" else v) for k, v in ASSEMBLED[name].items()}
        return build({"flow": spec, "solver": "euler"}, data="moons").flow
    presets = [p for p in registry("presets").names() if load_config(preset=p).flow.name == name]
    model = build(preset=presets[0]) if presets else build({"flow": {"name": name}}, data="moons")
    return model.flow


@pytest.mark.parametrize("name", SOLVERS)
def test_every_registered_solver_keeps_the_contract(name):
    check_solver(registry("solvers").create(name))


@pytest.mark.parametrize("name", FLOWS)
def test_every_registered_flow_keeps_the_contract(name, tmp_path):
    check_flow(_flow(name, tmp_path))


class _Euler(Solver):
    order = 1

    def step(self, drift, x, t0, t1):
        return x + (t1 - t0) * drift.velocity(x, t0)


class _ClaimsOrderTwo(_Euler):
    order = 2


class _UndercountsNfe(_Euler):
    def nfe(self, steps, flow):
        return super().nfe(steps, flow) - 1


class _DrawsOnItsOwn(_Euler):
    """Random noise from the global generator, not the solve's: not reproducible from a seed."""

    def step(self, drift, x, t0, t1):
        return super().step(drift, x, t0, t1) + 1e-9 * torch.randn(x.shape, dtype=x.dtype)


def test_check_solver_passes_a_correct_solver_and_measures_its_order():
    check_solver(_Euler())
    assert fitted_order(_Euler(), decay_problem()) == pytest.approx(1.0, abs=0.1)


@pytest.mark.parametrize("solver,message", [(_ClaimsOrderTwo(), "measured order"),
                                            (_UndercountsNfe(), "declared nfe"),
                                            (_DrawsOnItsOwn(), "differ")])
def test_check_solver_catches_a_broken_solver(solver, message):
    with pytest.raises(AssertionError, match=message):
        check_solver(solver)


class _WrongShape(Decay):
    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        return x[:, :1]


class _Unseeded(Decay):
    """Draws its drift noise from the global generator instead of the context's."""

    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        return -x + torch.randn(x.shape)


@pytest.mark.parametrize("flow,message", [(_WrongShape(), "shape"), (_Unseeded(), "same seed")])
def test_check_flow_catches_a_broken_flow(flow, message):
    flow.event_shape = (3,)
    with pytest.raises(AssertionError, match=message):
        check_flow(flow)


def test_fresh_plugins_is_isolated_and_restores_the_previous_manager(fresh_plugins):
    outer = fresh_plugins.manager()
    fresh_plugins.register("flows", "kit-only", Decay)
    with plugins.isolated() as inner:
        assert inner is plugins.manager() is not outer
        assert "kit-only" not in registry("flows")
    assert plugins.manager() is outer and "kit-only" in registry("flows")


def test_plugins_are_listed_before_any_registry_is_used():
    with plugins.isolated() as manager:
        assert manager.plugins["core"].status == "active"
        assert manager.plugins["solvers"].components > 0


def test_hookimpl_imports_without_torch():
    """``from diffflow_core import hookimpl`` (every plugin's hook module) loads neither torch nor plugins,
    while the package's heavy exports still resolve on first use."""
    code = ("import sys; from diffflow_core import hookimpl; assert 'torch' not in sys.modules, 'torch imported'; "
            "from diffflow_core import build, Flow, Model, Dataset, SampledDataset; "
            "import diffflow_core.model; assert callable(build) and diffflow_core.build is build")
    subprocess.run([sys.executable, "-c", code], check=True)
