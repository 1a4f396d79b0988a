"""Configs and build(): errors name the field, the value and the expectation; presets merge with overrides;
TOML files load; components receive the context they accept."""
from __future__ import annotations

import pytest
import torch

from diffflow_core import ConfigError, Flow, UnknownComponentError, build, load_config
from diffflow_core.config import ModelConfig, merge


class Tiny(Flow):
    """dx/dt = -rate * x (registered programmatically for these tests)."""

    def __init__(self, rate: float = 1.0, event_shape: tuple[int, ...] = (1,)) -> None:
        super().__init__()
        if rate <= 0:
            raise ConfigError(f"rate: expected a positive number, got {rate!r}")
        self.rate = rate
        self.event_shape = tuple(event_shape)

    def drift(self, x, t):
        return -self.rate * x


PRESET = {"summary": "tiny decay", "flow": {"name": "tiny", "rate": 2.0}, "solver": "heun",
          "train": {"steps": 10, "lr": 1e-3}, "sample": {"steps": 4, "n": 8}}


@pytest.fixture
def tiny(fresh_plugins, monkeypatch):
    monkeypatch.setenv("DIFFFLOW_LOAD_PLUGINS", "solvers")
    fresh_plugins.register("flows", "tiny", Tiny)
    fresh_plugins.register("presets", "tiny-preset", PRESET)
    return fresh_plugins


@pytest.mark.parametrize("raw,message", [
    ({"flow": "tiny", "flwo": {}}, "config: unknown section 'flwo'; did you mean 'flow'?; expected some of flow,"),
    ({"solver": "euler"}, "flow: a config must name a flow"),
    ({"flow": 3}, "flow: expected a component name or a table, got int"),
    ({"flow": {"rate": 1}}, "flow: expected a table with a 'name' key, got keys ['rate']"),
    ({"flow": {"name": ""}}, "flow.name: expected a non-empty component name, got ''"),
    ({"flow": "tiny", "train": {"stpes": 3}}, "train.stpes: unknown setting; did you mean 'steps'?"),
    ({"flow": "tiny", "train": {"steps": -1}}, "train.steps: expected a positive integer, got -1"),
    ({"flow": "tiny", "train": {"steps": 2.5}}, "train.steps: expected a positive integer, got 2.5"),
    ({"flow": "tiny", "train": {"lr": 0}}, "train.lr: expected a positive number, got 0"),
    ({"flow": "tiny", "train": {"ema": 1.0}}, "train.ema: expected a number in [0, 1), got 1.0"),
    ({"flow": "tiny", "train": {"warmup": -2}}, "train.warmup: expected an integer >= 0, got -2"),
    ({"flow": "tiny", "train": 5}, "train: expected a table, got int"),
    ({"flow": "tiny", "sample": {"steps": 0}}, "sample.steps: expected a positive integer, got 0"),
    ({"flow": "tiny", "sample": {"n": True}}, "sample.n: expected a positive integer, got True"),
])
def test_config_errors_name_field_value_and_expectation(raw, message):
    with pytest.raises(ConfigError) as err:
        ModelConfig.from_dict(raw)
    assert str(err.value).startswith(message), str(err.value)


def test_config_round_trips_through_a_dict():
    config = ModelConfig.from_dict({"flow": {"name": "tiny", "rate": 3.0}, "solver": "heun",
                                    "train": {"steps": 5, "betas": [0.5, 0.9]}, "summary": "s"})
    assert config.smoother.name == "identity" and config.objective is None
    assert ModelConfig.from_dict(config.as_dict()) == config


def test_unknown_component_parameter_suggests_the_right_one(tiny):
    with pytest.raises(ConfigError, match=r"flows 'tiny': unknown parameter 'rat'; did you mean 'rate'\?.*"
                                          r"accepted parameters: rate, event_shape"):
        build({"flow": {"name": "tiny", "rat": 2.0}})


def test_unknown_component_name_is_reported_with_suggestions(tiny):
    with pytest.raises(UnknownComponentError, match="unknown solver 'hune'; did you mean 'heun'"):
        build({"flow": "tiny", "solver": "hune"})
    with pytest.raises(UnknownComponentError, match="unknown preset 'tiny-prest'; did you mean 'tiny-preset'"):
        build(preset="tiny-prest")


def test_component_validation_errors_pass_through(tiny):
    with pytest.raises(ConfigError, match="^rate: expected a positive number, got -1"):
        build({"flow": {"name": "tiny", "rate": -1}})


def test_preset_plus_overrides_merge(tiny):
    config = load_config(preset="tiny-preset", overrides={"train": {"lr": 5e-4}, "flow": {"rate": 3.0}})
    assert config.preset == "tiny-preset" and config.summary == "tiny decay"
    assert (config.train.steps, config.train.lr) == (10, 5e-4)  # untouched keys kept, overridden ones replaced
    assert config.flow.params == {"rate": 3.0} and config.solver.name == "heun"
    # naming another component replaces its parameters instead of merging stale ones
    config = load_config(preset="tiny-preset", overrides={"solver": "euler", "flow": {"name": "other"}})
    assert config.solver.name == "euler" and config.flow.params == {}
    model = build(preset="tiny-preset", sample={"steps": 6})
    assert isinstance(model.flow, Tiny) and model.flow.rate == 2.0 and model.config.sample.steps == 6
    assert PRESET["sample"]["steps"] == 4, "the registered preset itself is never mutated"


def test_merge_is_deep_and_does_not_alias():
    base = {"flow": {"name": "a", "net": {"hidden": 8, "depth": 2}}, "train": {"steps": 1}}
    out = merge(base, {"flow": {"net": {"hidden": 16}}, "train": {"lr": 0.1}})
    assert out == {"flow": {"name": "a", "net": {"hidden": 16, "depth": 2}}, "train": {"steps": 1, "lr": 0.1}}
    out["flow"]["net"]["depth"] = 99
    assert base["flow"]["net"]["depth"] == 2


def test_toml_file_loads_and_builds(tiny, tmp_path):
    path = tmp_path / "model.toml"
    path.write_text('[flow]\nname = "tiny"\nrate = 0.5\n\n[solver]\nname = "heun"\n\n[sample]\nsteps = 8\nn = 16\n')
    model = build(path, event_shape=(3,))
    assert isinstance(model.flow, Tiny) and model.flow.rate == 0.5 and model.flow.event_shape == (3,)
    assert type(model.solver).__name__ == "Heun"
    samples = model.sample(seed=1)
    assert samples.x.shape == (16, 3) and samples.nfe == 16
    x0 = model.flow.prior(16, torch.Generator().manual_seed(1))
    assert torch.allclose(samples.x, x0 * torch.exp(torch.tensor(-0.5)), rtol=1e-3)


def test_toml_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="config: file '.*missing.toml' does not exist"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[flow\nname = 1")
    with pytest.raises(ConfigError, match="config: .*bad.toml is not valid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="config: expected a TOML path or a dict, got int"):
        load_config(3)


def test_build_from_a_model_config_applies_overrides(tiny):
    config = load_config({"flow": {"name": "tiny", "rate": 0.5}, "solver": "euler"})
    assert build(config).config is config
    model = build(config, solver="heun", flow={"rate": 4.0})
    assert type(model.solver).__name__ == "Heun" and model.flow.rate == 4.0
    assert config.solver.name == "euler", "the given config is not mutated"
