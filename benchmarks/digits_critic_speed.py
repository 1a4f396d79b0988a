"""Cost of one digits Discriminator Flow iteration with the `conv-critic` against the MLP 3x512 baseline, same run.

    .venv/bin/python benchmarks/digits_critic_speed.py [--iters 10] [--repeats 3]

One iteration = Algorithm 3 (simulate N = 16 steps with the current critic, critic loss on data versus particles
at t = k/N with the gradient penalty, backward, Adam step), timed with the config
``benchmarks/configs/digits-discriminator-flow-wgan-gp016.toml`` and its network swapped. Runs alternate
``--repeats`` times (the machine is shared); medians are compared. Writes
``digits_discriminator-flow_critic_speed.json`` to the bench output folder (``diffflow bench --out DIR``; default
``~/.cache/diffflow/bench``).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from diffflow_core import build
from diffflow_core.commands.bench import output_dir
from diffflow_core.interfaces import Batch

ROOT = Path(__file__).resolve().parent
CONFIG = ROOT / "configs" / "digits-discriminator-flow-wgan-gp016.toml"
NETWORKS = {
    "mlp_3x512": {"name": "mlp", "hidden": 512, "depth": 3, "activation": "leaky_relu"},
    "conv_16": {"name": "conv-critic", "channels": 16},
    "conv_32": {"name": "conv-critic", "channels": 32},
}


def seconds_per_iteration(network: dict, iters: int) -> float:
    model = build(CONFIG, flow={"network": network})
    (player,) = model.objective.players(model)
    opt = torch.optim.Adam(player.parameters, lr=2e-4)
    gen = torch.Generator().manual_seed(0)
    batch = Batch(model.data.train[:128])
    for i in range(iters + 2):  # two warm-up iterations
        if i == 2:
            start = time.perf_counter()
        loss = player.loss(batch, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (time.perf_counter() - start) / iters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    times = {name: [] for name in NETWORKS}
    for _ in range(args.repeats):
        for name, net in NETWORKS.items():
            times[name].append(seconds_per_iteration(net, args.iters))
    base = statistics.median(times["mlp_3x512"])
    result = {name: {"ms_per_iteration": 1000 * statistics.median(t), "ratio_to_mlp": statistics.median(t) / base}
              for name, t in times.items()}
    for name, r in result.items():
        print(f"{name:10s} {r['ms_per_iteration']:7.1f} ms/iteration  {r['ratio_to_mlp']:.2f}x the MLP")
    out = output_dir() / "digits_discriminator-flow_critic_speed.json"
    out.write_text(json.dumps({"iters": args.iters, "repeats": args.repeats, "results": result}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
