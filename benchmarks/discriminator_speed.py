"""Time per training iteration of the discriminator family against a reference loop, in the same run.

    .venv/bin/python benchmarks/discriminator_speed.py [--iters-flow 4] [--iters-gan 40] [--repeats 2] [--only CASE ...]

The reference loops restate GPM's public implementation (S1) with the same networks (MLP 4x512 leaky ReLU,
Fourier time features, batch 128): a Discriminator Flow iteration simulates all particles for N - 1 = 55 steps
with ``autograd.grad`` on a discriminator whose weights require grad, keeps every state, gathers ``z_k`` and
takes one Adam step; a GAN iteration is one discriminator and one generator step on the non-saturating loss;
a Score GAN iteration is one generated-score step and one generator step (both scores EDM denoisers, 4x512),
or in the ``score-gan-schedule*`` cases the preset's schedule: one score step per iteration and a generator
step every 10th.
Ours is the ``Trainer`` running the presets' players (with the presets' EMA) at GPM's network sizes; the GAN
is measured three times: alternating with fresh particles for the generator step, alternating with
``reuse_particles``, and with ``updates="simultaneous"`` (one pass serves both players); the Score GAN
alternating and with ``updates="simultaneous"`` (the generator step reuses the score step's draw).
The ``*-bf16`` cases run our players with ``train.precision="bfloat16"`` (autocast) against the float32 reference.
Reference and ours alternate ``--repeats`` times (the machine is shared) and the medians are compared. Writes
``discriminator_speed.json`` to the bench output folder (``diffflow bench --out DIR``; default
``~/.cache/diffflow/bench``); with ``--only`` the other cases keep their values from that file.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from diffflow_core import build
from diffflow_core.commands.bench import output_dir
from diffflow_core.training import Trainer
from diffflow_discriminator.flow import DEFAULT_NETWORK as GPM_MLP
from diffflow_score.presets import GPM_SCORE_MLP

BATCH, N = 128, 56
#: GPM's network sizes (the issue's timings), whatever the presets default to: GPM_MLP is the discriminator
#: flow's default 4x512 network, GPM_SCORE_MLP the score family's.
SIZES = {"gan": {"flow": {"network": GPM_MLP}, "smoother": {"network": GPM_MLP}},
         "discriminator-flow": {"flow": {"network": GPM_MLP}},
         # the data score is left untrained (data_steps = 0): its cost, not its quality, is measured
         "score-gan": {"flow": {"network": GPM_SCORE_MLP, "data_network": GPM_SCORE_MLP, "data_steps": 0},
                       "smoother": {"network": GPM_MLP}}}


BF16 = {"precision": "bfloat16"}


def reference_flow_iteration(model, data, opt, generator) -> None:
    """GPM Algorithm 3 as S1 writes it: full simulation, every state kept, then gather z_k."""
    flow = model.flow
    real = data[torch.randint(0, data.shape[0], (BATCH,), generator=generator)]
    x = torch.randn(BATCH, 2, generator=generator)
    states = [x]
    for j in range(N - 1):
        xg = x.detach().requires_grad_(True)
        h = -F.softplus(-flow.net(xg, torch.full((BATCH,), j / N)).squeeze(1))
        (grad,) = torch.autograd.grad(h.sum(), xg)
        x = x + flow.eta / N * grad
        states.append(x.detach())
    k = torch.randint(0, N, (BATCH,), generator=generator)
    fake = torch.stack(states)[k, torch.arange(BATCH)]
    t = k.float() / N
    loss = F.softplus(flow.net(fake, t)).mean() + F.softplus(-flow.net(real, t)).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()


def reference_gan_iteration(model, data, opts, generator) -> None:
    d, g = model.flow.net, model.smoother.net
    real = data[torch.randint(0, data.shape[0], (BATCH,), generator=generator)]
    fake = g(torch.randn(BATCH, 128, generator=generator))
    loss_d = F.softplus(d(fake.detach())).mean() + F.softplus(-d(real)).mean()
    opts[0].zero_grad()
    loss_d.backward()
    opts[0].step()
    loss_g = F.softplus(-d(g(torch.randn(BATCH, 128, generator=generator)))).mean()
    opts[1].zero_grad()
    loss_g.backward()
    opts[1].step()


def reference_score_gan_iteration(model, opts, generator, generator_step: bool = True) -> None:
    """One generated-score DSM step on detached generator samples, then (if ``generator_step``) one generator
    step along ``(D_p - D_rho)(x + sigma eps) / sigma`` (eq 26) with sigma by eq 28: GPM's two updates, plain Adam."""
    flow, g = model.flow, model.smoother.net
    with torch.no_grad():
        x = g(torch.randn(BATCH, 128, generator=generator))
    sigma = flow.sample_sigma(BATCH, generator, x)
    noisy = x + sigma[:, None] * torch.randn(x.shape, generator=generator)
    loss_s = (flow.generated.denoise(noisy, sigma) - x).pow(2).sum(1).mean()
    opts[0].zero_grad()
    loss_s.backward()
    opts[0].step()
    if not generator_step:
        return
    x = g(torch.randn(BATCH, 128, generator=generator))
    sigma = flow.sample_sigma(BATCH, generator, x)
    noisy = x.detach() + sigma[:, None] * torch.randn(x.shape, generator=generator)
    with torch.no_grad():
        v = (flow.data_score.denoise(noisy, sigma) - flow.generated.denoise(noisy, sigma)) / sigma[:, None]
    loss_g = -(v * x).sum(1).mean()
    opts[1].zero_grad()
    loss_g.backward()
    opts[1].step()


def time_reference(step, iters: int) -> float:
    start = time.perf_counter()
    for _ in range(iters):
        step()
    return (time.perf_counter() - start) / iters


def time_ours(model, iters: int) -> float:
    trainer = Trainer(model, steps=iters, progress=False, log_every=10_000)
    start = time.perf_counter()
    trainer.fit(model.data)
    return (time.perf_counter() - start) / iters


def compare(name: str, preset: str, iters: int, repeats: int, reference_for, train: dict | None = None,
            **objective) -> dict:
    model = build(preset=preset, **SIZES[preset], objective=objective, train=train or {})
    data = model.data.train
    generator = torch.Generator().manual_seed(0)
    reference_step = reference_for(model, data, generator)
    refs, ours = [], []
    reference_step()  # warm-up
    for _ in range(repeats):
        refs.append(time_reference(reference_step, iters))
        ours.append(time_ours(model, iters))
    ref, our = statistics.median(refs), statistics.median(ours)
    print(f"{name}: reference {ref * 1e3:.1f} ms/it, ours {our * 1e3:.1f} ms/it, ratio {our / ref:.3f}", flush=True)
    return {"reference_ms": ref * 1e3, "ours_ms": our * 1e3, "ratio": our / ref, "iters": iters,
            "repeats": repeats, "reference_all_ms": [r * 1e3 for r in refs], "ours_all_ms": [o * 1e3 for o in ours]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters-flow", type=int, default=4)
    parser.add_argument("--iters-gan", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", nargs="*", default=None, help="cases to run (the others keep their last results)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    def flow_ref(model, data, generator):
        opt = torch.optim.Adam(model.flow.parameters(), lr=2e-4, betas=(0.5, 0.999))
        return lambda: reference_flow_iteration(model, data, opt, generator)

    def gan_ref(model, data, generator):
        opts = [torch.optim.Adam(m.parameters(), lr=2e-4, betas=(0.5, 0.999)) for m in (model.flow, model.smoother)]
        return lambda: reference_gan_iteration(model, data, opts, generator)

    def score_gan_ref(model, data, generator):
        """The reference at the model's schedule: a generator step after every ``score_steps``-th score step."""
        opts = [torch.optim.Adam(m.parameters(), lr=2e-4, betas=(0.5, 0.999))
                for m in (model.flow.generated, model.smoother)]
        calls = [0]

        def step():
            calls[0] += 1
            reference_score_gan_iteration(model, opts, generator, calls[0] % model.objective.score_steps == 0)
        return step

    cases = {
        "gan": lambda: compare("GAN", "gan", args.iters_gan, args.repeats, gan_ref),
        "gan-reuse-particles": lambda: compare("GAN, reuse_particles", "gan", args.iters_gan, args.repeats, gan_ref,
                                               reuse_particles=True),
        "gan-simultaneous": lambda: compare("GAN, simultaneous updates", "gan", args.iters_gan, args.repeats,
                                            gan_ref, updates="simultaneous"),
        # one generator step per score step in both loops (the preset takes one per score_steps)
        "score-gan": lambda: compare("Score GAN", "score-gan", args.iters_gan, args.repeats, score_gan_ref,
                                     score_steps=1),
        # the preset's schedule, 10 score steps per generator step, in both loops: an iteration is a score step
        "score-gan-schedule": lambda: compare("Score GAN, 10 score steps per generator step", "score-gan",
                                              args.iters_gan, args.repeats, score_gan_ref),
        "score-gan-schedule-bf16": lambda: compare("Score GAN, 10 score steps per generator step, bfloat16",
                                                   "score-gan", args.iters_gan, args.repeats, score_gan_ref,
                                                   train=BF16),
        "score-gan-simultaneous": lambda: compare("Score GAN, simultaneous updates", "score-gan", args.iters_gan,
                                                  args.repeats, score_gan_ref, score_steps=1,
                                                  updates="simultaneous"),
        "discriminator-flow": lambda: compare("Discriminator Flow", "discriminator-flow", args.iters_flow,
                                              args.repeats, flow_ref),
        # the same players with their forward passes under bfloat16 autocast (the reference stays float32)
        "gan-bf16": lambda: compare("GAN, bfloat16", "gan", args.iters_gan, args.repeats, gan_ref, train=BF16),
        "score-gan-bf16": lambda: compare("Score GAN, bfloat16", "score-gan", args.iters_gan, args.repeats,
                                          score_gan_ref, train=BF16, score_steps=1),
        "discriminator-flow-bf16": lambda: compare("Discriminator Flow, bfloat16", "discriminator-flow",
                                                   args.iters_flow, args.repeats, flow_ref, train=BF16),
    }
    unknown = sorted(set(args.only or ()) - set(cases))
    if unknown:
        parser.error(f"--only: unknown case(s) {unknown}; expected among {sorted(cases)}")
    path = output_dir() / "discriminator_speed.json"
    results = json.loads(path.read_text()) if path.exists() and args.only else {}
    results["threads"] = args.threads
    for name in args.only or cases:
        results[name] = cases[name]()
    path.write_text(json.dumps(results, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
