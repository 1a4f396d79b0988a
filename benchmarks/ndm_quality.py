"""NDM quality and likelihood: learned F vs F = x (same network) vs F = x with a network of twice the parameters.

Each variant trains with the same objective, budget and seed (``--variant i`` runs one; variants may run as
separate processes and be joined with ``--merge``); then reports on held-out data

- the test NELBO (nats/dim on ring5, dequantised bits/dim on digits) with its standard error over test points,
  from ``--repeats`` draws of (t, eps) per point; every variant sees the same draws (common random numbers), so
  ``--merge`` also reports the paired difference of each variant to F = x with its standard error;
- the exact probability-flow ODE NLL (kernel ``likelihood.log_prob``; Hutchinson on digits, dequantised);
- sample quality at each of ``--sample-steps`` Heun steps: W2 / floor on ring5 (kernel ``w2_ratio``), the
  Fréchet distance of the digits classifier's features on digits (metric ``frechet-digits``, against its floor);
- the training time per step. ``--cost`` instead times training steps of all variants interleaved in one process.

Results go to the bench output folder (``diffflow bench --out DIR``; default ``~/.cache/diffflow/bench``):
``ndm_<data>.json`` (``ndm_<data>_cost.json`` with ``--cost``) unless ``--out`` names another file; relative
``--out`` and ``--merge`` files are taken in that folder.

    .venv/bin/python benchmarks/ndm_quality.py --data ring5 --steps 4000 --variant 0 --out ndm_ring5_0.json
"""
from __future__ import annotations

import argparse
import json
import math
import time
from functools import partial

import torch

from diffflow_core import build
from diffflow_core.commands.bench import output_dir
from diffflow_core.data import load_dataset
from diffflow_core.interfaces import Batch
from diffflow_core.likelihood import log_prob
from diffflow_core.metrics.wasserstein import w2_ratio
from diffflow_core.plugins import registry

NAMES = ("ndm (learned F)", "F = x", "F = x, 2x params")


def variants(hidden: int, depth: int, fourier_scale: float | None = None) -> dict[str, dict]:
    """Three flows at equal settings; the 'wide' width gives about twice the parameters of one MLP."""
    extra = {} if fourier_scale is None else {"fourier_scale": fourier_scale}
    net = {"name": "mlp", "hidden": hidden, "depth": depth, **extra}
    wide = {"name": "mlp", "hidden": int(round(hidden * math.sqrt(2))), "depth": depth, **extra}
    flows = [{"network": net, "transform": {"name": "learned", "network": net}},
             {"network": net, "transform": "identity"},
             {"network": wide, "transform": "identity"}]
    return dict(zip(NAMES, flows))


def bin_width(data) -> float | None:
    """Width of one quantisation bin in model space ([-1, 1] images of integers 0..pixel_max), else None."""
    pixel_max = getattr(data, "pixel_max", None)
    return None if pixel_max is None else 2.0 / pixel_max


def per_example_nelbo(model, x: torch.Tensor, repeats: int, delta: float | None) -> torch.Tensor:
    """NELBO per dimension of each test point ``[N]``, averaged over ``repeats`` draws of (u, t, eps) from a fixed
    seed; in nats/dim, or bits/dim of the discrete data when ``delta`` (dequantisation by ``U[0, delta)``)."""
    gen = torch.Generator().manual_seed(123)
    dims = x[0].numel()
    total = torch.zeros(x.shape[0], dtype=torch.float64)
    with torch.no_grad():
        for _ in range(repeats):
            xq = x if delta is None else x + delta * torch.rand(x.shape, generator=gen)
            total += model.objective.terms(model.flow, xq, gen).total.double() / repeats
    if delta is None:
        return total / dims
    return (total / dims - math.log(delta)) / math.log(2)


def sample_quality(model, steps: int, n: int, seeds: int) -> dict:
    """W2 / floor (ring5) or Fréchet distance (digits) of samples drawn with ``steps`` Heun steps."""
    nfe = []

    def draw(size: int, seed: int) -> torch.Tensor:
        samples = model.sample(size, steps, seed=seed)
        nfe.append(samples.nfe)
        return samples.x

    if model.data.name == "digits":
        frechet = registry("metrics").get("frechet-digits")
        x = torch.cat([draw(n, seed) for seed in range(seeds)])
        res = frechet(x)
        counts = registry("metrics").get("class-histogram")(x).counts
        return {"fd": res.fd, "fd_std": res.fd_std, "floor": res.floor, "ratio": res.ratio, "chunks": res.chunks,
                "n": n * seeds, "nfe": nfe[0], "class_shares": [c / x.shape[0] for c in counts]}
    return {**w2_ratio(draw, model.data, n=n, seeds=seeds).as_dict(), "nfe": nfe[0]}


LOG_SNRS = (-6.0, -4.0, -2.0, 0.0, 2.0, 4.0, 6.0, 8.0, 10.0)


def denoising_error(model, x: torch.Tensor, delta: float | None) -> dict[str, float]:
    """Mean squared error per dimension of the sampling denoiser ``x_hat(z_t, t)`` on test points at each log-SNR
    of ``LOG_SNRS`` (``z_t`` from ``q(z_t | x)``, dequantised ``x`` when ``delta``): where along the noise levels a
    model's reverse network is good or poor. Common random numbers across models (fixed seed)."""
    gen = torch.Generator().manual_seed(321)
    flow = model.flow
    grid = torch.linspace(0, 1, 100_001, dtype=torch.float64)
    lam_grid = flow.schedule.log_snr(grid.to(torch.get_default_dtype())).double()
    out = {}
    with torch.no_grad():
        xq = x if delta is None else x + delta * torch.rand(x.shape, generator=gen)
        for lam in LOG_SNRS:  # invert the decreasing log-SNR on a fine grid
            t = grid[(lam_grid - lam).abs().argmin()].to(x.dtype).expand(x.shape[0]).contiguous()
            z = flow.marginal(xq, t, torch.randn(x.shape, generator=gen))
            out[f"{lam:g}"] = float((flow.sampling_denoise(z, t) - xq).pow(2).mean())
    return out


def train_config(args: argparse.Namespace) -> dict:
    return {"steps": args.steps, "batch_size": args.batch, "lr": args.lr, "warmup": 100, "grad_clip": 1.0,
            "ema": args.ema, "progress": False, "seed": 0}


def make_model(args: argparse.Namespace, name: str):
    """The variant ``name``; on dequantised data the sampling clip is widened by the bin width ``delta``: the model
    learns ``x + U[0, delta)``, whose box is ``[-1, 1 + delta)``, and clamping ``x_hat`` at 1 biases every path
    that ends on a full-intensity pixel (measured in docs/benchmarks/ndm.md)."""
    flow = variants(args.hidden, args.depth, args.fourier_scale)[name]
    objective = {"name": "nelbo-continuous", "proposal": args.proposal, "weighting": args.weighting,
                 "weighting_bias": args.weighting_bias}
    delta = bin_width(load_dataset(args.data)) if args.dequantize else None
    if args.clip is not None:
        flow = {**flow, "clip": args.clip + (delta or 0.0)}
    if delta is not None:
        objective["dequantize"] = delta
    return build(preset="ndm", data=args.data, flow=flow, objective=objective, train=train_config(args)), delta


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(1)
    results = {"data": args.data, "args": vars(args), "variants": {}}
    names = NAMES if args.variant is None else (NAMES[args.variant],)
    for name in names:
        model, delta = make_model(args, name)
        params = sum(p.numel() for p in model.flow.parameters())
        start = time.perf_counter()
        if args.load:
            model.flow.load_state_dict(torch.load(args.load, map_location="cpu"))
            seconds = float("nan")
        else:
            model.fit()
            seconds = time.perf_counter() - start
            if args.save:
                torch.save(model.flow.state_dict(), args.save)
        model.flow.eval()
        row = {"params": params, "train_seconds": seconds, "seconds_per_step": seconds / args.steps}
        row["denoise_mse"] = denoising_error(model, model.data.test[: args.n_test], delta)
        print("denoising MSE by log-SNR", row["denoise_mse"], flush=True)
        if not args.quality_only:
            row.update(likelihoods(model, model.data.test, delta, args))
        row["quality"] = {}
        for steps in args.sample_steps:
            start = time.perf_counter()
            row["quality"][str(steps)] = sample_quality(model, steps, args.n, args.seeds)
            row["quality"][str(steps)]["seconds"] = time.perf_counter() - start
            print(name, steps, row["quality"][str(steps)], flush=True)
        results["variants"][name] = row
        print(name, json.dumps({k: v for k, v in row.items() if k != "nelbo"}, indent=1), flush=True)
    return results


def likelihoods(model, test: torch.Tensor, delta: float | None, args: argparse.Namespace) -> dict:
    """Test NELBO (per test point, for paired comparisons) and the PF-ODE NLL, per dimension."""
    test = test[: args.n_test]
    values = per_example_nelbo(model, test, args.repeats, delta)
    unit = "bits/dim" if delta is not None else "nats/dim"
    nelbo = {"unit": unit, "mean": float(values.mean()), "stderr": float(values.std() / math.sqrt(values.numel())),
             "n": values.numel(), "repeats": args.repeats}
    print("NELBO", nelbo, flush=True)
    ll = log_prob(model, test[: args.n_nll], steps=args.nll_steps, solver="heun", dequantize=delta)
    nll = ll.bpd.double() if delta is not None else -ll.nats.double() / test[0].numel()
    return {"nelbo": {**nelbo, "per_example": values.tolist()},
            "ode_nll": {"unit": unit, "mean": float(nll.mean()), "stderr": float(nll.std() / math.sqrt(nll.numel())),
                        "n": nll.numel(), "steps": args.nll_steps, "nfe": ll.nfe}}


def step_cost(args: argparse.Namespace, rounds: int = 8, block: int = 10) -> dict[str, dict[str, float]]:
    """Seconds per training step of each variant, timed in interleaved blocks in one process (a fair ratio on a
    shared machine); the median block per variant, and its ratio to F = x."""
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    steppers = {}
    for name in NAMES:
        model, _ = make_model(args, name)
        (player,) = model.objective.players(model)
        optimizer = torch.optim.Adam(player.parameters, lr=1e-3)
        data = model.data.train

        def step(player=player, optimizer=optimizer, data=data) -> None:
            batch = data[torch.randint(0, data.shape[0], (args.batch,), generator=gen)]
            loss = player.loss(Batch(batch), gen)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        steppers[name] = step
        if name == NAMES[0]:  # the same model with L_rec evaluating F's network at t = 0 (before the shortcut)
            before = make_model(args, name)[0]
            before.flow.transform.identity_at_zero = False
            (player,) = before.objective.players(before)
            optimizer = torch.optim.Adam(player.parameters, lr=1e-3)
            steppers[f"{name}, L_rec through F"] = partial(step, player, optimizer)
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
    """Join per-variant results, add the cost ratios and the paired NELBO differences to F = x."""
    results = {**parts[0], "variants": {k: v for part in parts for k, v in part["variants"].items()}}
    rows = results["variants"]
    base = rows["F = x"]
    ref = torch.tensor(base["nelbo"]["per_example"], dtype=torch.float64)
    for row in rows.values():
        row["cost_vs_identity"] = row["seconds_per_step"] / base["seconds_per_step"]
        diff = torch.tensor(row["nelbo"]["per_example"], dtype=torch.float64) - ref
        row["nelbo_minus_identity"] = {"mean": float(diff.mean()),
                                       "stderr": float(diff.std() / math.sqrt(diff.numel()))}
    return results


def summary(results: dict) -> str:
    lines = []
    for name, row in results["variants"].items():
        nelbo, diff, nll = row["nelbo"], row["nelbo_minus_identity"], row["ode_nll"]
        quality = ", ".join(f"{k}: {v['ratio']:.3f}" for k, v in row["quality"].items())
        lines.append(f"{name:18s} NELBO {nelbo['mean']:.4f} +/- {nelbo['stderr']:.4f} {nelbo['unit']} "
                     f"(vs F = x {diff['mean']:+.4f} +/- {diff['stderr']:.4f})  ODE NLL {nll['mean']:.4f} +/- "
                     f"{nll['stderr']:.4f}  quality/floor {quality}  {row['seconds_per_step']:.3f} s/step")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="ring5")
    parser.add_argument("--steps", type=int, default=4000, help="training steps per variant")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--fourier-scale", type=float, default=None, help="MLP time-feature scale (default: the network's)")
    parser.add_argument("--clip", type=float, default=None, help="clamp x_hat to the data box [-clip, clip] when sampling "
                        "(plus the bin width with --dequantize)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--ema", type=float, default=0.999)
    parser.add_argument("--proposal", default="logsnr")
    parser.add_argument("--weighting", default="elbo", help="training loss: elbo or sigmoid (objective weighting)")
    parser.add_argument("--weighting-bias", type=float, default=2.0, help="log-SNR where the sigmoid weight is 1/2")
    parser.add_argument("--dequantize", action="store_true", help="train on dequantised data (digits)")
    parser.add_argument("--n", type=int, default=2000, help="samples per seed")
    parser.add_argument("--n-test", type=int, default=2000, help="test points for the NELBO")
    parser.add_argument("--n-nll", type=int, default=1000)
    parser.add_argument("--nll-steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=20, help="NELBO Monte Carlo draws per test point")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--sample-steps", type=int, nargs="*", default=[10, 100, 1000])
    parser.add_argument("--cost", action="store_true", help="only time training steps (interleaved, one process)")
    parser.add_argument("--variant", type=int, default=None, help="run only variant 0, 1 or 2")
    parser.add_argument("--save", default=None, help="save the trained flow's state dict here")
    parser.add_argument("--load", default=None, help="evaluate a saved state dict instead of training")
    parser.add_argument("--quality-only", action="store_true", help="skip the NELBO and the ODE NLL")
    parser.add_argument("--merge", nargs="+", default=None,
                        help="join per-variant JSON files (in the bench output folder) instead of running")
    parser.add_argument("--out", default=None, help="JSON file in the bench output folder (default: ndm_<data>.json)")
    args = parser.parse_args()
    folder = output_dir()
    if args.cost:
        cost = step_cost(args)
        out = folder / (args.out or f"ndm_{args.data}_cost.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(cost, indent=1))
        print(json.dumps(cost, indent=1))
        return
    results = merge([json.loads((folder / p).read_text()) for p in args.merge]) if args.merge else run(args)
    out = folder / (args.out or f"ndm_{results['data']}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out}")
    if "nelbo" in results["variants"].get("F = x", {}):
        print(summary(merge([results]) if not args.merge else results))


if __name__ == "__main__":
    main()
