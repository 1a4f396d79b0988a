"""EMA warm-up across training budgets (issue 17 item 4): ring5 W2 / floor after 300, 1,000 and 10,000 steps.

For each preset and training budget the script trains once on ring5 (training seed ``--train-seed``, the
preset's settings with ``train.steps`` overridden), then scores the weights the trainer swaps in for sampling
(the EMA with the preset's ``train.ema`` and the default ``train.ema_rampup``) and, for comparison, other
averages of the same run: the fixed-decay EMA of before the warm-up (``ema_rampup = 0``), other ramp ratios
(``--rampups``) and the raw weights (``--raw``). The raw run does not depend on the EMA (averaging consumes no
randomness and never feeds back), so one training run serves every variant: the trainer's ``EMA`` is
swapped for a subclass that keeps one extra shadow per variant, each updated with the step count exactly as
the trainer updates its own.

Each set of weights is sampled with the preset's own sampler and steps (``sample.steps``; the GAN's generator
takes 1 NFE) at ``--n`` points for ``--seeds`` sampling seeds; the score is ``diffflow_core.metrics.w2_ratio``
(mean W2 to fresh data draws over the mean data-vs-data floor; about 0.9 for a perfect sampler), reported
with its standard error over the seeds. Results are merged into ``ema_budgets.json`` in the bench output
folder (``--out DIR``, else ``diffflow bench``'s: ``$DIFFFLOW_BENCH_OUT`` or ``~/.cache/diffflow/bench``), one
entry per preset, budget and variant, so rows can be run in separate processes; the table is printed.

    .venv/bin/python benchmarks/ema_budgets.py --presets edm --steps 300,1000
    .venv/bin/python benchmarks/ema_budgets.py --presets edm,vp,rectified-flow,ndm,gan --steps 10000
    .venv/bin/python benchmarks/ema_budgets.py --presets edm --steps 1000 --rampups 0,0.05,0.1,0.2 --raw
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import torch

from diffflow_core.commands.bench import output_dir

PRESETS = ("edm", "vp", "rectified-flow", "ndm", "gan")
#: W2 / floor bound at 1,000 steps for the score, velocity and NDM presets (issue 17)
TARGET = {"steps": 1000, "bound": 2.0, "presets": ("edm", "vp", "rectified-flow", "ndm")}


@contextlib.contextmanager
def extra_emas(rampups: list[float], raw: bool) -> Iterator[dict[str, Any]]:
    """While active, the trainer's EMA also keeps one shadow per ramp ratio in ``rampups`` (0 = fixed decay)
    and, with ``raw``, a copy of the raw weights; yields ``{"ema": the trainer's EMA}`` once training made it."""
    import diffflow_core.training.trainer as trainer_module

    base, made = trainer_module.EMA, {}

    class MultiEMA(base):
        def __init__(self, module, decay, skip=(), rampup=0.0):
            super().__init__(module, decay, skip, rampup)
            self.extras = {f"ema_rampup={r:g}": base(module, decay, skip, r) for r in rampups}
            if raw:  # decay 0: every update copies the weights
                self.extras["raw"] = base(module, 0.0, skip, 0.0)
            made["ema"] = self

        def update(self, step=None):
            super().update(step)
            for extra in self.extras.values():
                extra.update(step)

    trainer_module.EMA = MultiEMA
    try:
        yield made
    finally:
        trainer_module.EMA = base


def score(model, seeds: int, n: int) -> dict[str, Any]:
    """W2 / floor of the model's current weights with the preset's sampler, ``seeds`` sampling seeds."""
    from diffflow_core.metrics import w2_ratio

    steps = model.config.sample.steps
    tick = time.perf_counter()
    result = w2_ratio(lambda count, seed: model.sample(count, steps=steps, seed=seed).x, model.data, n=n,
                      seeds=seeds)
    return {**result.as_dict(), "w2_values": list(result.w2_values), "sample_steps": steps,
            "score_seconds": time.perf_counter() - tick}


def run(preset: str, steps: int, args) -> dict[str, dict[str, Any]]:
    """Train ``preset`` for ``steps`` on ring5 once; score its EMA and the comparison variants."""
    from diffflow_core import build

    model = build(preset=preset, data="ring5", train={"steps": steps, "progress": False, "seed": args.train_seed},
                  device=args.device)
    cfg = model.config.train
    if not cfg.ema:
        raise SystemExit(f"ema_budgets: preset {preset!r} trains without an EMA (train.ema = 0)")
    rampups = [r for r in args.rampups if r != cfg.ema_rampup]
    with extra_emas(rampups, args.raw) as made:
        tick = time.perf_counter()
        history = model.fit()
        train_seconds = time.perf_counter() - tick
    ema = made["ema"]
    common = {"preset": preset, "train_steps": steps, "ema": cfg.ema, "train_seed": args.train_seed,
              "train_seconds": train_seconds, "seconds_per_step": history.seconds / steps}
    rows = {"default": {**common, "variant": f"ema_rampup={cfg.ema_rampup:g} (default)",
                        "ema_rampup": cfg.ema_rampup, **score(model, args.seeds, args.n)}}
    for name, extra in ema.extras.items():
        extra.copy_to(model)
        rampup = None if name == "raw" else extra.rampup
        rows[name] = {**common, "variant": name, "ema_rampup": rampup, **score(model, args.seeds, args.n)}
    return rows


def table(results: dict[str, Any]) -> list[str]:
    """Markdown rows: preset, training steps, variant, W2 / floor mean +/- s.e., seconds."""
    lines = ["| preset | train steps | weights | W2 / floor (mean ± s.e.) | seeds | train s |",
             "|---|---|---|---|---|---|"]
    order = {p: i for i, p in enumerate(PRESETS)}
    entries = sorted(results["rows"].values(), key=lambda r: (order.get(r["preset"], 99), r["preset"],
                                                               r["train_steps"], "default" not in r["variant"],
                                                               r["variant"]))
    for r in entries:
        lines.append(f"| {r['preset']} | {r['train_steps']:,} | {r['variant']} | {r['ratio']:.2f} ± "
                     f"{r['ratio_stderr']:.2f} | {r['seeds']} | {r['train_seconds']:.0f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", default=",".join(PRESETS), help="comma-separated presets (ring5)")
    parser.add_argument("--steps", default="300,1000,10000", help="comma-separated training budgets")
    parser.add_argument("--seeds", type=int, default=10, help="sampling seeds per score (>= 10 for the doc)")
    parser.add_argument("--n", type=int, default=2000, help="samples per seed")
    parser.add_argument("--rampups", default="0",
                        help="comma-separated extra ema_rampup values scored on the same run (0 = the fixed "
                             "decay of before the warm-up; '' for none)")
    parser.add_argument("--raw", action="store_true", help="also score the raw (unaveraged) weights")
    parser.add_argument("--train-seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="where to train and sample (cpu, cuda, cuda:N)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the benchmark machine is shared)")
    parser.add_argument("--out", type=Path, default=None,
                        help="results folder (default: $DIFFFLOW_BENCH_OUT, else ~/.cache/diffflow/bench)")
    args = parser.parse_args()
    args.rampups = [float(r) for r in args.rampups.split(",") if r.strip()]
    torch.set_num_threads(args.threads)
    path = output_dir(args.out) / "ema_budgets.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    results.setdefault("rows", {})
    command = f"OMP_NUM_THREADS={args.threads} .venv/bin/python benchmarks/ema_budgets.py " + " ".join(sys.argv[1:])
    results.setdefault("commands", [])
    if command not in results["commands"]:
        results["commands"].append(command)
    results["machine"] = {"platform": platform.platform(), "processor": platform.processor(),
                          "torch": torch.__version__, "threads": args.threads}
    for preset in args.presets.split(","):
        for steps in (int(s) for s in args.steps.split(",")):
            rows = run(preset, steps, args)
            for name, row in rows.items():
                results["rows"][f"{preset}/{steps}/{row['variant'].split()[0]}"] = row
                print(f"[{preset} {steps:>6,} steps] {row['variant']:28s} W2/floor {row['ratio']:6.3f} "
                      f"+/- {row['ratio_stderr']:.3f}  (train {row['train_seconds']:.0f} s, score "
                      f"{row['score_seconds']:.0f} s)", flush=True)
            path.write_text(json.dumps(results, indent=1))
    missed = [r for r in results["rows"].values() if r["preset"] in TARGET["presets"]
              and r["train_steps"] == TARGET["steps"] and "default" in r["variant"]
              and not r["ratio"] <= TARGET["bound"]]
    print("\n".join(table(results)))
    for r in missed:
        print(f"target missed: {r['preset']} at {TARGET['steps']} steps: {r['ratio']:.3f} > {TARGET['bound']}")
    print(f"wrote {path}")
    if any(math.isnan(r["ratio"]) for r in results["rows"].values()):
        print("warning: NaN scores (diverged samples)")


if __name__ == "__main__":
    main()
