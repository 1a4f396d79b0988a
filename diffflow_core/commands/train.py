"""``diffflow train``: fit a model into a run folder (logs, checkpoints); ``--resume`` continues exactly."""
from __future__ import annotations

import json


def add_parser(sub) -> None:
    from diffflow_core.commands.run import model_arguments

    p = sub.add_parser("train", help="train a model into a run folder (logs and checkpoints)")
    model_arguments(p)
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from diffflow_core.commands.run import build_model, run_folder, train
    from diffflow_core.errors import ConfigError

    torch.set_num_threads(1)
    if args.resume and not args.out:
        raise ConfigError("--resume: name the run folder to continue with --out DIR")
    model = build_model(args)
    if model.objective is None:
        raise ConfigError(f"objective: flow '{model.config.flow.name}' has nothing to train (the config names no objective)")
    out = run_folder(args, model)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(model.config.as_dict(), indent=2))
    summary = train(model, out, resume=args.resume)
    print(json.dumps(summary, indent=2))
    print(f"checkpoint: {out / 'checkpoint.pt'}; logs: {out / 'metrics.jsonl'}, {out / 'metrics.csv'}")
    return 0
