"""Engine overhead: the Trainer's EDM step and Model.sample's Heun loop vs the same loops written by hand.

Two networks: the score plugin's ``edm`` preset on ring5 (4x512 Fourier MLP) and the same preset with the image
U-Net (network ``unet``, 16 channels, two levels) on 1x32x32 images (uniform noise: the timing does not depend
on the pixels). Both arms use the same model, the same ``dsm-edm`` loss written out by hand, the same batch
size, Adam and EMA; the engine arm is a whole ``Trainer.fit`` (its setup included). Arms alternate over several
rounds in one process (ABBA order, so drifting load from other processes hits both alike); the ratio compares
the medians of the arms, and the median of the per-round paired ratios is reported next to it. Times are the
process's CPU time (one torch thread), not wall time: on a machine shared with other jobs, waiting for a core
would otherwise dominate the ratio. Targets: training <= 1.05x, sampling <= 1.03x. Writes
``engine_overhead.json`` to the bench output folder (``diffflow bench --out DIR``; default
``~/.cache/diffflow/bench``).

    .venv/bin/python benchmarks/engine_overhead.py [--networks mlp,unet] [--rounds 8]
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

HEUN_STEPS, EMA = 18, 0.999  # 18 Heun steps = 35 NFE
#: per network: the model, training steps per round, batch size and samples per sampling run
CASES = {
    "mlp": {"data": "ring5", "flow": {}, "steps": 60, "batch": 128, "samples": 2000},
    "unet": {"data": "images", "flow": {"network": {"name": "unet", "channels": 16, "mult": [1, 2],
                                                    "embedding_dim": 32}},
             "steps": 6, "batch": 32, "samples": 32},
}


def make_model(case: dict):
    torch.manual_seed(0)
    data = torch.rand(512, 1, 32, 32) * 2 - 1 if case["data"] == "images" else case["data"]
    return build(preset="edm", data=data, flow=case["flow"], train={"batch_size": case["batch"], "progress": False,
                                                                     "ema": EMA, "warmup": 0, "log_every": 1000})


def engine_train(model, case: dict) -> float:
    start = time.process_time()
    Trainer(model, steps=case["steps"]).fit(model.data)
    return (time.process_time() - start) / case["steps"]


def hand_train(model, case: dict) -> float:
    """Adam + EMA on EDM's weighted denoising loss (SPEC §2.6), batches from shuffled epochs."""
    flow, data, batch, steps = model.flow, model.data.train, case["batch"], case["steps"]
    params = [p for p in flow.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=2e-4)
    shadow = [p.detach().clone() for p in params]
    gen = torch.Generator().manual_seed(0)
    order, index, sd = torch.randperm(data.shape[0], generator=gen), 0, flow.sigma_data
    start = time.process_time()
    for _ in range(steps):
        if index + batch > data.shape[0]:
            order, index = torch.randperm(data.shape[0], generator=gen), 0
        y = data[order[index:index + batch]]
        index += batch
        sigma = torch.exp(-1.2 + 1.2 * torch.randn(batch, generator=gen))
        noise = torch.randn(y.shape, generator=gen)
        denoised = flow.denoise(y + sigma.view(-1, *[1] * (y.dim() - 1)) * noise, sigma)
        weight = (sigma**2 + sd**2) / (sigma * sd) ** 2
        loss = (weight * (denoised - y).flatten(1).pow(2).mean(1)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(shadow, [p.detach() for p in params], 1 - EMA)
    return (time.process_time() - start) / steps


def engine_sample(model, case: dict) -> tuple[float, int]:
    start = time.process_time()
    samples = model.sample(case["samples"], HEUN_STEPS, seed=0)
    return time.process_time() - start, samples.nfe


@torch.no_grad()
def hand_sample(model, case: dict) -> float:
    """EDM's deterministic Heun sampler (SPEC §2.6), last step to sigma = 0 left as Euler."""
    flow = model.flow
    sigmas = flow.time_grid(HEUN_STEPS).float()
    start = time.process_time()
    x = sigmas[0] * torch.randn(case["samples"], *flow.event_shape, generator=torch.Generator().manual_seed(0))
    for s0, s1 in zip(sigmas[:-1], sigmas[1:]):
        d = (x - flow.denoise(x, s0)) / s0
        x1 = x + (s1 - s0) * d
        if s1 > 0:
            x1 = x + (s1 - s0) * 0.5 * (d + (x1 - flow.denoise(x1, s1)) / s1)
        x = x1
    return time.process_time() - start


def measure(name: str, rounds: int) -> dict:
    case = CASES[name]
    model = make_model(case)
    engine_train(model, case), hand_train(model, case)  # warm-up (allocator, lazy imports)
    train_engine, train_hand, sample_engine, sample_hand = [], [], [], []
    nfe = 0
    for i in range(rounds):
        if i % 2 == 0:
            train_engine.append(engine_train(model, case))
            train_hand.append(hand_train(model, case))
            seconds, nfe = engine_sample(model, case)
            sample_engine.append(seconds)
            sample_hand.append(hand_sample(model, case))
        else:
            train_hand.append(hand_train(model, case))
            train_engine.append(engine_train(model, case))
            sample_hand.append(hand_sample(model, case))
            sample_engine.append(engine_sample(model, case)[0])
    median, paired = statistics.median, lambda a, b: statistics.median(x / y for x, y in zip(a, b))  # noqa: E731
    result = {
        "parameters": sum(p.numel() for p in model.parameters()), "event_shape": list(model.flow.event_shape),
        "train_step_engine_ms": 1e3 * median(train_engine), "train_step_hand_ms": 1e3 * median(train_hand),
        "train_ratio": median(train_engine) / median(train_hand),
        "train_ratio_paired_median": paired(train_engine, train_hand), "train_target": 1.05,
        "sample_engine_s": median(sample_engine), "sample_hand_s": median(sample_hand),
        "sample_ratio": median(sample_engine) / median(sample_hand),
        "sample_ratio_paired_median": paired(sample_engine, sample_hand), "sample_target": 1.03, "sample_nfe": nfe,
        "rounds": rounds, "train_steps_per_round": case["steps"], "batch": case["batch"],
        "samples": case["samples"],
    }
    print(f"{name}: training step: engine {result['train_step_engine_ms']:.2f} ms, hand "
          f"{result['train_step_hand_ms']:.2f} ms, ratio {result['train_ratio']:.3f} (paired median "
          f"{result['train_ratio_paired_median']:.3f}; target <= 1.05)", flush=True)
    print(f"{name}: sampling {case['samples']} at {nfe} NFE: engine {result['sample_engine_s']:.3f} s, hand "
          f"{result['sample_hand_s']:.3f} s, ratio {result['sample_ratio']:.3f} (paired median "
          f"{result['sample_ratio_paired_median']:.3f}; target <= 1.03)", flush=True)
    return result


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--networks", default="mlp,unet", help=f"comma-separated, among {', '.join(CASES)}")
    parser.add_argument("--rounds", type=int, default=8, help="interleaved rounds per arm")
    args = parser.parse_args()
    torch.set_num_threads(1)
    result = {name: measure(name, args.rounds) for name in args.networks.split(",")}
    result.update({"torch": torch.__version__, "threads": torch.get_num_threads()})
    out = output_dir() / "engine_overhead.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
