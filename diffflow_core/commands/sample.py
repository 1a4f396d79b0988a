"""``diffflow sample --checkpoint CKPT --n N --nfe K --out FILE.npy``: samples in data space, float32."""
from __future__ import annotations

from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("sample", help="draw samples from a checkpoint into a .npy file")
    p.add_argument("--checkpoint", required=True, help="a checkpoint written by run/train or Model.save")
    p.add_argument("--n", type=int, help="number of samples (default: the config's sample.n)")
    p.add_argument("--nfe", type=int, help="drift evaluations (default: the config's sample.steps)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output .npy file")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from diffflow_core.commands.run import steps_for_nfe
    from diffflow_core.evaluation import write_samples
    from diffflow_core.errors import ConfigError
    from diffflow_core.model import Model

    torch.set_num_threads(1)
    if not args.out.endswith(".npy"):
        raise ConfigError(f"--out: expected a .npy file name, got {args.out!r}")
    model = Model.load(args.checkpoint)
    samples = model.sample(args.n, steps_for_nfe(model, args.nfe), seed=args.seed)
    write_samples(model, samples, Path(args.out))
    print(f"{samples.x.shape[0]} samples at {samples.nfe} NFE -> {args.out}")
    return 0
