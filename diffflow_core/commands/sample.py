"""``diffflow sample --checkpoint CKPT --n N --nfe K --out FILE.npy``: samples in data space, float32, and a
picture of them beside the file (``FILE.png``)."""
from __future__ import annotations

from pathlib import Path


def add_parser(sub) -> None:
    from diffflow_core.commands.run import runtime_arguments, sampling_arguments

    p = sub.add_parser("sample", help="draw samples from a checkpoint into a .npy file (and a picture)")
    p.add_argument("--checkpoint", required=True, help="a checkpoint written by run/train or Model.save")
    sampling_arguments(p)
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--solver", help="sample with another solver by name (see 'diffflow list solvers')")
    runtime_arguments(p)
    p.add_argument("--out", required=True, help="output .npy file")
    p.set_defaults(func=run)


def run(args) -> int:
    from diffflow_core.commands.eval import load
    from diffflow_core.commands.run import sampling_options, steps_for_nfe, warn_if_diverged
    from diffflow_core.errors import ConfigError
    from diffflow_core.evaluation import draw_samples, write_samples

    if not args.out.endswith(".npy"):
        raise ConfigError(f"--out: expected a .npy file name, got {args.out!r}")
    model = load(args)
    if args.solver is not None:
        from diffflow_core.plugins import registry

        model.solver = registry("solvers").create(args.solver)
    if args.n is not None and args.n < 1:
        raise ConfigError(f"--n: expected a positive number of samples, got {args.n}")
    samples = model.sample(args.n, steps_for_nfe(model, args.nfe), seed=args.seed, progress="sample",
                           **sampling_options(model, args))
    warn_if_diverged(model, samples)
    out = Path(args.out)
    write_samples(model, samples, out)
    picture = draw_samples(model, samples, out.with_suffix(".png"))
    print(f"{samples.x.shape[0]} samples at {samples.nfe} NFE -> {out}" + (f", {picture}" if picture else ""))
    return 0
