"""``diffflow eval --checkpoint CKPT``: sample a checkpoint and print (or write) its metrics."""
from __future__ import annotations

import json
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a checkpoint (W2/floor, Fréchet, test NLL as applicable)")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--n", type=int, help="number of samples (default: the config's sample.n)")
    p.add_argument("--nfe", type=int, help="drift evaluations (default: the config's sample.steps)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="also write the metrics to this JSON file")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from diffflow_core.commands.run import steps_for_nfe
    from diffflow_core.evaluation import evaluate
    from diffflow_core.errors import ConfigError
    from diffflow_core.model import Model

    torch.set_num_threads(1)
    model = Model.load(args.checkpoint)
    if model.data is None:
        raise ConfigError(f"checkpoint: {args.checkpoint} records no dataset to evaluate against")
    n = args.n if args.n is not None else model.config.sample.n
    metrics, _ = evaluate(model, steps_for_nfe(model, args.nfe), n, args.seed)
    text = json.dumps(metrics, indent=2)
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    return 0
