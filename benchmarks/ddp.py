"""Data-parallel step time: the engine's DDP (one bucketed all-reduce overlapped with the backward, per player)
against the flat all-reduce it replaced (all gradients concatenated after the backward, one all-reduce).

Runs itself under ``torchrun --standalone --nproc_per_node=2`` (gloo, one torch thread per rank) when started
plainly. Both arms train the same model on each rank's batches with the same Adam: the DDP arm through
``DistContext.data_parallel`` (what ``Trainer.fit`` uses), the flat arm through the loss, a backward, then
:func:`flat_average` (the former ``DistContext.average``). Bursts of steps alternate between the arms (ABBA, a
barrier before each, so both ranks time the same burst) and the ratio compares the medians of the bursts' wall
times per step; the median of the per-burst paired ratios is reported next to it. Networks: the ``edm`` preset's
4x512 Fourier MLP on ring5 and the image U-Net of ``engine_overhead.py`` on 1x32x32. Writes ``ddp.json`` (rank 0)
to the bench output folder (``diffflow bench --out DIR``; default ``~/.cache/diffflow/bench``).

    .venv/bin/python benchmarks/ddp.py [--networks mlp,unet] [--bursts 8]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

CASES = {
    "mlp": {"data": "ring5", "flow": {}, "steps": 30, "batch": 128},
    "unet": {"data": "images", "flow": {"network": {"name": "unet", "channels": 16, "mult": [1, 2],
                                                    "embedding_dim": 32}},
             "steps": 4, "batch": 32},
}


def flat_average(dist, parameters: list[nn.Parameter]) -> None:
    """The flat all-reduce: every gradient (zeros where a parameter got none) concatenated into one tensor after
    the backward, summed across ranks in one all-reduce, divided by the world size and copied back."""
    world = dist.get_world_size()
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for p, g in zip(parameters, grads):
        n = g.numel()
        if p.grad is None:
            p.grad = flat[offset:offset + n].view_as(p).clone()
        else:
            p.grad.copy_(flat[offset:offset + n].view_as(p))
        offset += n


def burst(arm: str, player, loss, optimizer, stream, generator, steps: int) -> tuple[float, float]:
    """Wall and CPU seconds per step of ``steps`` training steps of one arm."""
    import torch.distributed as dist

    dist.barrier()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        batch = next(stream)
        if arm == "ddp":
            loss(batch, generator).backward()
        else:
            player.loss(batch, generator).backward()
            flat_average(dist, player.parameters)
        optimizer.step()
    dist.barrier()
    return (time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps


def measure(name: str, bursts: int) -> dict:
    import torch.distributed as dist

    from diffflow_core import build
    from diffflow_core.training.distributed import DistContext
    from diffflow_core.training.trainer import BatchStream

    case, rank = CASES[name], dist.get_rank()
    torch.manual_seed(0)
    data = torch.rand(512, 1, 32, 32) * 2 - 1 if case["data"] == "images" else case["data"]
    model = build(preset="edm", data=data, flow=case["flow"], train={"progress": False})
    (player,) = model.objective.players(model)
    generator = torch.Generator().manual_seed(rank)
    stream = BatchStream(model.data.train_rows[rank::2], None, case["batch"], generator)
    loss = DistContext().data_parallel(player, find_unused=False)
    optimizer = torch.optim.Adam(player.parameters, lr=2e-4, fused=True)
    args = (player, loss, optimizer, stream, generator, case["steps"])
    burst("ddp", *args), burst("flat", *args)  # warm-up (DDP's bucket rebuild, allocator)
    times: dict[str, list[tuple[float, float]]] = {"ddp": [], "flat": []}
    for i in range(bursts):
        for arm in (("ddp", "flat") if i % 2 == 0 else ("flat", "ddp")):
            times[arm].append(burst(arm, *args))
    wall = {arm: [w for w, _ in t] for arm, t in times.items()}
    cpu = {arm: [c for _, c in t] for arm, t in times.items()}
    median = statistics.median
    result = {
        "parameters": sum(p.numel() for p in player.parameters), "batch_per_rank": case["batch"],
        "steps_per_burst": case["steps"], "bursts": bursts,
        "ddp_ms": 1e3 * median(wall["ddp"]), "flat_ms": 1e3 * median(wall["flat"]),
        "ratio": median(wall["ddp"]) / median(wall["flat"]),
        "ratio_paired_median": median(a / b for a, b in zip(wall["ddp"], wall["flat"])),
        "ddp_cpu_ms": 1e3 * median(cpu["ddp"]), "flat_cpu_ms": 1e3 * median(cpu["flat"]),
    }
    if rank == 0:
        print(f"{name} ({result['parameters']:,d} parameters, batch {case['batch']} per rank): DDP "
              f"{result['ddp_ms']:.2f} ms/step, flat all-reduce {result['flat_ms']:.2f} ms/step, ratio "
              f"{result['ratio']:.3f} (paired median {result['ratio_paired_median']:.3f}); CPU time "
              f"{result['ddp_cpu_ms']:.2f} / {result['flat_cpu_ms']:.2f} ms", flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--networks", default="mlp,unet", help=f"comma-separated, among {', '.join(CASES)}")
    parser.add_argument("--bursts", type=int, default=8, help="bursts per arm")
    args = parser.parse_args()
    if "RANK" not in os.environ:  # started plainly: launch the two ranks
        torchrun = Path(sys.executable).with_name("torchrun")
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        return subprocess.call([str(torchrun), "--standalone", "--nproc_per_node=2", __file__, *sys.argv[1:]],
                               env=env)
    import torch.distributed as dist

    from diffflow_core.commands.bench import output_dir

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    result = {name: measure(name, args.bursts) for name in args.networks.split(",")}
    if dist.get_rank() == 0:
        result.update({"world": dist.get_world_size(), "backend": "gloo", "torch": torch.__version__,
                       "threads_per_rank": torch.get_num_threads()})
        out = output_dir() / "ddp.json"
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {out}")
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
