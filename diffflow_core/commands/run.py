"""``diffflow run``: the main job. Train (when the model has an objective), sample, evaluate and draw into a
run folder. With no arguments it runs the embedded default, EDM on ``ring5``.

A run folder holds ``config.json``, ``checkpoint.pt``, ``metrics.jsonl``/``metrics.csv`` (training logs),
``samples.npy`` (float32 ``[N, *shape]`` in data space), ``metrics.json`` (evaluation) and the pictures that
:func:`diffflow_core.evaluation.draw` lists.

The arguments that choose a model are shared with ``diffflow train``: a config file and/or a preset, then
``--set section.key=value`` overrides (values parsed as TOML), then the dedicated flags (``--data``,
``--steps``, ``--seed``, ``--solver``). ``--resume`` continues the run folder's own ``config.json``.
"""
from __future__ import annotations

import json
import re
import time
import tomllib
from pathlib import Path
from typing import Any

from diffflow_core import references
from diffflow_core.errors import ConfigError
from diffflow_core.runfolder import RESUMABLE, RunFolder

#: What ``diffflow run`` does with no arguments (the preset carries its data, ``ring5``).
DEFAULT_PRESET = "edm"
#: An unquoted ``--set`` value taken as a string: a name (``heun``) or a path (``/a/b.pt``, ``./x``, ``~/x``).
_BARE_WORD = re.compile(r"(?:[A-Za-z_]|\.{0,2}/|~/)[\w.\-/~]*")


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="train, sample, evaluate and draw into a run folder (the main job)")
    model_arguments(p)
    sampling_arguments(p)
    p.set_defaults(func=run)


def model_arguments(p) -> None:
    """The arguments that choose and configure a model (shared by run and train)."""
    p.add_argument("config", nargs="?", help="a TOML or JSON config (a run folder's config.json too; "
                                             "default: the embedded EDM-on-ring5 job)")
    p.add_argument("--preset", help="a registered preset to start from (see 'diffflow presets')")
    p.add_argument("--data", help="a dataset name or a .npy file [N, *shape] (default: the preset's)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", dest="assignments",
                   help="override one config value, parsed as TOML (a bare word or path is a string); repeatable, "
                        "e.g. --set train.lr=1e-3 --set flow.network.hidden=256")
    p.add_argument("--steps", type=int, help="training steps (train.steps)")
    p.add_argument("--seed", type=int, help="seed of training and sampling (default: train.seed, 0)")
    p.add_argument("--solver", help="the sampling solver by name (see 'diffflow list solvers')")
    runtime_arguments(p)
    p.add_argument("--out", help="run folder (default: runs/<name>-<data>-<time>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its checkpoint, with its own config.json")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run that --out already holds (without it, such a folder is refused)")


def runtime_arguments(p) -> None:
    """Where the work runs (every command that builds or loads a model)."""
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available, else cpu)")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: one per idle core)")


def sampling_arguments(p) -> None:
    """The arguments of a sampling call (run, sample, eval)."""
    p.add_argument("--nfe", type=int, help="sampling budget in drift evaluations (sets the solver steps)")
    p.add_argument("--n", type=int, help="number of samples (default: the config's sample.n)")
    p.add_argument("--label", type=int, help="class label to sample (conditional flows)")
    p.add_argument("--guidance", type=float, help="classifier-free guidance weight (conditional flows)")
    p.add_argument("--grid", help="the sampling time grid by name (see 'diffflow list grids'; default: the flow's)")


def parse_assignment(text: str) -> dict[str, Any]:
    """``"flow.network.hidden=256"`` -> ``{"flow": {"network": {"hidden": 256}}}``; the value is TOML."""
    key, sep, value = text.partition("=")
    path = key.strip().split(".")
    if not sep or not all(re.fullmatch(r"[A-Za-z_][\w\-]*", part) for part in path):
        raise ConfigError(f"--set: expected SECTION.KEY=VALUE (e.g. train.lr=1e-3), got {text!r}")
    value = value.strip()
    try:
        parsed: Any = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        if not _BARE_WORD.fullmatch(value):
            raise ConfigError(f"--set {key.strip()}: {value!r} is not a TOML value (a number, true/false, "
                              "a quoted string, an array or an inline table)") from None
        parsed = value  # a bare word: --set solver.name=heun
    out: dict[str, Any] = {path[-1]: parsed}
    for part in reversed(path[:-1]):
        out = {part: out}
    return out


def overrides_from(args) -> dict[str, Any]:
    """The config overrides of ``--set`` then the dedicated flags; a flag contradicting a ``--set`` is an error."""
    from diffflow_core.config import merge

    overrides: dict[str, Any] = {}
    for text in args.assignments:
        overrides = merge(overrides, parse_assignment(text))
    flags = {("train", "steps"): ("--steps", args.steps), ("train", "seed"): ("--seed", args.seed)}
    for (section, key), (flag, value) in flags.items():
        if value is None:
            continue
        if flag == "--steps" and value < 1:
            raise ConfigError(f"--steps: expected a positive number of training steps, got {value}")
        given = overrides.get(section, {}).get(key, value)
        if given != value:
            raise ConfigError(f"{flag} {value} contradicts --set {section}.{key}={given}; give one of them")
        overrides.setdefault(section, {})[key] = value
    if args.solver is not None:
        named = overrides.get("solver")
        named = named if isinstance(named, str) or named is None else named.get("name")
        if named is not None and named != args.solver:
            raise ConfigError(f"--solver {args.solver} contradicts --set solver={named}; give one of them")
        overrides["solver"] = {"name": args.solver}
    return overrides


def resolve_device(name: str | None):
    """``--device``: the named device, or CUDA when available; an unusable one is a one-line error."""
    import torch

    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"--device: expected cpu, cuda or cuda:N, got {name!r}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device: {name!r} is not available on this machine (no CUDA device); "
                              "expected cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"--device: {name!r} does not exist; this machine has "
                              f"{torch.cuda.device_count()} CUDA device(s), cuda:0 to "
                              f"cuda:{torch.cuda.device_count() - 1}")
    elif device.type != "cpu":
        raise ConfigError(f"--device: expected cpu, cuda or cuda:N, got {name!r}")
    return device


def set_threads(threads: int | None) -> int:
    """``--threads``: torch's intra-op threads; None gives one per core that other work is not already using.

    Measured (docs/benchmarks/threads.md): while another process keeps one of two cores busy, two threads made
    every training step many times slower than one, since each parallel region waits for the thread that has
    no core; on idle cores more threads help the larger networks. So the default counts the idle cores from
    the 1-minute load average, capped by torch's own default (one per physical core)."""
    import os

    import torch

    if threads is None:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        threads = max(1, min(torch.get_num_threads(), (os.cpu_count() or 1) - round(load)))
    elif threads < 1:
        raise ConfigError(f"--threads: expected a positive number of threads, got {threads}")
    torch.set_num_threads(threads)
    return threads


def recorded_config(args) -> dict[str, Any]:
    """``--resume``: the run folder's own config, after checking that no flag asks for another model."""
    if not args.out:
        raise ConfigError("--resume: name the run folder to continue with --out DIR")
    path = Path(args.out) / "config.json"
    if not path.is_file():
        raise ConfigError(f"--resume: {path} does not exist; --out must name a folder written by run or train")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--resume: {path} is not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"--resume: {path} holds no config table")
    if args.config is not None:
        raise ConfigError(f"config: --resume continues {path}; drop the config argument {args.config!r} "
                          "(or start a new run with another --out)")
    recorded = {"--preset": (args.preset, config.get("preset")),
                "--data": (args.data, (config.get("data") or {}).get("name")),
                "--seed": (args.seed, (config.get("train") or {}).get("seed", 0))}
    for flag, (given, held) in recorded.items():
        if given is not None and given != held:
            raise ConfigError(f"{flag}: {given!r} contradicts the run folder's {held!r} ({path}); --resume "
                              "continues the recorded model (drop the flag, or start a new run with another --out)")
    for text in args.assignments:
        section, _, key = text.partition("=")[0].strip().partition(".")
        if section != "train" or key not in RESUMABLE:
            raise ConfigError(f"--set {text}: a resumed run keeps its model; only train.{{{', '.join(RESUMABLE)}}} "
                              "may change")
    if args.solver is not None:
        raise ConfigError(f"--solver: --resume continues {path} with its solver; sample with another solver via "
                          "'diffflow sample' or 'diffflow eval'")
    return config


def build_model(args):
    """The model the arguments describe: a config file and/or a preset, or with ``--resume`` the run folder's
    own config; then ``--set`` and the dedicated flags on top, on the device of ``--device``."""
    from diffflow_core import build
    from diffflow_core.config import load_config, merge

    set_threads(args.threads)
    device = resolve_device(args.device)
    records: dict[str, Any] = {}
    if getattr(args, "resume", False):
        config, preset, data = recorded_config(args), None, None
        records = references.recorded_in(Path(args.out) / "checkpoint.pt")
    else:
        config, preset, data = args.config, args.preset, args.data
        if config is None and preset is None:
            preset = DEFAULT_PRESET
    overrides = overrides_from(args)
    data_settings = overrides.pop("data", None)
    if data_settings is not None and data is not None:  # --data NAME with --set data.key=value: one data spec
        data = merge({"name": data}, {"name": data_settings} if isinstance(data_settings, str) else data_settings)
        if data["name"] != args.data:
            raise ConfigError(f"--data {args.data} contradicts --set data.name={data['name']}; give one of them")
    elif data_settings is not None:  # a data section of the config, changed in place
        overrides["data"] = data_settings
    with references.stored(records):  # a resumed run does not need the files its model was built from
        model = build(load_config(config, preset=preset, overrides=overrides), data=data, device=device)
    if model.data is None:
        raise ConfigError("data: the config names no data; pass --data NAME or --data FILE.npy")
    return model


def steps_for_nfe(model, nfe: int | None) -> int:
    """The most solver steps whose evaluations fit in ``nfe`` (the config's steps when None), as the solver
    counts them (``Solver.steps_for``). A solver that cannot integrate the flow is refused first, before any
    work."""
    solver, flow = model.solver, model.flow
    solver.check(flow)
    if nfe is None:
        return model.config.sample.steps
    if nfe < 1:
        raise ConfigError(f"--nfe: expected a positive number of drift evaluations, got {nfe}")
    steps = solver.steps_for(nfe, flow)
    if steps < 1:
        raise ConfigError(f"--nfe: {nfe} evaluations are fewer than one step of solver {type(solver).__name__} "
                          f"({solver.nfe(1, flow)} evaluations)")
    return steps


def sampling_options(model, args) -> dict[str, Any]:
    """``--label`` / ``--guidance`` as the flow's sampling options, validated by the flow before any training
    (refused for a flow that takes none), and ``--grid`` as ``Model.sample``'s ``grid``, checked against the flow
    the same way."""
    options = {k: v for k, v in (("label", args.label), ("guidance", args.guidance)) if v is not None}
    grid = {"grid": args.grid} if getattr(args, "grid", None) is not None else {}
    if grid:
        try:
            model.times(1, args.grid)
        except ConfigError as exc:
            raise ConfigError(f"--grid: {str(exc).partition(': ')[2] or exc}") from None
    if not options:
        return grid
    flag = "--label" if "label" in options else "--guidance"
    if not model.flow.sampling_options:
        raise ConfigError(f"{flag}: flow {model.config.flow.name!r} takes no sampling options; expected a "
                          "conditional flow (e.g. the scoreflow-translate preset)")
    try:
        model.flow.check_sampling_options(options)
    except ConfigError as exc:
        field, _, reason = str(exc).partition(": ")
        flag = f"--{field}" if field in options else flag
        raise ConfigError(f"{flag}: {reason or exc}") from None
    return {**options, **grid}


def warn_if_diverged(model, samples) -> bool:
    """A one-line warning on stderr when the samples' largest magnitude is absurd next to the data's (over
    1000 x (data's max |x| + 1)): the sampler or the training diverged, though the run itself succeeded."""
    import sys

    data = getattr(getattr(model, "data", None), "train", None)
    if data is None or samples.x.numel() == 0:
        return False
    largest, scale = float(samples.x.detach().abs().max()), float(data.abs().max())
    if not largest > 1e3 * (scale + 1):
        return False
    print(f"diffflow: warning: the samples reach |x| = {largest:.3g} while the data's largest |x| is {scale:.3g}; "
          "the sampler or the training diverged (check train.lr and the loss in metrics.jsonl)", file=sys.stderr)
    return True


def run_folder(args, model) -> Path:
    if args.out:
        return Path(args.out)
    name = model.config.preset or Path(args.config or "model").stem
    data = getattr(model.data, "name", "data")
    return Path("runs") / f"{name}-{data}-{time.strftime('%Y%m%d-%H%M%S')}"


def write_config(model, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(model.config.as_dict(), indent=2))


def train(model, out: Path, resume: bool = False) -> dict[str, float]:
    """Fit the model with logs and checkpoints in ``out``; a model without objective is only saved."""
    from diffflow_core.training import Trainer

    if model.objective is None:
        model.save(out / "checkpoint.pt")
        return {"train_seconds": 0.0, "train_steps": 0}
    cfg = model.config.train
    every = cfg.checkpoint_every or max(1, cfg.steps // 10)
    history = Trainer(model, out_dir=out, resume=resume or None, checkpoint_every=every).fit(model.data)
    warn_if_loss_diverged(history, out)
    losses = [v for k in history.records[-1:] for key, v in k.items() if key.startswith("loss/")]
    return {"train_seconds": round(history.seconds, 3), "train_steps": cfg.steps,
            "prepare_seconds": round(history.prepare_seconds, 3),
            **({"final_loss": losses[0]} if losses else {})}


def warn_if_loss_diverged(history, out: Path) -> bool:
    """A one-line warning on stderr when a logged loss ended over 100 x its first logged value (a positive
    loss that grew by orders of magnitude): training diverged, e.g. from too large a train.lr."""
    import sys

    for key in sorted({k for r in history.records for k in r if k.startswith("loss/")}):
        values = history.series(key)
        first, last = values[0], values[-1]
        if len(values) > 1 and first > 0 and last > 100 * first:
            print(f"diffflow: warning: training diverged: {key} rose from {first:.3g} (first logged) to "
                  f"{last:.3g} (last logged); expected it to fall (try a smaller train.lr; logs in "
                  f"{out / 'metrics.jsonl'})", file=sys.stderr)
            return True
    return False


def run(args) -> int:
    from diffflow_core.evaluation import draw, evaluate, write_samples
    from diffflow_core.training.distributed import is_main_process

    model = build_model(args)
    steps = steps_for_nfe(model, args.nfe)
    n = args.n if args.n is not None else model.config.sample.n
    if n < 1:
        raise ConfigError(f"--n: expected a positive number of samples, got {n}")
    model.check_sample_memory(n, steps, record=True)  # as evaluate will draw them: refuse before training
    model.solve_batch(n)  # a sample.batch the model cannot split: refused before training too
    options = sampling_options(model, args)
    out = run_folder(args, model)
    args.out = str(out)
    with RunFolder(out, model.config.as_dict(), resume=args.resume, overwrite=args.overwrite):
        if not args.resume:
            write_config(model, out)
        main = is_main_process()
        if main:
            print(f"diffflow run: {model.config.preset or args.config} on {model.data.name} ({model.device}), "
                  f"writing to {out}")
        summary = train(model, out, resume=args.resume)
        if not main:  # under torchrun, rank 0 samples, evaluates and reports
            return 0
        seed = model.config.train.seed
        metrics, samples = evaluate(model, steps, n, seed, **options)
        warn_if_diverged(model, samples)
        metrics = {**summary, **metrics}
        write_samples(model, samples, out / "samples.npy")
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        pictures = draw(model, samples, out, log=out / "metrics.jsonl")
    print(json.dumps(metrics, indent=2))
    print(f"outputs in {out}/: config.json, checkpoint.pt, samples.npy, metrics.json"
          + "".join(f", {p}" for p in pictures) + (", metrics.jsonl, metrics.csv" if model.objective else ""))
    return 0
