"""CPU threads for training: seconds per training step of preset models at 1, 2, ... threads, interleaved.

For each preset the model is built once and trained in short bursts, the thread count rotating between
bursts, so every count sees the same machine load; the median burst time per step is reported with its ratio
to one thread. ``diffflow run --threads`` takes the count; the default (torch's: one per core) follows from
these numbers (docs/benchmarks/threads.md).

    .venv/bin/python benchmarks/threads.py --presets edm,rectified-flow,gan,ndm --threads 1,2
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from diffflow_core import build
from diffflow_core.commands.bench import output_dir


def per_step(model, steps: int) -> float:
    """Seconds per step of ``steps`` training steps (the model keeps training across bursts)."""
    tick = time.perf_counter()
    model.fit(steps=steps, progress=False)
    return (time.perf_counter() - tick) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", default="edm,rectified-flow,gan,ndm")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--bursts", type=int, default=5, help="bursts per thread count")
    parser.add_argument("--steps", type=int, default=40, help="training steps per burst")
    args = parser.parse_args()
    counts = [int(c) for c in args.threads.split(",")]
    results = {}
    for preset in args.presets.split(","):
        model = build(preset=preset, train={"progress": False, "ema": 0.0})
        params = sum(p.numel() for p in model.parameters())
        times: dict[int, list[float]] = {c: [] for c in counts}
        torch.set_num_threads(counts[0])
        per_step(model, 5)  # warm-up
        for _ in range(args.bursts):
            for count in counts:
                torch.set_num_threads(count)
                times[count].append(per_step(model, args.steps))
        median = {c: statistics.median(t) for c, t in times.items()}
        results[preset] = {"parameters": params, "ms_per_step": {c: 1e3 * m for c, m in median.items()},
                           "ratio_to_1": {c: m / median[counts[0]] for c, m in median.items()}}
        print(f"{preset:16s} {params:>9,d} params  " + "  ".join(
            f"{c} thread(s): {1e3 * m:7.2f} ms ({m / median[counts[0]]:.2f}x)" for c, m in median.items()),
            flush=True)
    path = output_dir() / "threads.json"
    path.write_text(json.dumps(results, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
