"""Model configuration: attrs classes with validators whose errors name the field, the value and the expectation.

A config names the four parts and their parameters, plus data, training and sampling settings. It comes
from a dict, a TOML file, or a preset (a dict registered under ``presets``) with overrides merged on top::

    [flow]
    name = "score"
    parameterisation = "edm"
    [objective]
    name = "dsm-edm"
    [solver]
    name = "heun"
    [train]
    steps = 2000
"""
from __future__ import annotations

import copy
import json
import tomllib
from pathlib import Path
from typing import Any

import attrs

from diffflow_core import validation as check
from diffflow_core.errors import ConfigError, did_you_mean

__all__ = ["ComponentSpec", "TrainConfig", "SampleConfig", "ModelConfig", "load_config", "merge"]


def _betas(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    """Adam's two decay rates, each in [0, 1)."""
    expected = "two numbers in [0, 1) (e.g. [0.9, 0.999])"
    listed = list(value) if isinstance(value, tuple) else value
    if not isinstance(value, tuple) or len(value) != 2:
        raise ConfigError(f"train.{attribute.name}: expected {expected}, got {listed!r}")
    for beta in value:
        check.in_range(f"train.{attribute.name}", beta, 0, 1, expected=f"{expected}; {listed!r} holds")


def _pair(value: Any) -> Any:
    """Lists become tuples; anything else is left for the validator to name as it was given."""
    return tuple(value) if isinstance(value, (list, tuple)) else value


#: the dtypes a training forward pass may run in (autocast); parameters, optimiser state and EMA stay float32
PRECISIONS = ("float32", "bfloat16", "float16")


@attrs.define
class ComponentSpec:
    """A component by registry name plus constructor parameters."""

    name: str = attrs.field()
    params: dict[str, Any] = attrs.field(factory=dict)

    @name.validator
    def _check_name(self, attribute: attrs.Attribute, value: Any) -> None:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"name: expected a non-empty component name, got {value!r}")

    @classmethod
    def parse(cls, field: str, value: Any) -> "ComponentSpec | None":
        if value is None or isinstance(value, ComponentSpec):
            return value
        if isinstance(value, str):
            name, params = value, {}
        elif isinstance(value, dict):
            if "name" not in value:
                raise ConfigError(f"{field}: expected a table with a 'name' key, got keys {sorted(value)}")
            name, params = value["name"], {k: v for k, v in value.items() if k != "name"}
        else:
            raise ConfigError(f"{field}: expected a component name or a table, got {type(value).__name__}")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{field}.name: expected a non-empty component name, got {name!r}")
        return cls(name, params)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self.params}


@attrs.define
class TrainConfig:
    """Training-engine settings shared by every family."""

    steps: int = check.attrs_field(check.positive_int, default=1000)
    batch_size: int = check.attrs_field(check.positive_int, default=128)
    lr: float = check.attrs_field(check.positive, default=2e-4)
    betas: tuple[float, float] = attrs.field(default=(0.9, 0.999), converter=_pair, validator=_betas)
    weight_decay: float = check.attrs_field(check.non_negative, default=0.0)
    warmup: int = check.attrs_field(check.non_negative_int, default=0)
    #: the learning rate falls linearly towards 0 over this fraction of the steps at the end (0 = constant)
    decay: float = check.attrs_field(check.in_range, 0, 1, default=0.0)
    grad_clip: float | None = check.attrs_field(check.positive, default=None, optional=True)
    #: "bfloat16" / "float16" run every loss's forward (and so its backward) under autocast: matrix products in
    #: the low precision with float32 master weights; faster where the hardware multiplies it natively (CPUs with
    #: AMX, recent GPUs; timings in docs/benchmarks/discriminator.md). float16's narrow range needs loss scaling:
    #: one ``torch.amp.GradScaler`` per player (skipped steps on overflow), checkpointed so resume stays exact
    precision: str = check.attrs_field(check.one_of, PRECISIONS, default="float32")
    #: gradient accumulation: each optimiser step averages the gradients of ``accumulate`` micro-batches of
    #: ``batch_size`` (each loss divided by ``accumulate``), so it equals one step on a batch of
    #: ``accumulate * batch_size`` for a loss that is a mean over the batch; memory stays that of one micro-batch
    accumulate: int = check.attrs_field(check.positive_int, default=1)
    #: ``torch.compile`` the model's networks (the modules of the ``networks`` registry) for the duration of ``fit``;
    #: where the compiler cannot run, one warning line and eager training
    compile: bool = check.attrs_field(check.boolean, default=False)
    #: image networks in channels-last memory layout (parameters and image batches) for the duration of ``fit``:
    #: the layout cuDNN's and oneDNN's fastest convolution kernels use; image data only
    channels_last: bool = check.attrs_field(check.boolean, default=False)
    #: ``DataLoader`` processes that read and convert the batches (:class:`~diffflow_core.data.loader.LoaderStream`,
    #: the same stream for any positive count); 0 reads them in the training process (the stream of every earlier
    #: checkpoint), so changing between 0 and more changes the batches
    workers: int = check.attrs_field(check.non_negative_int, default=0)
    #: under ``torchrun``: let DDP find, every step, the parameters a player's loss left without a gradient (a
    #: branch not taken); off, such a step is a one-line error naming the player, since DDP would wait for them
    find_unused_parameters: bool = check.attrs_field(check.boolean, default=False)
    #: the EMA's final per-step decay (0 = no EMA); its half-life in steps is ln 0.5 / ln ema (693 for 0.999)
    ema: float = check.attrs_field(check.in_range, 0, 1, default=0.0)
    #: EMA warm-up (EDM's ``ema_rampup``): after s steps the half-life is min(ln 0.5 / ln ema, ema_rampup * s),
    #: so short runs average recent weights rather than the random start; 0 = a fixed decay from step 1
    ema_rampup: float = check.attrs_field(check.number, 0, default=0.05)
    seed: int = check.attrs_field(check.integer, default=0)
    log_every: int = check.attrs_field(check.positive_int, default=50)
    eval_every: int | None = check.attrs_field(check.positive_int, default=None, optional=True)
    checkpoint_every: int | None = check.attrs_field(check.positive_int, default=None, optional=True)
    progress: bool = check.attrs_field(check.boolean, default=True)


@attrs.define
class SampleConfig:
    """Default sampling settings: number of solver steps and samples, and the cost of the evaluation's test NLL."""

    steps: int = check.attrs_field(check.positive_int, default=35)
    n: int = check.attrs_field(check.positive_int, default=2000)
    #: the evaluation's test NLL: held-out points and probability-flow ODE steps (Heun) of the likelihood solve
    likelihood_points: int = check.attrs_field(check.positive_int, default=256)
    likelihood_steps: int = check.attrs_field(check.positive_int, default=128)
    #: particles solved together (:meth:`Model.sample`'s ``batch``); None: automatic, by device and sample size
    batch: int | None = check.attrs_field(check.positive_int, default=None, optional=True)


_SECTIONS = ("flow", "objective", "smoother", "solver", "data", "train", "sample", "preset", "summary")


@attrs.define
class ModelConfig:
    """What ``build`` needs: the four parts, the data, training and sampling settings."""

    flow: ComponentSpec
    objective: ComponentSpec | None = None
    smoother: ComponentSpec = attrs.Factory(lambda: ComponentSpec("identity"))
    solver: ComponentSpec = attrs.Factory(lambda: ComponentSpec("euler"))
    data: ComponentSpec | None = None
    train: TrainConfig = attrs.Factory(TrainConfig)
    sample: SampleConfig = attrs.Factory(SampleConfig)
    preset: str | None = None
    summary: str = ""

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "ModelConfig":
        if not isinstance(raw, dict):
            raise ConfigError(f"config: expected a table, got {type(raw).__name__}")
        for key in raw:
            if key not in _SECTIONS:
                raise ConfigError(f"config: unknown section {key!r}{did_you_mean(key, _SECTIONS)}; "
                                  f"expected some of {', '.join(_SECTIONS)}")
        if "flow" not in raw:
            raise ConfigError("flow: a config must name a flow (e.g. flow = {name = 'score'})")
        kwargs: dict[str, Any] = {k: ComponentSpec.parse(k, raw.get(k)) for k in ("flow", "objective", "data")}
        for key in ("smoother", "solver"):
            if raw.get(key) is not None:
                kwargs[key] = ComponentSpec.parse(key, raw[key])
        kwargs["train"] = _settings(TrainConfig, "train", raw.get("train", {}))
        kwargs["sample"] = _settings(SampleConfig, "sample", raw.get("sample", {}))
        kwargs["preset"] = raw.get("preset")
        kwargs["summary"] = raw.get("summary", "")
        return cls(**kwargs)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"flow": self.flow.as_dict(), "smoother": self.smoother.as_dict(),
                               "solver": self.solver.as_dict(), "train": attrs.asdict(self.train),
                               "sample": attrs.asdict(self.sample)}
        if self.objective is not None:
            out["objective"] = self.objective.as_dict()
        if self.data is not None:
            out["data"] = self.data.as_dict()
        if self.preset:
            out["preset"] = self.preset
        if self.summary:
            out["summary"] = self.summary
        out["train"]["betas"] = list(out["train"]["betas"])
        return out


def _settings(cls: type, section: str, raw: Any) -> Any:
    if isinstance(raw, cls):
        return raw
    if not isinstance(raw, dict):
        raise ConfigError(f"{section}: expected a table, got {type(raw).__name__}")
    names = [f.name for f in attrs.fields(cls)]
    for key in raw:
        if key not in names:
            raise ConfigError(f"{section}.{key}: unknown setting{did_you_mean(key, names)}; "
                              f"expected some of {', '.join(names)}")
    return cls(**raw)


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``overrides`` into a copy of ``base``; a new component name replaces its parameters."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        current = out.get(key)
        if isinstance(current, dict) and isinstance(value, dict):
            if "name" in value and value["name"] != current.get("name"):
                out[key] = copy.deepcopy(value)
            else:
                out[key] = merge(current, value)
        elif isinstance(current, dict) and isinstance(value, str) and key in ("flow", "objective", "smoother",
                                                                             "solver", "data"):
            out[key] = {"name": value} if value != current.get("name") else current
        else:
            out[key] = copy.deepcopy(value)
    return out


def _read_config_file(path: Path) -> dict[str, Any]:
    """A TOML file, or JSON for a ``.json`` file (a run folder's ``config.json`` is reusable as a config)."""
    if not path.exists():
        raise ConfigError(f"config: file {str(path)!r} does not exist")
    if not path.is_file():
        raise ConfigError(f"config: {str(path)!r} is not a file (expected a TOML or JSON config)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"config: {path} is not UTF-8 text (expected a TOML or JSON config)") from None
    if path.suffix == ".json":
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"config: {path} is not valid JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"config: {path} holds a JSON {type(raw).__name__}, expected an object")
        return raw
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config: {path} is not valid TOML: {exc}") from None


def load_config(source: str | Path | dict[str, Any] | None = None, *, preset: str | None = None,
                overrides: dict[str, Any] | None = None) -> ModelConfig:
    """A validated :class:`ModelConfig` from a TOML file, a dict, or a preset, with ``overrides`` on top."""
    raw: dict[str, Any] = {}
    if isinstance(source, (str, Path)):
        path = Path(source)
        raw = _read_config_file(path)
    elif isinstance(source, dict):
        raw = copy.deepcopy(source)
    elif source is not None:
        raise ConfigError(f"config: expected a TOML path or a dict, got {type(source).__name__}")
    preset = preset or raw.pop("preset", None)
    if preset:
        from diffflow_core.plugins import registry

        base = copy.deepcopy(registry("presets").get(preset))
        raw = merge(base, raw)
        raw["preset"] = preset
    config = ModelConfig.from_dict(merge(raw, overrides or {}))
    return config
