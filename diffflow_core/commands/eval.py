"""``diffflow eval --checkpoint CKPT``: sample a checkpoint and print (or write) its metrics."""
from __future__ import annotations

import json
from pathlib import Path


def add_parser(sub) -> None:
    from diffflow_core.commands.run import runtime_arguments, sampling_arguments

    p = sub.add_parser("eval", help="evaluate a checkpoint (W2/floor, Fréchet, test NLL as applicable)")
    p.add_argument("--checkpoint", required=True)
    sampling_arguments(p)
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    runtime_arguments(p)
    p.add_argument("--out", help="also write the metrics to this JSON file")
    p.set_defaults(func=run)


def load(args):
    """The checkpoint's model on ``--device`` with ``--threads``, for sample and eval."""
    from diffflow_core.commands.run import resolve_device, set_threads
    from diffflow_core.model import Model

    set_threads(args.threads)
    device = resolve_device(args.device)
    return Model.load(args.checkpoint, map_location=device)


def run(args) -> int:
    from diffflow_core.commands.run import sampling_options, steps_for_nfe
    from diffflow_core.errors import ConfigError
    from diffflow_core.evaluation import evaluate

    model = load(args)
    if model.data is None:
        raise ConfigError(f"--checkpoint: {args.checkpoint} records no dataset to evaluate against")
    n = args.n if args.n is not None else model.config.sample.n
    if n < 1:
        raise ConfigError(f"--n: expected a positive number of samples, got {n}")
    metrics, _ = evaluate(model, steps_for_nfe(model, args.nfe), n, args.seed, **sampling_options(model, args))
    text = json.dumps(metrics, indent=2)
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    return 0
