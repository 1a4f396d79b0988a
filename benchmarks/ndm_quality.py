"""NDM quality and likelihood: learned F vs F = x (same network) vs F = x with a network of twice the parameters.

Each variant trains with the same objective, budget and seed; then reports on held-out data the NELBO
(nats/dim), the exact PF-ODE NLL (kernel ``likelihood.log_prob``), sample quality (W2 / data floor) at 10, 100
and 1,000 Heun steps, and the training cost per step relative to F = x measured in the same run.

    .venv/bin/python benchmarks/ndm_quality.py --data ring5 --steps 1500
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from diffflow_core.build import build
from diffflow_core.interfaces import Batch
from diffflow_core.likelihood import log_prob
from diffflow_core.metrics.wasserstein import w2_ratio


def variants(hidden: int) -> dict[str, dict]:
    """Three flows at equal settings; the 'wide' width gives about twice the parameters of one MLP."""
    net = {"name": "mlp", "hidden": hidden, "depth": 3}
    wide = {"name": "mlp", "hidden": int(round(hidden * math.sqrt(2))), "depth": 3}
    return {
        "ndm (learned F)": {"network": net, "transform": {"name": "learned", "network": net}},
        "F = x": {"network": net, "transform": "identity"},
        "F = x, 2x params": {"network": wide, "transform": "identity"},
    }


def nelbo(model, x: torch.Tensor, repeats: int) -> dict[str, float]:
    """Test NELBO per dimension (nats), averaged over ``repeats`` draws of the time and noise."""
    gen = torch.Generator().manual_seed(123)
    dims = x[0].numel()
    totals = {"rec": 0.0, "diff": 0.0, "prior": 0.0}
    with torch.no_grad():
        for _ in range(repeats):
            terms = model.objective.terms(model.flow, x, gen)
            for key in totals:
                totals[key] += float(getattr(terms, key).mean()) / dims / repeats
    return {**totals, "total": sum(totals.values())}


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(1)
    results = {"data": args.data, "train_steps": args.steps, "variants": {}}
    train = {"steps": args.steps, "batch_size": 256, "lr": 1e-3, "warmup": 100, "grad_clip": 1.0,
             "ema": args.ema, "progress": False, "seed": 0}
    chosen = variants(args.hidden)
    if args.variant is not None:
        chosen = {name: flow for i, (name, flow) in enumerate(chosen.items()) if i == args.variant}
    for name, flow in chosen.items():
        model = build(preset="ndm", data=args.data, flow=flow, train=train)
        params = sum(p.numel() for p in model.flow.parameters())
        start = time.perf_counter()
        model.fit()
        seconds = time.perf_counter() - start
        test = model.data.test[: args.n]
        row = {"params": params, "train_seconds": seconds, "seconds_per_step": seconds / args.steps,
               "nelbo_nats_per_dim": nelbo(model, test, args.repeats)}
        ll = log_prob(model, test[: args.n_nll], steps=args.nll_steps, solver="heun")
        row["ode_nll_nats_per_dim"] = ll.mean_nll / test[0].numel()
        row["ode_nll_bpd"] = float(ll.bpd.mean())
        row["w2"] = {}
        for steps in args.sample_steps:
            nfe = []

            def draw(n: int, seed: int, steps: int = steps) -> torch.Tensor:
                samples = model.sample(n, steps, seed=seed)
                nfe.append(samples.nfe)
                return samples.x

            res = w2_ratio(draw, model.data, n=args.n, seeds=args.seeds)
            row["w2"][str(steps)] = {**res.as_dict(), "nfe": nfe[0]}
        results["variants"][name] = row
        print(name, json.dumps(row, indent=1), flush=True)
    return results


def step_cost(args: argparse.Namespace, rounds: int = 6, block: int = 10) -> dict[str, float]:
    """Seconds per training step of each variant, timed in interleaved blocks in one process (a fair ratio on a
    shared machine); the median block per variant, and its ratio to F = x."""
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    steppers = {}
    for name, flow in variants(args.hidden).items():
        model = build(preset="ndm", data=args.data, flow=flow)
        (player,) = model.objective.players(model)
        optimizer = torch.optim.Adam(player.parameters, lr=1e-3)
        data = model.data.train

        def step(player=player, optimizer=optimizer, data=data) -> None:
            batch = data[torch.randint(0, data.shape[0], (256,), generator=gen)]
            loss = player.loss(Batch(batch), gen)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        steppers[name] = step
    times: dict[str, list[float]] = {name: [] for name in steppers}
    for _ in range(rounds):
        for name, step in steppers.items():
            start = time.perf_counter()
            for _ in range(block):
                step()
            times[name].append((time.perf_counter() - start) / block)
    median = {name: sorted(v)[len(v) // 2] for name, v in times.items()}
    return {name: {"seconds_per_step": value, "ratio_vs_identity": value / median["F = x"]}
            for name, value in median.items()}


def merge(parts: list[dict]) -> dict:
    """Join per-variant results (variants may run as parallel processes) and add the cost ratios."""
    results = {**parts[0], "variants": {k: v for part in parts for k, v in part["variants"].items()}}
    base = results["variants"]["F = x"]["seconds_per_step"]
    for row in results["variants"].values():
        row["cost_vs_identity"] = row["seconds_per_step"] / base
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="ring5")
    parser.add_argument("--steps", type=int, default=1500, help="training steps per variant")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--ema", type=float, default=0.995)
    parser.add_argument("--n", type=int, default=2000, help="test points / samples per W2 seed")
    parser.add_argument("--n-nll", type=int, default=1000)
    parser.add_argument("--nll-steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=20, help="NELBO Monte Carlo repeats")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--sample-steps", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--cost", action="store_true", help="only time training steps (interleaved, one process)")
    parser.add_argument("--variant", type=int, default=None, help="run only variant 0, 1 or 2")
    parser.add_argument("--merge", nargs="+", default=None, help="join per-variant JSON files instead of running")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.cost:
        cost = step_cost(args)
        out = Path(args.out or f"benchmarks/results/ndm_{args.data}_cost.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(cost, indent=1))
        print(json.dumps(cost, indent=1))
        return
    if args.merge is None:
        results = run(args)
        if args.variant is not None:
            out = Path(args.out or f"benchmarks/results/ndm_{args.data}_{args.variant}.json")
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(results, indent=1))
            print(f"wrote {out}")
            return
        results = merge([results])
    else:
        results = merge([json.loads(Path(p).read_text()) for p in args.merge])
    out = Path(args.out or f"benchmarks/results/ndm_{results['data']}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out}")
    for name, row in results["variants"].items():
        w2 = ", ".join(f"{k}: {v['ratio']:.3f}" for k, v in row["w2"].items())
        print(f"{name:18s} NELBO {row['nelbo_nats_per_dim']['total']:.4f} nats/dim  ODE NLL "
              f"{row['ode_nll_nats_per_dim']:.4f} nats/dim  W2/floor {w2}  cost x{row['cost_vs_identity']:.2f}")


if __name__ == "__main__":
    main()
