"""Quality of the velocity plugin (ScoreFlow / rectified flow), measured (SPEC §4; issue #7 acceptance).

Sections (run all, or name some on the command line):

* ``ring5``   N(0, I) -> ring5: W2 / floor at <= 20 NFE (Euler and Heun), flow matching.
* ``pc``      path-constrained (one-step, lambda = 1/t) vs plain flow matching at equal training steps on ring5:
              W2 / floor at 1, 2, 5, 10 NFE (Euler); the FM model is the one of ``ring5``.
* ``pc-multi`` the multi-step path-constrained variant (3 Euler steps over a horizon of 0.2), same budget.
* ``reflow``  the ring5 flow-matching model re-paired by its own couplings, then fine-tuned: W2 at 1-10 NFE.
* ``nll``     the ring5 model's test NLL by the kernel's probability-flow likelihood vs the exact data NLL.
* ``moons``   8gaussians -> moons (a dataset source, independent pairs, no minibatch OT), 5,000 steps, batch 256:
              W2 and its floor at <= 10 NFE.
* ``digits``  class-conditional flow with label dropout on digits: guidance w = 2 class agreement of the digits
              classifier, translation c1 -> c2 (shared latent) share classified as c2, and the cycle error.

Every W2 is reported with the data-vs-data floor measured in the same run (the baseline). Results are written
to ``velocity_quality.json`` (merged per section) in the bench output folder (``diffflow bench --out DIR``;
default ``~/.cache/diffflow/bench``), next to the trained models the later sections load, and summarised in
``docs/benchmarks/velocity.md``.

    .venv/bin/python benchmarks/velocity_quality.py ring5 pc moons digits
"""
from __future__ import annotations

import itertools
import json
import sys
import time

import torch

from diffflow_core import registry
from diffflow_core import build
from diffflow_core.commands.bench import output_dir
from diffflow_core.model import Model

TOY_NET = {"name": "mlp", "hidden": 256, "depth": 3, "fourier_scale": 1.0}
TOY_TRAIN = {"steps": 5000, "batch_size": 256, "lr": 1e-3, "ema": 0.999, "progress": False}
W2_N, W2_SEEDS = 2000, 3


def w2_at(model: Model, dataset, steps: int, solver: str) -> dict:
    result = registry("metrics").get("w2")(lambda n, s: model.sample(n, steps, seed=s, solver=solver).x,
                                           dataset, n=W2_N, seeds=W2_SEEDS)
    nfe = model.sample(4, steps, seed=0, solver=solver).nfe
    return {"solver": solver, "steps": steps, "nfe": nfe, **result.as_dict()}


def train(preset: str, data, **overrides) -> tuple[Model, float]:
    model = build(preset=preset, data=data, **overrides)
    start = time.perf_counter()
    model.fit()
    return model, time.perf_counter() - start


def ring5(out: dict) -> None:
    model, seconds = train("rectified-flow", "ring5", flow={"network": TOY_NET}, train=TOY_TRAIN)
    torch.save(model.state_dict(), output_dir() / "velocity_ring5_fm.pt")
    rows = [w2_at(model, model.data, s, solver) for solver, steps in (("euler", (5, 10, 20)), ("heun", (5, 10)))
            for s in steps]
    out["ring5"] = {"train_seconds": seconds, "rows": rows}


def pc(out: dict) -> None:
    rows = {}
    fm = _ring5_fm()
    model, seconds = train("scoreflow", "ring5", flow={"network": TOY_NET}, train=TOY_TRAIN)
    for name, m in (("flow-matching", fm), ("path-constrained", model)):
        rows[name] = [w2_at(m, m.data, s, "euler") for s in (1, 2, 5, 10)]
    out["pc"] = {"train_seconds_pc": seconds, "rows": rows}


def _ring5_fm() -> Model:
    weights = output_dir() / "velocity_ring5_fm.pt"
    if not weights.exists():
        raise SystemExit(f"this section compares with the flow-matching model of section ring5: run ring5 first "
                         f"(missing {weights})")
    fm = build(preset="rectified-flow", data="ring5", flow={"network": TOY_NET})
    fm.load_state_dict(torch.load(weights, weights_only=True))
    return fm


def pc_multi(out: dict) -> None:
    model, seconds = train("scoreflow", "ring5", flow={"network": TOY_NET}, train=TOY_TRAIN,
                           objective={"steps": 3, "horizon": 0.2})
    out["pc-multi"] = {"train_seconds": seconds, "steps": 3, "horizon": 0.2,
                       "rows": [w2_at(model, model.data, s, "euler") for s in (1, 2, 5, 10)]}


def reflow(out: dict) -> None:
    model = _ring5_fm()
    start = time.perf_counter()
    model.objective.reflow(model, 20_000, 20, seed=123, solver="heun")
    model.fit(steps=2000, progress=False)
    out["reflow"] = {"pairs": 20_000, "pair_solver": "heun x 20", "finetune_steps": 2000,
                     "seconds": time.perf_counter() - start,
                     "rows": [w2_at(model, model.data, s, "euler") for s in (1, 2, 5, 10)]}


def nll(out: dict) -> None:
    from diffflow_core.likelihood import log_prob

    model = _ring5_fm()
    x = model.data.test[:1000]
    exact = float(-model.data.log_prob(x).mean())
    rows = []
    for steps in (8, 32, 128):
        result = log_prob(model, x, steps=steps, solver="heun")
        rows.append({"steps": steps, "nfe": result.nfe, "nll": result.mean_nll})
    out["nll"] = {"n": x.shape[0], "exact_data_nll": exact, "rows": rows}


def moons(out: dict) -> None:
    model, seconds = train("rectified-flow", "moons", flow={"network": TOY_NET, "source": {"name": "dataset",
                                                                                          "data": "8gaussians"}},
                           train=TOY_TRAIN)
    rows = [w2_at(model, model.data, s, solver) for solver, s in (("euler", 5), ("euler", 10), ("heun", 5))]
    out["moons"] = {"train_seconds": seconds, "rows": rows}


def digits(out: dict) -> None:
    from diffflow_core.metrics.digits import digits_classifier
    from diffflow_velocity.translate import translate

    model, seconds = train("scoreflow-translate", "digits", train={"progress": False})
    torch.save(model.state_dict(), output_dir() / "velocity_digits.pt")
    classifier = digits_classifier()
    classify = lambda x: classifier(x.float()).argmax(1)  # noqa: E731
    labels = torch.arange(10).repeat_interleave(100)
    guided = {}
    for w in (1.0, 2.0):
        x = model.sample(labels.shape[0], 10, seed=0, label=labels, guidance=w).x
        guided[str(w)] = float((classify(x) == labels).float().mean())
    data = model.data
    pairs = []
    for (c1, c2), w in itertools.product(((1, 7), (3, 8), (0, 6), (4, 9), (5, 2)), (1.0, 2.0)):
        x = data.test[data.test_labels == c1]
        there = translate(x, c1, c2, flow=model, steps=20, guidance=w)
        back = translate(there.x, c2, c1, flow=model, steps=20, guidance=w)
        pairs.append({"c1": c1, "c2": c2, "guidance": w, "n": x.shape[0],
                      "classified_as_c2": float((classify(there.x) == c2).float().mean()),
                      "source_classified_as_c1": float((classify(x) == c1).float().mean()),
                      "cycle_rmse": float((back.x - x).pow(2).mean().sqrt()),
                      "data_rms": float(x.pow(2).mean().sqrt()), "nfe": there.nfe})
    out["digits"] = {"train_seconds": seconds, "guidance_agreement": guided, "translation": pairs}


SECTIONS = {"ring5": ring5, "pc": pc, "pc-multi": pc_multi, "reflow": reflow, "nll": nll, "moons": moons, "digits": digits}


def main(names: list[str]) -> None:
    torch.set_num_threads(1)
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        raise SystemExit(f"unknown section(s) {unknown}; expected some of {list(SECTIONS)}")
    out: dict = {}
    path = output_dir() / "velocity_quality.json"
    for name in names or list(SECTIONS):
        SECTIONS[name](out)
        previous = json.loads(path.read_text()) if path.exists() else {}
        path.write_text(json.dumps({**previous, **out}, indent=2) + "\n")  # other sections may run in parallel
        print(name, json.dumps(out[name], indent=1), flush=True)
    print(f"wrote {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
