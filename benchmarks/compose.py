"""Drift algebra and distillation on ring5 (issue 23): one-step generators distilled from an edm and a rectified-flow teacher.

Sections (run all, or name some on the command line):

* ``teachers``  trains the two teachers (``edm`` and ``rectified-flow`` presets with a 3x256 MLP, shorter than the
                presets) and saves them as checkpoints in the bench output folder; W2 / floor of each at its preset NFE.
* ``distill``   distils each teacher by path into a one-step generator (``distill`` flow and objective, regression form:
                the teacher's solves from 16,384 prior draws) and measures W2 / floor over 10 sampling seeds with its
                standard error, and the mode shares (target: ratio <= 1.3, no mode below 15%); writes a scatter.
* ``score``     the score form (Score GAN with the edm teacher as data score), same measurements.
* ``guidance``  discriminator guidance of a deliberately under-trained EDM (``edm`` preset, 3x256 MLP, 400 steps) at
                17 NFE (Heun, 9 steps): a ``discriminator-guidance`` model trained on the base's samples, W2 / floor
                over 10 seeds at guidance weights 0 (the base), 0.5, 1, 2.

One training process at a time, one thread (``torch.set_num_threads(1)``). Results go to ``compose.json`` (merged
per section) and ``compose_distilled.png`` in the bench output folder (``diffflow bench --out DIR``); the page is
docs/compose.md.

    .venv/bin/python benchmarks/compose.py teachers distill
"""
from __future__ import annotations

import json
import sys
import time

import torch

from diffflow_core import build, registry
from diffflow_core.commands.bench import output_dir
from diffflow_core.model import Model

NET = {"name": "mlp", "hidden": 256, "depth": 3, "fourier_scale": 2.0}
GENERATOR = {"name": "mlp", "hidden": 256, "depth": 3}
TEACHERS = {"edm": {"preset": "edm", "steps": 4000, "nfe_steps": 18},
            "rectified-flow": {"preset": "rectified-flow", "steps": 4000, "nfe_steps": 10}}
SEEDS, N = 10, 2000


def measure(model: Model, steps: int | None = None) -> dict:
    """W2 / floor over ``SEEDS`` sampling seeds (with its standard error) and the mode shares of the pooled draws."""
    draws = [model.sample(N, steps, seed=s).x for s in range(SEEDS)]
    result = registry("metrics").get("w2")(draws, "ring5", n=N, seeds=SEEDS)
    shares = registry("metrics").get("mode-coverage")(torch.cat(draws), "ring5").shares
    nfe = model.sample(4, steps, seed=0).nfe
    return {"nfe": nfe, "ratio": result.ratio, "ratio_stderr": result.ratio_stderr, "mode_shares": list(shares),
            "min_share": min(shares), **result.as_dict()}


def teachers(out: dict) -> None:
    rows = {}
    for name, spec in TEACHERS.items():
        model = build(preset=spec["preset"], data="ring5", flow={"network": NET},
                      train={"steps": spec["steps"], "progress": False})
        start = time.perf_counter()
        model.fit()
        seconds = time.perf_counter() - start
        model.save(str(output_dir() / f"compose_teacher_{name}.pt"))
        rows[name] = {"train_steps": spec["steps"], "train_seconds": seconds,
                      **measure(model, spec["nfe_steps"])}
        print(name, rows[name]["ratio"], rows[name]["ratio_stderr"], flush=True)
    out["teachers"] = rows


def _distilled(name: str, form: str, **objective) -> tuple[Model, float]:
    path = output_dir() / f"compose_teacher_{name}.pt"
    if not path.exists():
        raise SystemExit(f"run the 'teachers' section first (missing {path})")
    config = {"flow": {"name": "distill", "teacher": str(path), "form": form},
              "objective": {"name": "distill", **objective},
              "smoother": {"name": "generator", "latent_dim": 2 if form == "regression" else 128,
                           "network": GENERATOR},
              "solver": "euler", "data": "ring5",
              "train": {"steps": 4000, "batch_size": 256, "lr": 1e-3, "decay": 0.3, "ema": 0.999,
                        "progress": False}}
    model = build(config)
    start = time.perf_counter()
    model.fit()
    return model, time.perf_counter() - start


def distill(out: dict) -> None:
    rows, pictures = {}, {}
    for name in TEACHERS:
        model, seconds = _distilled(name, "regression", pairs=16384)
        rows[name] = {"form": "regression", "train_seconds": seconds, **measure(model)}
        pictures[name] = model.sample(N, seed=0).x
        print(name, rows[name]["ratio"], rows[name]["ratio_stderr"], rows[name]["min_share"], flush=True)
    out["distill"] = rows
    _scatter(pictures)


def score(out: dict) -> None:
    model, seconds = _distilled("edm", "score", score_steps=5, generator_lr=2e-4, betas=[0.5, 0.999])
    out["score"] = {"edm": {"form": "score", "train_seconds": seconds, **measure(model)}}
    print(out["score"], flush=True)


def _scatter(pictures: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = registry("datasets").get("ring5")().sample(N, torch.Generator().manual_seed(0))
    fig, axes = plt.subplots(1, len(pictures) + 1, figsize=(4 * (len(pictures) + 1), 4), sharex=True, sharey=True)
    for ax, (title, x) in zip(axes, {"ring5 data": data, **{f"1-step, {k} teacher": v for k, v in pictures.items()}}.items()):
        ax.scatter(x[:, 0], x[:, 1], s=1, alpha=0.4)
        ax.set_title(title)
        ax.set_aspect("equal")
    fig.tight_layout()
    fig.savefig(output_dir() / "compose_distilled.png", dpi=80)


GUIDED = {"steps": 400, "nfe_steps": 9, "weights": [0.0, 0.5, 1.0, 2.0]}


def guidance(out: dict) -> None:
    base = build(preset="edm", data="ring5", flow={"network": NET}, sample={"steps": GUIDED["nfe_steps"]},
                 train={"steps": GUIDED["steps"], "progress": False})
    base.fit()
    path = output_dir() / "compose_guidance_base.pt"
    base.save(str(path))
    model = build({"flow": {"name": "discriminator-guidance", "base": str(path), "network": NET},
                   "objective": {"name": "discriminator-guidance", "samples": 16384}, "solver": "heun",
                   "data": "ring5", "sample": {"steps": GUIDED["nfe_steps"]},
                   "train": {"steps": 3000, "batch_size": 256, "lr": 1e-3, "decay": 0.3, "ema": 0.999,
                             "progress": False}})
    start = time.perf_counter()
    model.fit()
    rows = {"base_train_steps": GUIDED["steps"], "discriminator_seconds": time.perf_counter() - start}
    for weight in GUIDED["weights"]:
        draws = [model.sample(N, seed=s, guidance=weight).x for s in range(SEEDS)]
        result = registry("metrics").get("w2")(draws, "ring5", n=N, seeds=SEEDS)
        shares = registry("metrics").get("mode-coverage")(torch.cat(draws), "ring5").shares
        rows[f"w={weight}"] = {"ratio": result.ratio, "ratio_stderr": result.ratio_stderr,
                               "min_share": min(shares), "mode_shares": list(shares)}
        print(weight, result.ratio, result.ratio_stderr, flush=True)
    rows["base_nfe"] = base.sample(4, seed=0).nfe
    out["guidance"] = rows


SECTIONS = {"teachers": teachers, "distill": distill, "score": score, "guidance": guidance}


def main(names: list[str]) -> None:
    torch.set_num_threads(1)
    path = output_dir() / "compose.json"
    out = json.loads(path.read_text()) if path.exists() else {}
    for name in names or list(SECTIONS):
        if name not in SECTIONS:
            raise SystemExit(f"unknown section {name!r}; expected some of {', '.join(SECTIONS)}")
        SECTIONS[name](out)
        path.write_text(json.dumps(out, indent=2))
    print(f"results: {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
