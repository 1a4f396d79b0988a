"""Quality of the discriminator family on ring5: W2 ratio to the data floor (3 sampling seeds) and mode shares.

    .venv/bin/python benchmarks/discriminator_quality.py --preset gan [--steps 1900] [--set flow.eta=20]
        [--nfe 14 28 56] [--tag NAME] [--exact-data-score]

Trains the preset (with ``--set section.key=json`` overrides) while recording mode coverage every
``--eval-every`` iterations, then samples each NFE with seeds 0, 1, 2 and writes to the bench output folder
(``diffflow bench --out DIR``; default ``~/.cache/diffflow/bench``) ``discriminator_quality_<tag>.json`` (training
time, loss curves, coverage over training, W2, mode shares) and pictures ``discriminator_<tag>_*.png`` (loss
curves, coverage, samples over the discriminator's potential, GPM Figures 9-10). ``--exact-data-score`` (Score
GAN, mixture data) drives the generator with the data's exact denoiser instead of a learned one: what is left is
the generator's and the generated score's error.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def parse_set(items: list[str]) -> dict:
    out: dict = {}
    for item in items:
        key, _, raw = item.partition("=")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = out
        *path, last = key.split(".")
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", required=True)
    parser.add_argument("--steps", type=int, default=None, help="training iterations (default: the preset's)")
    parser.add_argument("--set", nargs="*", default=[], help="overrides section.key=json")
    parser.add_argument("--nfe", nargs="*", type=int, default=None, help="sampling steps (default: the preset's)")
    parser.add_argument("--solver", default=None)
    parser.add_argument("--tag", default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--exact-data-score", action="store_true",
                        help="Score GAN: the data's exact (Tweedie) denoiser in place of the learned data score")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from diffflow_core import build
    from diffflow_core.commands.bench import output_dir
    from diffflow_core.metrics import mode_coverage, w2_ratio
    from diffflow_core.training import Trainer
    from diffflow_discriminator.diagnostics import coverage_evaluator

    overrides = parse_set(args.set)
    if args.steps is not None:
        overrides.setdefault("train", {})["steps"] = args.steps
    overrides.setdefault("train", {}).setdefault("progress", False)
    model = build(preset=args.preset, **overrides)
    if args.exact_data_score:
        use_exact_data_score(model)
    coverage_of = coverage_evaluator(1000, model.config.sample.steps)
    eval_seconds = [0.0]

    def evaluate(model, step):  # timed apart: the reported training time excludes the evaluations
        tick = time.perf_counter()
        out = coverage_of(model, step)
        eval_seconds[0] += time.perf_counter() - tick
        return out

    trainer = Trainer(model, evaluate=evaluate, eval_every=args.eval_every)
    start = time.perf_counter()
    history = trainer.fit(model.data)
    seconds = time.perf_counter() - start - eval_seconds[0]
    steps_list = args.nfe or [model.config.sample.steps]
    results = []
    for steps in steps_list:
        draw = lambda n, s: model.sample(n, steps, seed=s, solver=args.solver).x  # noqa: E731
        w2 = w2_ratio(draw, model.data, n=2000, seeds=3)
        sample = model.sample(2000, steps, seed=0, solver=args.solver)
        coverage = mode_coverage(sample.x, model.data)
        shares = list(coverage.shares)
        results.append({"steps": steps, "nfe": sample.nfe, **w2.as_dict(), "mode_shares": shares,
                        "modes_ok": coverage.max_deviation <= 5.0})
        print(f"{args.preset} nfe={sample.nfe}: {w2}; modes {[round(s, 3) for s in shares]}", flush=True)
    tag = args.tag or args.preset
    out = {"preset": args.preset, "overrides": overrides, "exact_data_score": args.exact_data_score,
           "train_seconds": seconds,
           "seconds_per_iteration": seconds / model.config.train.steps, "results": results,
           "losses": history.records}
    path = output_dir() / f"discriminator_quality_{tag}.json"
    path.write_text(json.dumps(out, indent=1))
    print(f"trained in {seconds:.1f} s; wrote {path}")
    pictures(model, history, tag, path.parent, steps_list[-1], args.solver)


class ExactDenoiser(torch.nn.Module):
    """The data's own ``denoise(x, sigma)`` (Tweedie, SPEC §1.1) standing in for a Score GAN's learned ``D_p``."""

    def __init__(self, data) -> None:
        super().__init__()
        self.data = data

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.data.denoise(x, sigma)


def use_exact_data_score(model) -> None:
    if not hasattr(model.flow, "data_score"):
        raise SystemExit(f"--exact-data-score: expected a Score GAN preset, got flow {type(model.flow).__name__}")
    if not hasattr(model.data, "denoise"):
        raise SystemExit(f"--exact-data-score: data {type(model.data).__name__} has no exact denoiser "
                         "(expected a Gaussian mixture such as ring5)")
    model.flow.data_score, model.flow.data_ready = ExactDenoiser(model.data), True


def pictures(model, history, tag: str, folder: Path, steps: int, solver) -> None:
    """Loss curves, mode coverage over training, and particles over the discriminator's potential."""
    from diffflow_core import plots
    from diffflow_discriminator.diagnostics import potential_background

    for key in sorted({k for r in history.records for k in r if k.startswith("loss/")}):
        plots.curve([r["step"] for r in history.records if key in r],
                    history.series(key), folder / f"discriminator_{tag}_{key.replace('/', '_')}.png", ylabel=key)
    evals = [r for r in history.records if "eval/max_deviation" in r]
    if evals:
        plots.curve([r["step"] for r in evals], [r["eval/max_deviation"] for r in evals],
                    folder / f"discriminator_{tag}_coverage.png", ylabel="max |share - 20%| (points)", reference=5.0,
                    reference_label="target: 5 points")
    if not hasattr(model.flow, "logit"):
        return
    if hasattr(model.smoother, "sample"):
        x = model.sample(1000, seed=0).x
        plots.snapshots(x[None], folder / f"discriminator_{tag}_particles.png", data=model.data,
                        background=potential_background(model.flow), panels=1, flow=model.flow, times=[0.0])
    else:
        sample = model.sample(1000, steps, seed=0, solver=solver, record=True)
        times = sample.times.tolist()
        plots.snapshots(sample.trajectory, folder / f"discriminator_{tag}_particles.png", times=times,
                        flow=model.flow, data=model.data, background=potential_background(model.flow, times[-2]))


if __name__ == "__main__":
    main()
