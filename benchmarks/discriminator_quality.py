"""Quality of the discriminator family on ring5: W2 ratio to the data floor (3 sampling seeds) and mode shares.

    .venv/bin/python benchmarks/discriminator_quality.py --preset gan [--steps 1900] [--set flow.eta=20]
        [--nfe 14 28 56] [--tag NAME]

Trains the preset (with ``--set section.key=json`` overrides), then samples each NFE with seeds 0, 1, 2 and
writes ``benchmarks/results/discriminator_quality_<tag>.json`` (training time, loss curves, W2, mode shares).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def parse_set(items: list[str]) -> dict:
    out: dict = {}
    for item in items:
        key, _, raw = item.partition("=")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = out
        *path, last = key.split(".")
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", required=True)
    parser.add_argument("--steps", type=int, default=None, help="training iterations (default: the preset's)")
    parser.add_argument("--set", nargs="*", default=[], help="overrides section.key=json")
    parser.add_argument("--nfe", nargs="*", type=int, default=None, help="sampling steps (default: the preset's)")
    parser.add_argument("--solver", default=None)
    parser.add_argument("--tag", default=None)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import diffflow_core as dc
    from diffflow_core.metrics import w2_ratio
    from diffflow_discriminator.diagnostics import mode_shares

    overrides = parse_set(args.set)
    if args.steps is not None:
        overrides.setdefault("train", {})["steps"] = args.steps
    overrides.setdefault("train", {}).setdefault("progress", False)
    model = dc.build(preset=args.preset, **overrides)
    start = time.perf_counter()
    history = model.fit()
    seconds = time.perf_counter() - start
    steps_list = args.nfe or [model.config.sample.steps]
    results = []
    for steps in steps_list:
        draw = lambda n, s: model.sample(n, steps, seed=s, solver=args.solver).x  # noqa: E731
        w2 = w2_ratio(draw, model.data, n=2000, seeds=3)
        sample = model.sample(2000, steps, seed=0, solver=args.solver)
        shares = mode_shares(sample.x, model.data.means).tolist()
        results.append({"steps": steps, "nfe": sample.nfe, **w2.as_dict(), "mode_shares": shares,
                        "modes_ok": all(abs(s - 1 / len(shares)) <= 0.05 for s in shares)})
        print(f"{args.preset} nfe={sample.nfe}: {w2}; modes {[round(s, 3) for s in shares]}", flush=True)
    tag = args.tag or args.preset
    out = {"preset": args.preset, "overrides": overrides, "train_seconds": seconds,
           "seconds_per_iteration": seconds / model.config.train.steps, "results": results,
           "losses": history.records}
    path = Path(__file__).parent / "results" / f"discriminator_quality_{tag}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    print(f"trained in {seconds:.1f} s; wrote {path}")


if __name__ == "__main__":
    main()
