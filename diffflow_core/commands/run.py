"""``diffflow run``: the main job. Train (when the model has an objective), sample, evaluate and draw into a
run folder. With no arguments it runs the embedded default, EDM on ``ring5``.

A run folder holds ``config.json``, ``checkpoint.pt``, ``metrics.jsonl``/``metrics.csv`` (training logs),
``samples.npy`` (float32 ``[N, *shape]`` in data space), ``metrics.json`` (evaluation), ``samples.png``
(scatter or image grid) and ``trajectory.png`` (particle snapshots, or images along the sampling path).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from diffflow_core.errors import ConfigError

#: What ``diffflow run`` does with no arguments.
DEFAULT_PRESET, DEFAULT_DATA = "edm", "ring5"


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="train, sample, evaluate and draw into a run folder (the main job)")
    model_arguments(p)
    p.add_argument("--nfe", type=int, help="sampling budget in drift evaluations (sets the solver steps)")
    p.add_argument("--n", type=int, help="number of samples (default: the config's sample.n)")
    p.set_defaults(func=run)


def model_arguments(p) -> None:
    """The arguments that choose and configure a model (shared by run and train)."""
    p.add_argument("config", nargs="?", help="a TOML config (default: the embedded EDM-on-ring5 job)")
    p.add_argument("--preset", help="a registered preset to start from (see 'diffflow presets')")
    p.add_argument("--data", help="a dataset name or a .npy file [N, *shape]")
    p.add_argument("--steps", type=int, help="training steps")
    p.add_argument("--seed", type=int, default=0, help="seed of training and sampling (default 0)")
    p.add_argument("--out", help="run folder (default: runs/<name>-<data>-<time>)")


def build_model(args):
    """The model the arguments describe: a config file and/or a preset, with data/steps/seed on top."""
    from diffflow_core.build import build

    preset = args.preset
    if args.config is None and preset is None:
        preset = DEFAULT_PRESET
    data = args.data or (DEFAULT_DATA if args.config is None and args.preset is None else None)
    overrides: dict[str, Any] = {"train": {"seed": args.seed}}
    if args.steps is not None:
        if args.steps < 1:
            raise ConfigError(f"--steps: expected a positive number of training steps, got {args.steps}")
        overrides["train"]["steps"] = args.steps
    # a registry name or a .npy path; build records it in the config's data section
    model = build(args.config, preset=preset, data=data, **overrides)
    if model.data is None:
        raise ConfigError("data: the config names no data; pass --data NAME or --data FILE.npy")
    return model


def steps_for_nfe(model, nfe: int | None) -> int:
    """The most solver steps whose drift evaluations fit in ``nfe`` (the config's steps when None)."""
    if nfe is None:
        return model.config.sample.steps
    if nfe < 1:
        raise ConfigError(f"--nfe: expected a positive number of drift evaluations, got {nfe}")
    order = getattr(model.solver, "order", 1)
    saved = 1 if order == 2 and model.flow.singular_end else 0  # Heun's last step into sigma = 0 is Euler
    steps = (nfe + saved) // order
    if steps < 1:
        raise ConfigError(f"--nfe: {nfe} evaluations are fewer than one step of the {order}-stage solver")
    return steps


def run_folder(args, model) -> Path:
    if args.out:
        return Path(args.out)
    name = model.config.preset or Path(args.config or "model").stem
    data = getattr(model.data, "name", "data")
    return Path("runs") / f"{name}-{data}-{time.strftime('%Y%m%d-%H%M%S')}"


def train(model, out: Path, resume: bool = False) -> dict[str, float]:
    """Fit the model with logs and checkpoints in ``out``; a model without objective is only saved."""
    from diffflow_core.training import Trainer

    if model.objective is None:
        model.save(out / "checkpoint.pt")
        return {"train_seconds": 0.0, "train_steps": 0}
    cfg = model.config.train
    every = cfg.checkpoint_every or max(1, cfg.steps // 10)
    history = Trainer(model, out_dir=out, resume=resume or None, checkpoint_every=every).fit(model.data)
    losses = [v for k in history.records[-1:] for key, v in k.items() if key.startswith("loss/")]
    return {"train_seconds": round(history.seconds, 3), "train_steps": cfg.steps,
            **({"final_loss": losses[0]} if losses else {})}


def run(args) -> int:
    import torch

    from diffflow_core.evaluation import draw, evaluate, write_samples

    torch.set_num_threads(1)  # small models: one thread is fastest and leaves the other core free
    model = build_model(args)
    out = run_folder(args, model)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(model.config.as_dict(), indent=2))
    print(f"diffflow run: {model.config.preset or args.config} on {model.data.name}, writing to {out}")
    steps = steps_for_nfe(model, args.nfe)
    n = args.n if args.n is not None else model.config.sample.n
    if n < 1:
        raise ConfigError(f"--n: expected a positive number of samples, got {n}")
    summary = train(model, out)
    metrics, samples = evaluate(model, steps, n, args.seed)
    metrics = {**summary, **metrics}
    write_samples(model, samples, out / "samples.npy")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    pictures = draw(model, samples, out)
    print(json.dumps(metrics, indent=2))
    print(f"outputs in {out}/: config.json, checkpoint.pt, samples.npy, metrics.json"
          + "".join(f", {p}" for p in pictures) + (", metrics.jsonl, metrics.csv" if model.objective else ""))
    return 0
