"""Particle interactions per step: the fused pair reductions against the eager kernel sums they replaced.

Three workloads, each on N particles drawn from N(0, I) in 2-D, as their presets run them:

* ``mmd``: the MMD flow's drift (preset ``mmd``: five Gaussian bandwidths, 2,000 ring5 targets), O(N (N + M));
* ``svgd``: the Stein smoother's velocity (preset ``svgd``: median-heuristic width, eq 18 by parts), O(N^2);
* ``kde``: the particle KDE score (preset ``kl``: Scott's bandwidth), O(N^2).

"eager" is a faithful copy of the code before the fusion (``EagerKernel``, ``eager_*`` below: a ``[rows, M]``
distance block per call of ``psi``/``value``, one temporary per elementwise operation, 2^22 pairs per block,
``softmax`` for the KDE, torch's ``median`` for SVGD's bandwidth); "fused" is the library
(:mod:`diffflow_kl.interactions`, and :func:`diffflow_kl.kernels.median_bandwidth`). For each size the
two run alternately, ``reps`` times (the machine is shared: alternation gives both the same load), and the
median seconds per step and their ratio are reported with the largest deviation between the two results. On
the CPU everything runs on one thread. ``--compile`` also times ``torch.compile`` of a dense KDE block at the
first size, compile time included. Writes ``interactions.json`` to the bench output folder (``diffflow bench
--out DIR``; default ``~/.cache/diffflow/bench``).

    .venv/bin/python benchmarks/interactions.py [--n 2000,32000] [--reps 7,1] [--compile]
    .venv/bin/python benchmarks/interactions.py --device cuda --n 100000 --reps 3
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import statistics
import sys
import time
from typing import Callable

import torch
from torch import Tensor

from diffflow_core import SamplingContext, build
from diffflow_core.commands.bench import output_dir
from diffflow_kl.kde import bandwidth
from diffflow_kl.scores import ParticleKDE

EAGER_PAIR_BUDGET = 2 ** 22


class EagerKernel:
    """The Gaussian kernel as it was: ``value`` and ``psi`` each a sum over bandwidths of fresh temporaries."""

    def __init__(self, bandwidths: list[float]) -> None:
        self.bandwidths = bandwidths

    def value(self, d2: Tensor) -> Tensor:
        return sum(torch.exp(-d2 / (2 * h * h)) for h in self.bandwidths)

    def psi(self, d2: Tensor) -> Tensor:
        return sum(-torch.exp(-d2 / (2 * h * h)) / (h * h) for h in self.bandwidths)


def eager_sq_dists(x: Tensor, y: Tensor) -> Tensor:
    x, y = x.flatten(1), y.flatten(1)
    d2 = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * x @ y.T
    return d2.clamp_min_(0)


def eager_by_chunks(fn: Callable[[Tensor], Tensor], x: Tensor, num_centres: int) -> Tensor:
    size = max(1, EAGER_PAIR_BUDGET // max(1, num_centres))
    if x.shape[0] <= size:
        return fn(x)
    blocks = torch.split(x, size)
    first = fn(blocks[0])
    out = first.new_empty((x.shape[0], *first.shape[1:]))
    out[:size] = first
    for start, block in zip(range(size, x.shape[0], size), blocks[1:]):
        out[start:start + block.shape[0]] = fn(block)
    return out


def eager_grad_mean(kernel: EagerKernel, x: Tensor, y: Tensor) -> Tensor:
    flat_y = y.flatten(1)

    def block(xb: Tensor) -> Tensor:
        psi = kernel.psi(eager_sq_dists(xb, flat_y))
        return (psi.sum(1, keepdim=True) * xb.flatten(1) - psi @ flat_y) / flat_y.shape[0]

    return eager_by_chunks(block, x, flat_y.shape[0]).reshape(x.shape)


def eager_smooth_mean(kernel: EagerKernel, x: Tensor, y: Tensor, values: Tensor) -> Tensor:
    flat_y, flat_v = y.flatten(1), values.flatten(1)

    def block(xb: Tensor) -> Tensor:
        return kernel.value(eager_sq_dists(xb, flat_y)) @ flat_v / flat_y.shape[0]

    return eager_by_chunks(block, x, flat_y.shape[0]).reshape(x.shape[0], *values.shape[1:])


def eager_kde_score(x: Tensor, centres: Tensor, h: float) -> Tensor:
    flat_c = centres.flatten(1)
    h2 = torch.as_tensor(h, dtype=x.dtype, device=x.device) ** 2

    def block(xb: Tensor) -> Tensor:
        weights = torch.softmax(-eager_sq_dists(xb, flat_c) / (2 * h2), dim=1)
        return (weights @ flat_c - xb.flatten(1)) / h2

    return eager_by_chunks(block, x, flat_c.shape[0]).reshape(x.shape)


def eager_median_bandwidth(x: Tensor, scale: float, seed: int, max_points: int = 1000) -> float:
    """The median heuristic as it was (torch's ``median`` of the masked off-diagonal pairs), times ``scale``."""
    n = x.shape[0]
    sub = x
    if n > max_points:
        sub = x[torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:max_points].to(x.device)]
    d2 = eager_sq_dists(sub, sub)
    off = d2[~torch.eye(sub.shape[0], dtype=torch.bool, device=x.device)]
    med = float(off.median()) if off.numel() else 1.0
    return scale * max(med / (2.0 * torch.log(torch.tensor(n + 1.0)).item()), 1e-12) ** 0.5


def workloads(device: torch.device) -> dict[str, tuple[str, Callable, Callable]]:
    """name -> (label, eager step, fused step); a step maps the particles to the drift or score."""
    mmd = build(preset="mmd", data="ring5", device=device).flow
    svgd = build(preset="svgd", data="ring5", device=device)
    t, context = torch.tensor(1.0, device=device), SamplingContext()
    mmd_kernel = EagerKernel(mmd.kernel.bandwidths)
    particle_kde = ParticleKDE("scott")

    def mmd_eager(x: Tensor) -> Tensor:
        y = mmd.targets.to(x)
        return eager_grad_mean(mmd_kernel, x, y) - eager_grad_mean(mmd_kernel, x, x)

    def svgd_eager(x: Tensor) -> Tensor:
        kernel = EagerKernel([eager_median_bandwidth(x, svgd.smoother.scale, svgd.smoother.seed)])
        a, c = svgd.flow.stein_parts(x, t)
        out = eager_smooth_mean(kernel, x, x, a)
        return out - c * eager_grad_mean(kernel, x, x) if c else out

    return {
        "mmd": (f"MMD drift ({len(mmd.kernel.bandwidths)} bandwidths, {mmd.targets.shape[0]} targets)",
                mmd_eager, lambda x: mmd.drift(x, t, context)),
        "svgd": ("SVGD velocity (Stein, median width)", svgd_eager,
                 lambda x: svgd.smoother.velocity(svgd.flow, x, t, context)),
        "kde": ("particle KDE score (Scott)", lambda x: eager_kde_score(x, x, bandwidth("scott", x)),
                particle_kde.score),
    }


def cpu_name() -> str:
    """The CPU's model name (Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as info:
            return next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def timed(step: Callable[[Tensor], Tensor], x: Tensor) -> tuple[float, Tensor]:
    if x.device.type == "cuda":
        torch.cuda.synchronize()
    tick = time.perf_counter()
    out = step(x)
    if x.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - tick, out


def compiled_kde(x: Tensor, rows: int) -> dict:
    """``torch.compile`` of a dense KDE-score block (no shared buffers), run over blocks of ``rows`` queries: the
    first step (compiling) and the median of five more, against the fused score on the same particles."""
    h = bandwidth("scott", x)

    def block(xb: Tensor, centres: Tensor) -> Tensor:
        weights = torch.softmax(-((xb[:, None, :] - centres[None]) ** 2).sum(-1) / (2 * h * h), dim=1)
        return (weights @ centres - xb) / (h * h)

    compiled = torch.compile(block, dynamic=False)

    def step(q: Tensor) -> Tensor:
        return torch.cat([compiled(q[i:i + rows], q) for i in range(0, q.shape[0], rows)])

    first, _ = timed(step, x)
    again = [timed(step, x)[0] for _ in range(5)]
    fused = [timed(ParticleKDE("scott").score, x)[0] for _ in range(5)]
    return {"rows": rows, "first_step_s": first, "compiled_s": statistics.median(again),
            "fused_s": statistics.median(fused)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", default="2000,32000", help="comma-separated particle counts")
    parser.add_argument("--reps", default="7,1", help="alternating eager/fused repetitions per count")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workloads", default="mmd,svgd,kde")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile of a KDE block")
    args = parser.parse_args()
    sizes = [int(n) for n in args.n.split(",")]
    reps = [int(r) for r in args.reps.split(",")]
    reps += reps[-1:] * (len(sizes) - len(reps))
    device = torch.device(args.device)
    torch.set_num_threads(1)
    steps = workloads(device)
    names = args.workloads.split(",")
    result = {"date": datetime.date.today().isoformat(), "device": str(device),
              "cpu": cpu_name(), "threads": torch.get_num_threads(),
              "torch": torch.__version__, "command": " ".join(["python", "benchmarks/interactions.py", *sys.argv[1:]]),
              "results": {}}
    if device.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name(device)
    warm = torch.randn(300, 2, device=device)
    for name in names:
        steps[name][2](warm)
    for n, count in zip(sizes, reps):
        x = torch.randn(n, 2, generator=torch.Generator().manual_seed(0)).to(device)
        for name in names:
            label, eager, fused = steps[name]
            times: dict[str, list[float]] = {"eager": [], "fused": []}
            for _ in range(count):
                seconds, eager_out = timed(eager, x)
                times["eager"].append(seconds)
                seconds, fused_out = timed(fused, x)
                times["fused"].append(seconds)
            med = {k: statistics.median(v) for k, v in times.items()}
            deviation = float((eager_out - fused_out).abs().max() / eager_out.abs().max())
            result["results"][f"{name}@{n}"] = {
                "workload": name, "label": label, "n": n, "reps": count, "seconds": times,
                "eager_s": med["eager"], "fused_s": med["fused"], "ratio": med["eager"] / med["fused"],
                "max_relative_deviation": deviation}
            print(f"{name:5s} N={n:>7,d}  eager {med['eager']:9.3f} s  fused {med['fused']:8.3f} s  "
                  f"ratio {med['eager'] / med['fused']:6.1f}x  (max deviation {deviation:.1e} of max |v|; "
                  f"{count} rep(s))", flush=True)
    if args.compile:
        x = torch.randn(sizes[0], 2, generator=torch.Generator().manual_seed(0)).to(device)
        result["compile"] = compiled_kde(x, rows=math.ceil(sizes[0] / 8))
        c = result["compile"]
        print(f"compiled KDE block N={sizes[0]:,d}: first step {c['first_step_s']:.1f} s (compiling), then "
              f"{c['compiled_s']:.4f} s; fused {c['fused_s']:.4f} s ({c['compiled_s'] / c['fused_s']:.1f}x)")
    path = output_dir() / "interactions.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
