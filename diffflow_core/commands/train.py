"""``diffflow train``: fit a model into a run folder (logs, checkpoints); ``--resume`` continues exactly, with
the run folder's own config."""
from __future__ import annotations

import json


def add_parser(sub) -> None:
    from diffflow_core.commands.run import model_arguments

    p = sub.add_parser("train", help="train a model into a run folder (logs and checkpoints)")
    model_arguments(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from diffflow_core.commands.run import build_model, run_folder, train, write_config
    from diffflow_core.errors import ConfigError
    from diffflow_core.runfolder import RunFolder
    from diffflow_core.training.distributed import is_main_process

    model = build_model(args)
    if model.objective is None:
        raise ConfigError(f"objective: flow '{model.config.flow.name}' has nothing to train (the config names no objective)")
    out = run_folder(args, model)
    args.out = str(out)
    with RunFolder(out, model.config.as_dict(), resume=args.resume, overwrite=args.overwrite):
        if not args.resume:
            write_config(model, out)
        summary = train(model, out, resume=args.resume)
    if is_main_process():
        print(json.dumps(summary, indent=2))
        print(f"checkpoint: {out / 'checkpoint.pt'}; logs: {out / 'metrics.jsonl'}, {out / 'metrics.csv'}")
    return 0
