"""Cost of one ``diffusion-gan`` training iteration and of its particle simulation, against baselines in the same run.

    .venv/bin/python benchmarks/discriminator_diffusiongan_speed.py [--iters 20] [--repeats 3] [--set k=json ...]

At the preset's sizes (score MLP 3x128, discriminator MLP 3x128, batch 128, N = 56) this times:

* ``simulate``: Algorithm 3 step 2 with the current discriminator and score (``flow.simulate``, each particle
  advanced to its own ``k``), against two baselines restated here: ``straightforward`` (the same prefix
  simulation, but with per-step tensor scalars, both discriminator terms always in the autograd graph and the
  noise drawn at every step: the plugin's code before the profiling pass) and ``full`` (every particle simulated
  for all N - 1 steps and ``z_k`` gathered, as GPM's loop does);
* ``iteration``: one Trainer iteration of the preset (simulation, discriminator step, score DSM step, EMA).

Runs alternate ``--repeats`` times (the machine is shared) and medians are compared. Writes
``discriminator_diffusiongan_speed.json`` to the bench output folder (``diffflow bench --out DIR``; default
``~/.cache/diffflow/bench``).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from diffflow_core import build
from diffflow_core.commands.bench import output_dir
from diffflow_core.training import Trainer

BATCH, N = 128, 56


def straightforward_drift(flow, x, t):
    """The drift as first written: tensor-valued scalars, ``w h(f) + w' f`` differentiated whole."""
    t = torch.as_tensor(t)
    g2 = float(2 * flow.sigma_max * (1 - t) * flow.sigma_max)
    kappa = flow.kappa(t)
    w_gan, w_logit = flow.eta, g2 * (1 - kappa) / 2
    out = flow.potential_gradient(x, t, lambda f: w_gan * flow.loss.potential(f) + w_logit * f)
    sigma = (flow.sigma_max * (1 - t)).to(x).expand(x.shape[0])
    return out + g2 * (1 + kappa) / 2 * flow.score_model.score(x, sigma).detach()


@torch.no_grad()
def straightforward_simulate(flow, x0, k, generator):
    """Prefix simulation with the straightforward drift and a noise draw at every step."""
    order = torch.argsort(k, descending=True)
    counts, x, dt, active = k[order], x0[order].clone(), 1.0 / N, x0.shape[0]
    for j in range(int(counts[0])):
        while active and int(counts[active - 1]) <= j:
            active -= 1
        t = torch.tensor(j * dt)
        x[:active] += dt * straightforward_drift(flow, x[:active], t)
        noise = torch.randn(x[:active].shape, generator=generator)
        x[:active] += torch.as_tensor(flow.kappa(t) * float(2 * flow.sigma_max * (1 - t) * flow.sigma_max)).sqrt() \
            * dt ** 0.5 * noise
    out = torch.empty_like(x)
    out[order] = x
    return out


@torch.no_grad()
def full_simulate(flow, x0, k, generator):
    """Every particle for N - 1 steps, every state kept, ``z_k`` gathered (GPM's loop)."""
    x, states, dt = x0, [x0], 1.0 / N
    for j in range(N - 1):
        t = torch.tensor(j * dt)
        x = x + dt * flow.drift(x, t) + flow.diffusion(t) * dt ** 0.5 * torch.randn(x.shape, generator=generator)
        states.append(x)
    return torch.stack(states)[k, torch.arange(x0.shape[0])]


def timed(fn, iters: int) -> float:
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - start) / iters


def parse_set(items: list[str]) -> dict:
    out: dict = {}
    for item in items:
        key, _, raw = item.partition("=")
        node = out
        *path, last = key.split(".")
        for part in path:
            node = node.setdefault(part, {})
        node[last] = json.loads(raw)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--set", nargs="*", default=[], help="preset overrides section.key=json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    overrides = parse_set(args.set)
    model = build(preset="diffusion-gan", **overrides)
    flow, generator = model.flow, torch.Generator().manual_seed(0)
    if flow.row != "diffusion-gan":
        raise SystemExit("the straightforward baseline restates the diffusion-gan row only")

    def draw():
        return flow.prior(BATCH, generator, "cpu"), torch.randint(0, N, (BATCH,), generator=generator)

    cases = {"ours": lambda: flow.simulate(*draw(), N, generator),
             "straightforward": lambda: straightforward_simulate(flow, *draw(), generator),
             "full": lambda: full_simulate(flow, *draw(), generator)}
    x0, k = draw()
    torch.testing.assert_close(flow.simulate(x0, k, N, torch.Generator().manual_seed(1)),  # same maths, same noise
                               straightforward_simulate(flow, x0, k, torch.Generator().manual_seed(1)))
    times: dict[str, list[float]] = {name: [] for name in [*cases, "iteration"]}
    for fn in cases.values():
        fn()  # warm-up
    Trainer(model, steps=1, progress=False).fit(model.data)  # warm-up: the first Adam imports torch._dynamo
    for _ in range(args.repeats):
        for name, fn in cases.items():
            times[name].append(timed(fn, args.iters))
        trainer = Trainer(model, steps=args.iters, progress=False, log_every=10_000)
        start = time.perf_counter()
        trainer.fit(model.data)
        times["iteration"].append((time.perf_counter() - start) / args.iters)
    ms = {name: statistics.median(v) * 1e3 for name, v in times.items()}
    results = {"threads": args.threads, "iters": args.iters, "repeats": args.repeats, "overrides": overrides,
               "median_ms": ms, "all_ms": {name: [t * 1e3 for t in v] for name, v in times.items()},
               "simulate_vs_straightforward": ms["ours"] / ms["straightforward"],
               "simulate_vs_full": ms["ours"] / ms["full"], "simulate_share_of_iteration": ms["ours"] / ms["iteration"]}
    for name, value in ms.items():
        print(f"{name}: {value:.1f} ms", flush=True)
    print(f"simulate: {results['simulate_vs_straightforward']:.3f}x straightforward, "
          f"{results['simulate_vs_full']:.3f}x full; {results['simulate_share_of_iteration']:.0%} of an iteration")
    path = output_dir() / "discriminator_diffusiongan_speed.json"
    path.write_text(json.dumps(results, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
