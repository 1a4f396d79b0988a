"""EDM sampling range vs quality at a fixed NFE, for the exact ring5 score and a trained checkpoint.

The rho-grid puts most solver steps at large sigma, so at low NFE the sampling range [sigma_min, sigma_max]
decides the quality. Usage (the checkpoint is what ``diffflow run`` writes for its EDM-on-ring5 default)::

    .venv/bin/python benchmarks/edm_sampling_range.py --checkpoint runs/<run>/checkpoint.pt --steps 9 18

Prints W2 / floor (3 seeds, 2,000 samples) per range and writes ``edm_sampling_range.json`` to the bench output
folder (``diffflow bench --out DIR``; default ``~/.cache/diffflow/bench``).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from diffflow_core import metrics
from diffflow_core.commands.bench import output_dir
from diffflow_core.data import load_dataset
from diffflow_core.model import Model
from diffflow_score.testing import exact_flow

RANGES = [(0.002, 80.0), (0.002, 40.0), (0.002, 20.0), (0.002, 10.0), (0.02, 20.0)]


def set_range(flow, sigma_min: float, sigma_max: float) -> None:
    schedule = flow.schedule
    schedule.sigma_min, schedule.sigma_max, schedule.prior_std = sigma_min, sigma_max, sigma_max


def ratio(model: Model, steps: int, data, seeds: int) -> tuple[float, int]:
    runs = [model.sample(2000, steps=steps, seed=seed, solver="heun") for seed in range(seeds)]
    return metrics.w2_ratio([r.x for r in runs], data).ratio, runs[0].nfe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="a trained EDM ring5 checkpoint (optional)")
    parser.add_argument("--steps", type=int, nargs="+", default=[9, 18], help="Heun steps (NFE = 2 steps - 1)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("edm_sampling_range.json"),
                        help="JSON file, relative to the bench output folder (default: %(default)s)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_dataset("ring5")
    models = {"exact": Model(exact_flow(data.denoise, "edm", event_shape=(2,)))}
    if args.checkpoint:
        models["learned"] = Model.load(args.checkpoint)
    rows = []
    for sigma_min, sigma_max in RANGES:
        for name, model in models.items():
            set_range(model.flow, sigma_min, sigma_max)
            for steps in args.steps:
                value, nfe = ratio(model, steps, data, args.seeds)
                rows.append({"model": name, "sigma_min": sigma_min, "sigma_max": sigma_max, "nfe": nfe,
                             "w2_over_floor": round(value, 4)})
                print(f"{name:8s} sigma in [{sigma_min}, {sigma_max}]  NFE {nfe:3d}  W2/floor {value:.3f}", flush=True)
    out = output_dir() / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"checkpoint": args.checkpoint, "seeds": args.seeds, "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
