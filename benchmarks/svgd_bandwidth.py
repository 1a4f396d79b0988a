"""Why a plain SVGD lands far from ring5 (issue #3): the median-heuristic bandwidth against the integration time.

SVGD (SPEC §2.5) moves 2,000 particles from N(0, I) with the ``kl`` flow through the ``stein`` smoother, Euler
with dt = 0.05 up to t = 30 (600 steps), as the ``svgd`` preset does. For each kernel width (``scale`` times
Liu & Wang's median heuristic; ``scale = 1`` is plain SVGD) one recorded run per seed is scored at several
intermediate times, so the table shows how the W2 / floor ratio and the mode shares evolve along the flow.

    .venv/bin/python benchmarks/svgd_bandwidth.py [--scales 1 0.5] [--times 2.5 5 10 20 30] [--seeds 3]

Results: ``svgd_bandwidth.json`` in the bench output folder (``diffflow bench --out DIR``; default
``~/.cache/diffflow/bench``) and the table printed (copied into docs/flows/svgd.md).
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from diffflow_core.commands.bench import output_dir

DT = 0.05


def study(scale: float, times: list[float], seeds: int, n: int) -> list[dict]:
    """W2 / floor and mode shares at each of ``times`` for SVGD with the median heuristic times ``scale``."""
    from diffflow_core import build
    from diffflow_core.data import load_dataset
    from diffflow_core.metrics.mixture import mode_coverage
    from diffflow_core.metrics.wasserstein import w2_ratio

    data = load_dataset("ring5")
    horizon = max(times)
    steps = round(horizon / DT)
    model = build(preset="svgd", data=data, flow={"horizon": horizon}, smoother={"scale": scale})
    start = time.perf_counter()
    runs = [model.sample(n, steps, seed=seed, record=True) for seed in range(seeds)]
    seconds = time.perf_counter() - start
    rows = []
    for t in times:
        index = round(t / DT)
        draws = [run.trajectory[index] for run in runs]
        result = w2_ratio(draws, data, n=n, seeds=seeds)
        cover = [mode_coverage(x, data) for x in draws]
        rows.append({"scale": scale, "t": t, "steps": index, "ratio": result.ratio, "w2": result.w2_mean,
                     "floor": result.floor_mean,
                     "max_share_deviation_points": max(c.max_deviation for c in cover),
                     "outside_3_std": sum(c.outside for c in cover) / len(cover),
                     "shares_seed0": list(cover[0].shares), "seconds_all_seeds": seconds})
        print(f"scale {scale:4.2f}  t {t:5.1f}  W2/floor {result.ratio:.3f}  max |share - 20%| "
              f"{rows[-1]['max_share_deviation_points']:.1f} pts  outside 3 std {rows[-1]['outside_3_std']:.3f}",
              flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 0.5])
    parser.add_argument("--times", type=float, nargs="+", default=[2.5, 5.0, 10.0, 20.0, 30.0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--n", type=int, default=2000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = [row for scale in args.scales for row in study(scale, sorted(args.times), args.seeds, args.n)]
    path = output_dir() / "svgd_bandwidth.json"
    path.write_text(json.dumps({"dt": DT, "n": args.n, "seeds": args.seeds, "rows": rows}, indent=2))
    print(f"wrote {path}")
    print("\n| kernel width | t | Euler steps | W2 / floor | max abs(share - 20%) (points) | outside 3 std |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['scale']:g} x median | {r['t']:g} | {r['steps']} | {r['ratio']:.3f} | "
              f"{r['max_share_deviation_points']:.1f} | {r['outside_3_std']:.3f} |")


if __name__ == "__main__":
    main()
