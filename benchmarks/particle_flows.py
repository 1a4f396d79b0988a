"""Quality of the generator-free particle flows on ring5 (issue #3 acceptance table).

Every flow starts from its prior (N(0, I); N(0, sigma_max^2 I) for the VE row) with 2,000 particles, runs its
preset, and is scored by exact W2 to fresh data over 3 seeds divided by the data-vs-data floor at 2,000 samples
(``diffflow_core.metrics.wasserstein.w2_ratio``; see docs/benchmarks.md for its value for a perfect sampler). A
snapshot picture of the seed-0 run is saved per flow. Everything goes to the bench output folder
(``diffflow bench --out DIR``; default ``~/.cache/diffflow/bench``): the results to ``particle_flows.json``, the
table to ``particle-flows.md``, both rewritten after each flow, and the pictures to ``figures/<preset>.png``
(``--pictures``: ``figures/entropy.png``, ``figures/fdiv.png``). To publish a run, copy the table to
``docs/benchmarks/particle-flows.md`` and the pictures to ``docs/benchmarks/figures/`` (entropy and fdiv:
``docs/flows/figures/``).

    .venv/bin/python benchmarks/particle_flows.py [--flows langevin,svgd] [--seeds 3]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from diffflow_core import SamplingContext
from diffflow_core.commands.bench import output_dir

#: preset -> (label, acceptance bound on the W2 / floor ratio)
FLOWS = {
    "langevin": ("Langevin, exact score", 1.05),
    "annealed-langevin": ("Annealed Langevin (NCSN), analytic scores", 1.1),
    "diffflow-vp": ("DiffFlow VP reverse SDE, analytic scores", 1.1),
    "diffflow-ve": ("DiffFlow VE reverse SDE, analytic scores", 1.1),
    "diffflow-pf-ode": ("DiffFlow VP probability-flow ODE (Heun)", None),
    "mmd": ("MMD flow, multi-bandwidth Gaussian, 2,000 data samples", 1.4),
    "mmd-energy": ("MMD flow, energy kernel, 2,000 data samples", 1.4),
    "svgd": ("SVGD (kl + stein)", 1.4),
    "kl": ("Forward KL, particle KDE, smoothed target", 1.5),
    "diffflow-gan-kde": ("DiffFlow vanilla-GAN row (D vs particle KDE)", None),
    "diffflow-nsgan-kde": ("DiffFlow NS-GAN row (1 - D vs particle KDE)", None),
}


class _Velocity:
    """The velocity the solver moves the particles with (the smoother applied to the flow's drift), for the
    picture's arrows: the flow's own drift is not defined for flows that need the smoother (SVGD's ``kl`` runs
    without a particle score; the ``stein`` smoother supplies that term)."""

    def __init__(self, model) -> None:
        self.model = model

    def drift(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.model.smoother.velocity(self.model.flow, x, t, SamplingContext())


def run_flow(preset: str, seeds: int, folder: Path) -> dict:
    from diffflow_core import plots
    from diffflow_core import build
    from diffflow_core.data import load_dataset
    from diffflow_core.metrics.wasserstein import w2_ratio

    data = load_dataset("ring5")
    model = build(preset=preset, data=data)
    steps = model.config.sample.steps
    start = time.perf_counter()
    recorded = {}

    def sample(n: int, seed: int) -> torch.Tensor:
        out = model.sample(n, steps, seed=seed, record=seed == 0)
        if seed == 0:
            recorded["samples"] = out
        return out.x

    result = w2_ratio(sample, data, n=2000, seeds=seeds)
    seconds = time.perf_counter() - start
    out = recorded["samples"]
    picture = Path("figures", f"{preset}.png")
    plots.snapshots(out.trajectory, folder / picture, times=out.times, flow=_Velocity(model), data=data, panels=5,
                    limits=(-5.0, 5.0), title=f"{preset} on ring5 ({steps} steps, NFE {out.nfe})")
    return {**result.as_dict(), "steps": steps, "nfe": out.nfe, "seconds_all_seeds": seconds,
            "figure": picture.as_posix()}


def flow_pictures(folder: Path) -> None:
    """Pictures for the docs of the flows outside the table (``entropy``, ``fdiv``), 500 particles."""
    from diffflow_core import plots
    from diffflow_core import build
    from diffflow_core.data import load_dataset

    data = load_dataset("ring5")
    out_dir = folder / "figures"
    runs = {"entropy": ({"flow": {"name": "entropy", "horizon": 1.0}}, 50),
            "fdiv": ({"flow": {"name": "fdiv", "divergence": "js", "horizon": 6.0}}, 300)}
    for name, (config, steps) in runs.items():
        model = build(config, data=data)
        out = model.sample(500, steps, seed=0, record=True)
        plots.snapshots(out.trajectory, out_dir / f"{name}.png", times=out.times, flow=model.flow,
                        data=data if name != "entropy" else None, panels=5, limits=(-5.0, 5.0),
                        title=f"{name} ({steps} steps, 500 particles)")


def write_doc(results: dict, seeds: int, folder: Path) -> None:
    lines = ["# Particle flows on ring5", "",
             "Made by `.venv/bin/python benchmarks/particle_flows.py` (raw numbers: `particle_flows.json` in the "
             "[bench output folder](../benchmarks.md#where-benchmark-outputs-go)). 2,000 particles from the flow's "
             f"prior; W2 is exact (POT) to fresh data draws, averaged over {seeds} seeds, divided by the data-vs-data "
             "floor at 2,000 samples (a perfect sampler scores about 0.9). Wall time is for all seeds on a shared, "
             "heavily loaded 2-core machine (one thread).", "",
             "| flow (preset) | steps / NFE | W2 | floor | ratio | target | met | time (s) |",
             "|---|---|---|---|---|---|---|---|"]
    for preset, r in results.items():
        label, bound = FLOWS[preset]
        met = "-" if bound is None else ("yes" if r["ratio"] <= bound else "**no**")
        lines.append(f"| {label} (`{preset}`) | {r['steps']} / {r['nfe']} | {r['w2_mean']:.4f} +/- {r['w2_std']:.4f} | "
                     f"{r['floor_mean']:.4f} | {r['ratio']:.3f} | {'-' if bound is None else f'<= {bound}'} | {met} | "
                     f"{r['seconds_all_seeds']:.0f} |")
    lines += ["", "## Pictures (seed 0, particles over time with drift arrows)", ""]
    for preset, r in results.items():
        lines.append(f"![{preset}]({r['figure']})")
    (folder / "particle-flows.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--flows", default=",".join(FLOWS), help="comma-separated presets")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--pictures", action="store_true", help="only draw the entropy/fdiv doc pictures")
    args = parser.parse_args()
    torch.set_num_threads(1)
    folder = output_dir()
    if args.pictures:
        flow_pictures(folder)
        return
    presets = args.flows.split(",")
    for preset in presets:
        if preset not in FLOWS:
            raise SystemExit(f"unknown flow {preset!r}; expected some of {', '.join(FLOWS)}")
    path = folder / "particle_flows.json"
    for preset in presets:
        r = run_flow(preset, args.seeds, folder)
        results = json.loads(path.read_text()) if path.exists() else {}  # merge with parallel runs
        results[preset] = r
        print(f"{preset:20s} ratio {r['ratio']:.3f}  W2 {r['w2_mean']:.4f}  floor {r['floor_mean']:.4f}  "
              f"({r['seconds_all_seeds']:.0f} s)", flush=True)
        ordered = {k: results[k] for k in FLOWS if k in results}
        path.write_text(json.dumps(ordered, indent=2))
        write_doc(ordered, args.seeds, folder)
    print(f"wrote {path}, {folder / 'particle-flows.md'} and pictures in {folder / 'figures'}")


if __name__ == "__main__":
    main()
