"""Engine overhead: the Trainer's EDM step on ring5 and Model.sample's Heun loop vs hand-written PyTorch.

Both arms use the same model (the score plugin's ``edm`` preset: 4x512 Fourier MLP, EDM preconditioning),
the same ``dsm-edm`` loss written out by hand, the same batch size, Adam and EMA. Arms alternate over several
rounds (ABBA order, so drifting load from other processes hits both alike) and the ratio compares the
fastest round of each arm (the least-disturbed measurement, as ``timeit`` recommends); the median of the
per-round paired ratios is reported next to it. Times are the process's CPU time (one torch thread), not
wall time: on a machine shared with other jobs, waiting for a core would otherwise dominate the ratio.
Targets: training <= 1.10x, sampling 2,000 points at 35 NFE <= 1.05x. Writes ``engine_overhead.json`` to the
bench output folder (``diffflow bench --out DIR``; default ``~/.cache/diffflow/bench``).
"""
from __future__ import annotations

import json
import statistics
import time

import torch

from diffflow_core import build
from diffflow_core.commands.bench import output_dir
from diffflow_core.training import Trainer

ROUNDS, TRAIN_STEPS, BATCH, N_SAMPLES, HEUN_STEPS = 8, 60, 128, 2000, 18  # 18 Heun steps = 35 NFE


def edm_model():
    torch.manual_seed(0)
    return build(preset="edm", data="ring5", train={"batch_size": BATCH, "progress": False, "ema": 0.999,
                                                    "warmup": 0, "log_every": 1000})


def engine_train(model) -> float:
    start = time.process_time()
    Trainer(model, steps=TRAIN_STEPS).fit(model.data)
    return (time.process_time() - start) / TRAIN_STEPS


def hand_train(model) -> float:
    """Adam + EMA on EDM's weighted denoising loss (SPEC §2.6), batches from shuffled epochs."""
    flow, data = model.flow, model.data.train
    params = [p for p in flow.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=2e-4)
    shadow = [p.detach().clone() for p in params]
    gen = torch.Generator().manual_seed(0)
    order, index, sd = torch.randperm(data.shape[0], generator=gen), 0, flow.sigma_data
    start = time.process_time()
    for _ in range(TRAIN_STEPS):
        if index + BATCH > data.shape[0]:
            order, index = torch.randperm(data.shape[0], generator=gen), 0
        y = data[order[index:index + BATCH]]
        index += BATCH
        sigma = torch.exp(-1.2 + 1.2 * torch.randn(BATCH, generator=gen))
        noise = torch.randn(y.shape, generator=gen)
        denoised = flow.denoise(y + sigma[:, None] * noise, sigma)
        weight = (sigma**2 + sd**2) / (sigma * sd) ** 2
        loss = (weight * (denoised - y).pow(2).mean(1)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(shadow, [p.detach() for p in params], 1 - 0.999)
    return (time.process_time() - start) / TRAIN_STEPS


def engine_sample(model) -> tuple[float, int]:
    start = time.process_time()
    samples = model.sample(N_SAMPLES, HEUN_STEPS, seed=0)
    return time.process_time() - start, samples.nfe


@torch.no_grad()
def hand_sample(model) -> float:
    """EDM's deterministic Heun sampler (SPEC §2.6), last step to sigma = 0 left as Euler."""
    flow = model.flow
    sigmas = flow.time_grid(HEUN_STEPS).float()
    start = time.process_time()
    x = sigmas[0] * torch.randn(N_SAMPLES, 2, generator=torch.Generator().manual_seed(0))
    for s0, s1 in zip(sigmas[:-1], sigmas[1:]):
        d = (x - flow.denoise(x, s0)) / s0
        x1 = x + (s1 - s0) * d
        if s1 > 0:
            x1 = x + (s1 - s0) * 0.5 * (d + (x1 - flow.denoise(x1, s1)) / s1)
        x = x1
    return time.process_time() - start


def main() -> dict:
    torch.set_num_threads(1)
    model = edm_model()
    engine_train(model), hand_train(model)  # warm-up (allocator, lazy imports)
    train_engine, train_hand, sample_engine, sample_hand = [], [], [], []
    nfe = 0
    for i in range(ROUNDS):
        if i % 2 == 0:
            train_engine.append(engine_train(model))
            train_hand.append(hand_train(model))
            seconds, nfe = engine_sample(model)
            sample_engine.append(seconds)
            sample_hand.append(hand_sample(model))
        else:
            train_hand.append(hand_train(model))
            train_engine.append(engine_train(model))
            sample_hand.append(hand_sample(model))
            sample_engine.append(engine_sample(model)[0])
    paired = lambda a, b: statistics.median(x / y for x, y in zip(a, b))  # noqa: E731
    result = {
        "train_step_engine_ms": 1e3 * min(train_engine), "train_step_hand_ms": 1e3 * min(train_hand),
        "train_ratio": min(train_engine) / min(train_hand), "train_ratio_paired_median": paired(train_engine, train_hand),
        "train_target": 1.10,
        "sample_engine_s": min(sample_engine), "sample_hand_s": min(sample_hand),
        "sample_ratio": min(sample_engine) / min(sample_hand),
        "sample_ratio_paired_median": paired(sample_engine, sample_hand), "sample_target": 1.05, "sample_nfe": nfe,
        "rounds": ROUNDS, "train_steps_per_round": TRAIN_STEPS, "batch": BATCH, "samples": N_SAMPLES,
        "torch": torch.__version__, "threads": torch.get_num_threads(),
    }
    print(f"training step: engine {result['train_step_engine_ms']:.2f} ms, hand {result['train_step_hand_ms']:.2f} ms, "
          f"ratio {result['train_ratio']:.3f} (paired median {result['train_ratio_paired_median']:.3f}; target <= 1.10)")
    print(f"sampling {N_SAMPLES} at {nfe} NFE: engine {result['sample_engine_s']:.3f} s, hand "
          f"{result['sample_hand_s']:.3f} s, ratio {result['sample_ratio']:.3f} (paired median "
          f"{result['sample_ratio_paired_median']:.3f}; target <= 1.05)")
    out = output_dir() / "engine_overhead.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
