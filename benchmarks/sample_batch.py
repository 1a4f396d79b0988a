"""Sampling images on a CPU a chunk at a time: ``Model.sample(batch=...)`` against one solve of all particles.

The MNIST EDM network of ``benchmarks/configs/mnist-edm.toml`` (``unet``, 32 channels, weights as initialised:
the cost does not depend on them) draws ``--n`` images of 1x32x32 with ``--steps`` Heun steps, once per batch
size, in one process with one torch thread. Each arm reports its wall time and the process's user and system CPU
time (``getrusage``); the ratio is the arm's CPU time over that of the one-solve arm measured in the same run.
Writes ``sample_batch.json`` to the bench output folder (``~/.cache/diffflow/bench`` by default).

    .venv/bin/python benchmarks/sample_batch.py [--n 1000] [--steps 3] [--batches 0,512,256,128,64]
"""
from __future__ import annotations

import argparse
import json
import resource
import time

import torch

from diffflow_core import build
from diffflow_core.commands.bench import output_dir

NETWORK = {"name": "unet", "channels": 32, "mult": [1, 2, 2], "blocks": 1}


def cpu_seconds() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def measure(model, n: int, steps: int, batch: int) -> dict:
    user0, sys0 = cpu_seconds()
    start = time.perf_counter()
    model.sample(n, steps, seed=0, batch=batch)
    wall = time.perf_counter() - start
    user1, sys1 = cpu_seconds()
    return {"batch": batch, "wall": wall, "user": user1 - user0, "sys": sys1 - sys0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batches", default="0,512,256,128,64", help="batch sizes; 0 is one solve of all n")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build(preset="edm", data=torch.rand(256, 1, 32, 32) * 2 - 1, flow={"network": NETWORK})
    model.eval()
    model.sample(16, 1, batch=16)  # warm-up
    rows = [measure(model, args.n, args.steps, int(b) or args.n) for b in args.batches.split(",")]
    base = rows[0]["user"] + rows[0]["sys"]
    print(f"EDM unet-32, {args.n} images 1x32x32, {args.steps} Heun steps, 1 thread")
    print(f"{'batch':>6} {'wall s':>8} {'user s':>8} {'sys s':>8} {'CPU ratio':>10}")
    for row in rows:
        row["ratio"] = (row["user"] + row["sys"]) / base
        print(f"{row['batch']:>6} {row['wall']:>8.1f} {row['user']:>8.1f} {row['sys']:>8.1f} {row['ratio']:>10.2f}")
    path = output_dir() / "sample_batch.json"
    path.write_text(json.dumps({"n": args.n, "steps": args.steps, "rows": rows}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
