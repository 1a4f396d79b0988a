"""Every family on one table at matched NFE (issue 23 item 3): W2 / floor on ring5 over 10 sampling seeds.

Each model is its preset trained on ring5 at the preset's own budget (checkpoints cached in the bench output folder,
``harness/<name>.pt``; delete one to retrain it), plus one-step generators distilled from the ``edm`` and
``rectified-flow`` checkpoints (``distill`` flow, regression form). Each is sampled with its preset's solver at the
most steps whose NFE fits each budget in ``NFE`` (``Solver.steps_for``; the NFE actually spent is reported): a
one-step generator only at 1, a flow whose solver cannot spend the budget (Heun needs 2 evaluations) has no entry
there. One thread, one process; ``harness.json`` in the bench output folder (``diffflow bench --out DIR``) and a
markdown table on stdout (docs/compose.md quotes it).

    .venv/bin/python benchmarks/harness.py            # train what is missing, then measure
    .venv/bin/python benchmarks/harness.py mnist runs/mnist-edm/checkpoint.pt ...   # saved MNIST models

The ``mnist`` section measures saved MNIST models (the configs of ``benchmarks/configs/mnist-*.toml``) at the same
budgets: the Fréchet distance in the shipped MNIST classifier's features over its train-vs-test floor, precision and
recall, and the smallest class share, of ``MNIST_N`` samples (one seed: the classifier's statistics average over the
images), and test bits/dim (PF-ODE and, for NDM, the NELBO; :func:`_bits_per_dim`) -> ``harness_mnist.json``.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from diffflow_core import build, registry
from diffflow_core.commands.bench import output_dir
from diffflow_core.likelihood import log_prob
from diffflow_core.model import Model

NFE = (1, 2, 4, 8, 16, 35)
SEEDS, N = 10, 2000
#: family -> presets that represent it
FAMILIES = {
    "score": ("edm", "vp"),
    "velocity": ("rectified-flow",),
    "ndm": ("ndm",),
    "discriminator": ("gan", "discriminator-flow", "score-gan"),
    "kl / Stein": ("svgd", "langevin"),
    "mmd": ("mmd",),
}
DISTILLED = ("edm", "rectified-flow")
GENERATOR = {"name": "mlp", "hidden": 256, "depth": 3}
MNIST_N = 500
LIKELIHOOD_N, LIKELIHOOD_STEPS, NELBO_REPEATS = 16, (64, 256, 1024), 16


def _trained(name: str, config: dict) -> Model:
    """The cached checkpoint ``harness/<name>.pt``, or ``config`` trained and saved there."""
    path = output_dir() / "harness" / f"{name}.pt"
    if path.exists():
        return Model.load(str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    model = build(config)
    start = time.perf_counter()
    if model.objective is not None:  # particle flows on the data (SVGD, Langevin, MMD) have nothing to train
        model.fit(progress=False)
    model.save(str(path))
    print(f"trained {name} in {time.perf_counter() - start:.0f} s", flush=True)
    return Model.load(str(path))


def _distilled(teacher: str) -> Model:
    path = output_dir() / "harness" / f"{teacher}.pt"
    return _trained(f"distilled-{teacher}", {
        "flow": {"name": "distill", "teacher": str(path), "form": "regression"},
        "objective": {"name": "distill", "pairs": 16384},
        "smoother": {"name": "generator", "latent_dim": 2, "network": GENERATOR},
        "solver": "euler", "data": "ring5",
        "train": {"steps": 4000, "batch_size": 256, "lr": 1e-3, "decay": 0.3, "ema": 0.999}})


def _budgets(model: Model):
    """``(budget, steps)`` for each budget of :data:`NFE` the model's sampler can meet (steps None: one pass)."""
    one_step = hasattr(model.smoother, "sample")  # a generator: one network pass, whatever the budget
    for budget in NFE:
        if one_step and budget > 1:
            return
        steps = None if one_step else model.solver.steps_for(budget, model.flow)
        if steps != 0:
            yield budget, steps


def _row(model: Model) -> dict[int, dict]:
    """W2 / floor (± standard error over seeds) and the NFE spent, per budget the model's sampler can meet."""
    cells = {}
    for budget, steps in _budgets(model):
        draws = [model.sample(N, steps, seed=s).x for s in range(SEEDS)]
        result = registry("metrics").get("w2")(draws, "ring5", n=N, seeds=SEEDS)
        shares = registry("metrics").get("mode-coverage")(torch.cat(draws), "ring5").shares
        cells[budget] = {"nfe": model.sample(4, steps, seed=0).nfe, "ratio": result.ratio,
                         "stderr": result.ratio_stderr, "min_share": min(shares)}
    return cells


def mnist(checkpoints: list[str]) -> None:
    """FD / floor, precision, recall and the smallest class share of saved MNIST models per budget (merged into
    ``harness_mnist.json`` by model name, so models can be measured one run at a time)."""
    path = output_dir() / "harness_mnist.json"
    out = json.loads(path.read_text()) if path.exists() else {}
    for checkpoint in checkpoints:
        model = Model.load(checkpoint)
        name = model.config.preset or Path(checkpoint).parent.name
        cells = {}
        for budget, steps in _budgets(model):
            samples = model.sample(MNIST_N, steps, seed=0)
            q = registry("metrics").get("image-quality")(samples.x, model.data, n=MNIST_N)
            cells[str(budget)] = {"nfe": samples.nfe, "ratio": q.fd / q.fd_floor, "fd": q.fd, "fd_floor": q.fd_floor,
                             "precision": q.precision, "recall": q.recall, "min_share": min(q.classes.shares)}
            print(name, budget, json.dumps(cells[str(budget)]), flush=True)
        out[name] = {"checkpoint": checkpoint, "cells": cells, **_bits_per_dim(model)}
        print(name, json.dumps({k: out[name][k] for k in ("ode_bpd", "nelbo_bpd") if k in out[name]}), flush=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"\n| model | {' | '.join(f'NFE {b}' for b in NFE)} |")
    print("|---|" + "---|" * len(NFE))
    for name, row in out.items():
        cells = [f"{c['ratio']:.1f} ({c['precision']:.2f} / {c['recall']:.2f})" + ("" if c["nfe"] == b else
                 f" [{c['nfe']}]") if (c := row["cells"].get(str(b))) else "—" for b in NFE]
        print(f"| {name} | {' | '.join(cells)} |")
    for name, row in out.items():
        found = [f"PF-ODE at {steps} steps {c['mean']:.3f} ± {c['stderr']:.3f}"
                 for steps, c in row.get("ode_bpd", {}).items()]
        if "nelbo_bpd" in row:
            found.append(f"NELBO {row['nelbo_bpd']['mean']:.3f} ± {row['nelbo_bpd']['stderr']:.3f}")
        if found:
            print(f"{name}: bits/dim on {LIKELIHOOD_N} test images, {', '.join(found)}")
    print(f"results: {path}")


def _bits_per_dim(model: Model) -> dict[str, dict]:
    """Test bits/dim of the discrete images (dequantised by one pixel's bin): through the probability-flow ODE
    (Heun, Hutchinson's trace) at each of ``LIKELIHOOD_STEPS`` steps where the flow defines one, since on images
    the solve converges slowly near the data end (a rectified flow's uniform grid gave negative bits/dim at 64
    steps), and the NELBO of an objective that bounds the likelihood (NDM's ``terms``, ``NELBO_REPEATS`` draws per
    image), with standard errors over the ``LIKELIHOOD_N`` images."""
    from ndm_quality import bin_width, per_example_nelbo

    test, delta, found = model.data.test[:LIKELIHOOD_N], bin_width(model.data), {}

    def summary(values: torch.Tensor, **extra) -> dict:
        values = values.double()
        return {"mean": float(values.mean()), "stderr": float(values.std() / values.numel() ** 0.5),
                "n": values.numel(), **extra}

    if model.smoother.integrates_flow and model.flow.likelihood is not None:
        found["ode_bpd"] = {}
        for steps in LIKELIHOOD_STEPS:
            ll = log_prob(model, test, steps=steps, dequantize=delta)
            found["ode_bpd"][str(steps)] = summary(ll.bpd, nfe=ll.nfe)
    if hasattr(model.objective, "terms"):
        found["nelbo_bpd"] = summary(per_example_nelbo(model, test, NELBO_REPEATS, delta), repeats=NELBO_REPEATS)
    return found


def main() -> None:
    torch.set_num_threads(1)
    out: dict[str, dict] = {}
    for family, presets in FAMILIES.items():
        for preset in presets:
            model = _trained(preset, {"preset": preset, "data": "ring5"})
            out[preset] = {"family": family, "cells": _row(model)}
            print(preset, json.dumps(out[preset]["cells"]), flush=True)
    for teacher in DISTILLED:
        name = f"distilled from {teacher}"
        out[name] = {"family": "distilled (generator)", "cells": _row(_distilled(teacher))}
        print(name, json.dumps(out[name]["cells"]), flush=True)
    path = output_dir() / "harness.json"
    path.write_text(json.dumps(out, indent=2))
    print(f"\n| family | model | {' | '.join(f'NFE {b}' for b in NFE)} |")
    print("|---|---|" + "---|" * len(NFE))
    for name, row in out.items():
        cells = [f"{c['ratio']:.2f} ± {c['stderr']:.2f}" + ("" if c["nfe"] == b else f" ({c['nfe']})")
                 if (c := row["cells"].get(b)) else "—" for b in NFE]
        print(f"| {row['family']} | {name} | {' | '.join(cells)} |")
    print(f"results: {path}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["mnist"]:
        torch.set_num_threads(1)
        mnist(sys.argv[2:])
    else:
        main()
