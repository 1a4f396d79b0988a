"""Sample quality of the score family (issue #4 acceptance): W2 / floor on ring5, PF-ODE test NLL, digits FD.

Trains each requested preset from scratch (seeded, one CPU thread), then measures

* ring5: ``W2(samples, data) / floor`` at 2,000 samples over 3 sampling seeds for several samplers and NFE,
  next to the exact-score (analytic denoiser) EDM Heun reference; the test NLL through the PF-ODE against the
  exact NLL of ring5's density;
* digits: the Fréchet distance in the digits classifier's features against the train-vs-test floor and the
  share of each predicted class.

Everything goes to the bench output folder (``diffflow bench --out DIR``; default ``~/.cache/diffflow/bench``):
results are merged into ``score_quality.json`` (one entry per model, so models can be run separately), the table
is rewritten to ``score.md`` (``--doc docs/benchmarks/score.md`` to update the published page) and trained
checkpoints under 5 MB are kept as ``score_{ring5,digits}_edm.pt`` (the digits Score GAN configs load the digits
one from ``benchmarks/checkpoints/``).

    .venv/bin/python benchmarks/score_quality.py --models edm,vp,ve,ncsn,digits
    .venv/bin/python benchmarks/score_quality.py --models edm --train-steps 300 --quick   # smoke run
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from diffflow_core.commands.bench import output_dir

CHECKPOINT_LIMIT = 5 * 2 ** 20

#: Samplers evaluated per ring5 model: (label, solver spec, steps, flow mode).
SAMPLERS = {
    "edm": [("heun", "heun", 18, "ode"), ("heun", "heun", 9, "ode"),
            ("edm-churn S_churn=5", {"name": "edm-churn", "s_churn": 5.0}, 18, "ode")],
    "vp": [("heun", "heun", 50, "ode")],
    "ve": [("heun", "heun", 50, "ode")],
    "ncsn": [("annealed-langevin 10x10", None, 10, "ode")],
}
#: Acceptance thresholds on the W2 ratio: (model, max NFE) -> bound.
TARGETS = {("edm", 35): 1.05, ("edm", 17): 1.15, ("vp", 100): 1.15, ("ve", 100): 1.15}


def make_solver(spec: Any):
    from diffflow_core.plugins import registry

    if spec is None or not isinstance(spec, (str, dict)):
        return spec
    if isinstance(spec, str):
        return registry("solvers").create(spec)
    params = dict(spec)
    return registry("solvers").create(params.pop("name"), **params)


def w2_of(model, solver: Any, steps: int, mode: str, seeds: int, n: int) -> dict[str, Any]:
    """W2 ratio of ``model`` sampled with ``solver`` at ``steps`` in flow ``mode``; also the NFE spent."""
    from diffflow_core.plugins import registry

    flow, saved = model.flow, model.flow.mode
    flow.mode = mode
    nfe = []

    def draw(count: int, seed: int) -> torch.Tensor:
        samples = model.sample(count, steps, seed=seed, solver=make_solver(solver))
        nfe.append(samples.nfe)
        return samples.x

    try:
        result = registry("metrics").get("w2")(draw, model.data, n=n, seeds=seeds)
    finally:
        flow.mode = saved
    return {**result.as_dict(), "nfe": max(nfe), "steps": steps}


def exact_reference(seeds: int, n: int) -> dict[str, Any]:
    """EDM Heun at 35 NFE with ring5's analytic denoiser: the score the learned model is compared with."""
    from diffflow_core.data import load_dataset
    from diffflow_core.model import Model
    from diffflow_score.testing import exact_flow

    data = load_dataset("ring5")
    flow = exact_flow(data.denoise, "edm", (2,), sigma_min=0.002, sigma_max=80.0, rho=7.0)
    model = Model(flow, solver=make_solver("heun"), data=data)
    return w2_of(model, "heun", 18, "ode", seeds, n)


def test_nll(model, n_test: int, steps: int) -> dict[str, Any]:
    """Mean test NLL through the PF-ODE (exact divergence) against the exact NLL of the ring5 density."""
    from diffflow_core.likelihood import log_prob

    x = model.data.test[:n_test]
    start = time.perf_counter()
    result = log_prob(model, x, steps=steps)
    exact = float(-model.data.log_prob(x.double()).mean())
    return {"nll": result.mean_nll, "exact_nll": exact, "gap": result.mean_nll - exact, "n": n_test,
            "steps": steps, "nfe": result.nfe, "seconds": time.perf_counter() - start}


def train(preset: str, data: str, steps: int | None, seed: int, lr: float | None = None, init: Path | None = None,
          network: dict[str, Any] | None = None, batch_size: int | None = None):
    """Build ``preset`` on ``data`` and train it; ``init`` continues from a checkpoint's weights (a second phase);
    ``network`` and ``batch_size`` override the preset's."""
    from diffflow_core import build
    from diffflow_core.checkpoint import read_checkpoint

    overrides: dict[str, Any] = {"progress": False, "seed": seed}
    if steps is not None:
        overrides["steps"] = steps
    if lr is not None:
        overrides["lr"] = lr
    if batch_size is not None:
        overrides["batch_size"] = batch_size
    flow = {} if network is None else {"network": network}
    model = build(preset=preset, data=data, train=overrides, flow=flow)
    if init is not None:
        model.load_state_dict(read_checkpoint(init)["state_dict"])
    history = model.fit()
    losses = history.series("loss/model")
    info = {"preset": preset, "data": data, "train_steps": model.config.train.steps,
            "batch_size": model.config.train.batch_size, "lr": model.config.train.lr, "network": _network_name(model) if network is None else json.dumps(network),
            "train_seconds": history.seconds, "loss_first": losses[0], "loss_last": losses[-1],
            "init": None if init is None else str(init)}
    return model, info


def _network_name(model) -> str:
    return type(model.flow.net).__name__


def keep_checkpoint(model, name: str, folder: Path) -> str | None:
    """Save ``model`` as ``folder/score_<name>.pt`` (next to the results file) unless it exceeds 5 MB."""
    path = folder / f"score_{name}.pt"
    model.save(str(path))
    if path.stat().st_size > CHECKPOINT_LIMIT:
        path.unlink()
        return None
    return str(path)


def run_ring5(name: str, args) -> dict[str, Any]:
    preset = name
    model, info = train(preset, "ring5", args.train_steps, args.seed, args.lr, args.init)
    if name == "edm":  # the pretrained data score other families (Score GAN) reuse
        info["checkpoint"] = keep_checkpoint(model, "ring5_edm", args.results.parent)
    rows = []
    for label, solver, steps, mode in SAMPLERS[name]:
        row = w2_of(model, solver, steps, mode, args.seeds, args.n)
        rows.append({"sampler": label, "mode": mode, **row})
        print(f"[{name}] {label:32s} steps {steps:3d} NFE {row['nfe']:3d}  W2/floor {row['ratio']:.3f}", flush=True)
    info["w2"] = rows
    if name != "ncsn" and not args.quick:
        info["nll"] = test_nll(model, args.nll_points, args.nll_steps)
        print(f"[{name}] test NLL {info['nll']['nll']:.4f} vs exact {info['nll']['exact_nll']:.4f}", flush=True)
    return info


def run_digits(args) -> dict[str, Any]:
    from diffflow_core.plugins import registry

    model, info = train("edm", "digits", args.digits_steps, args.seed, args.lr, args.init, network=args.digits_network,
                        batch_size=args.digits_batch)
    info["checkpoint"] = keep_checkpoint(model, "digits_edm", args.results.parent)
    samples = model.sample(args.digits_samples, 18, seed=0).x
    fd = registry("metrics").get("frechet-digits")(samples)
    hist = registry("metrics").get("class-histogram")(samples)
    info.update({"sampler": "heun", "steps": 18, "nfe": 35, "samples": args.digits_samples, "fd": fd.fd,
                 "fd_std": fd.fd_std, "fd_floor": fd.floor, "fd_ratio": fd.ratio, "class_shares": list(hist.shares),
                 "min_share": hist.min_share, "max_share": hist.max_share})
    print(f"[digits] FD {fd.fd:.3f} floor {fd.floor:.3f} ratio {fd.ratio:.2f}; shares "
          f"{hist.min_share:.3f}..{hist.max_share:.3f}", flush=True)
    return info


def draw_figure(path: Path) -> None:
    """Particles of EDM's PF-ODE with ring5's exact denoiser at several noise levels, and their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from diffflow_core.data import load_dataset
    from diffflow_score.testing import exact_flow

    data = load_dataset("ring5")
    flow = exact_flow(data.denoise, "edm", (2,), sigma_min=0.002, sigma_max=80.0, rho=7.0)
    solver = make_solver("heun")
    times = flow.time_grid(18)
    x0 = flow.prior(600, torch.Generator().manual_seed(0))
    path_ = solver.solve(flow, x0, times, record=True).trajectory
    shown = [5, 10, 14, 18]
    fig, axes = plt.subplots(1, len(shown) + 1, figsize=(3.2 * (len(shown) + 1), 3.2))
    for ax, i in zip(axes, shown):
        ax.scatter(path_[i, :, 0], path_[i, :, 1], s=2, alpha=0.6)
        ax.set_title(f"sigma = {float(times[i]):.3g}")
    for k in range(60):
        axes[-1].plot(path_[8:, k, 0], path_[8:, k, 1], lw=0.6, alpha=0.7)
    axes[-1].set_title("paths from sigma = 3.6")
    for ax in axes:
        ax.set_xlim(-5, 5)
        ax.set_ylim(-5, 5)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("EDM probability-flow ODE on ring5 (exact denoiser, Heun, 35 NFE)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def verdicts(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each acceptance item with the best measured value under its NFE budget."""
    out = []
    for (name, budget), bound in TARGETS.items():
        rows = [r for r in results.get(name, {}).get("w2", []) if r["nfe"] <= budget]
        best = min((r["ratio"] for r in rows), default=None)
        out.append({"item": f"{name} W2/floor at <= {budget} NFE", "bound": bound, "value": best,
                    "met": best is not None and best <= bound})
    for name in ("edm", "vp", "ve"):
        nll = results.get(name, {}).get("nll")
        if nll:
            out.append({"item": f"{name} |test NLL - exact|", "bound": 0.05, "value": abs(nll["gap"]),
                        "met": abs(nll["gap"]) <= 0.05})
    digits = results.get("digits")
    if digits:
        out.append({"item": "digits FD / floor", "bound": 2.0, "value": digits["fd_ratio"],
                    "met": digits["fd_ratio"] <= 2.0})
        ok = 0.05 <= digits["min_share"] and digits["max_share"] <= 0.15
        out.append({"item": "digits class shares in [5%, 15%]", "bound": "[0.05, 0.15]",
                    "value": f"{digits['min_share']:.3f}..{digits['max_share']:.3f}", "met": ok})
    return out


def write_doc(results: dict[str, Any], doc: Path) -> None:
    lines = ["# Score family: sample quality", "",
             "Generated by `benchmarks/score_quality.py` (numbers from `score_quality.json` in the "
             "[bench output folder](../benchmarks.md#where-benchmark-outputs-go)).",
             "W2 / floor: exact W2 of 2,000 samples to fresh ring5 draws divided by the data-vs-data floor at the "
             "same size, each averaged over 3 sampling seeds (a perfect sampler scores about 0.9).", "",
             "## Acceptance", "", "| item | bound | measured | met |", "|---|---|---|---|"]
    for v in results.get("verdicts", []):
        value = f"{v['value']:.3f}" if isinstance(v["value"], float) else str(v["value"])
        lines.append(f"| {v['item']} | {v['bound']} | {value} | {'yes' if v['met'] else 'no'} |")
    lines += ["", "## ring5: W2 / floor", "", "| model | sampler | mode | steps | NFE | W2 / floor | W2 | floor |",
              "|---|---|---|---|---|---|---|---|"]
    ref = results.get("exact_reference")
    if ref:
        lines.append(f"| exact score (analytic denoiser) | heun | ode | {ref['steps']} | {ref['nfe']} | "
                     f"{ref['ratio']:.3f} | {ref['w2_mean']:.4f} | {ref['floor_mean']:.4f} |")
    for name in ("edm", "vp", "ve", "ncsn"):
        for r in results.get(name, {}).get("w2", []):
            lines.append(f"| {name} | {r['sampler']} | {r['mode']} | {r['steps']} | {r['nfe']} | {r['ratio']:.3f} | "
                         f"{r['w2_mean']:.4f} | {r['floor_mean']:.4f} |")
    lines += ["", "## ring5: test NLL through the probability-flow ODE", "",
              "| model | test points | solver steps (NFE) | NLL (nats) | exact NLL | gap |", "|---|---|---|---|---|---|"]
    for name in ("edm", "vp", "ve"):
        nll = results.get(name, {}).get("nll")
        if nll:
            lines.append(f"| {name} | {nll['n']} | {nll['steps']} ({nll['nfe']}) | {nll['nll']:.4f} | "
                         f"{nll['exact_nll']:.4f} | {nll['gap']:+.4f} |")
    digits = results.get("digits")
    if digits:
        shares = ", ".join(f"{s:.3f}" for s in digits["class_shares"])
        lines += ["", "## digits (8x8, EDM preset)", "",
                  f"Network `{digits['network']}`; {digits['samples']} samples, Heun {digits['steps']} steps "
                  f"({digits['nfe']} NFE). Fréchet distance {digits['fd']:.3f} +/- {digits['fd_std']:.3f} against a "
                  f"train-vs-test floor of {digits['fd_floor']:.3f} (ratio {digits['fd_ratio']:.2f}). "
                  f"Class shares 0-9: {shares}."]
    lines += ["", "## Training", "", "Seconds are wall time on the shared 2-core machine (one thread, heavily loaded "
              "by parallel jobs), so they overstate the cost on an idle core.", "",
              "| model | data | network | iterations | batch | lr | seconds | loss first -> last |",
              "|---|---|---|---|---|---|---|---|"]
    for name in ("edm", "vp", "ve", "ncsn", "digits"):
        info = results.get(name)
        if info:
            lines.append(f"| {name} | {info['data']} | {info['network']} | {info['train_steps']} | "
                         f"{info['batch_size']} | {info['lr']:g} | {info['train_seconds']:.0f} | "
                         f"{info['loss_first']:.3f} -> {info['loss_last']:.3f} |")
    if results.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {note}" for note in results["notes"]]
    lines += ["", "## Commands", "", "```", *results.get("commands", []), "```", ""]
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="edm,vp,ve,ncsn,digits")
    parser.add_argument("--train-steps", type=int, default=None, help="override the presets' iterations (ring5)")
    parser.add_argument("--lr", type=float, default=None, help="override the presets' learning rate")
    parser.add_argument("--note", action="append", default=[], help="a line for the doc's notes")
    parser.add_argument("--init", type=Path, default=None, help="continue training from this checkpoint's weights")
    parser.add_argument("--digits-steps", type=int, default=None)
    parser.add_argument("--digits-samples", type=int, default=3000)
    parser.add_argument("--digits-network", type=json.loads, default=None,
                        help='network spec as JSON, e.g. \'{"name": "mlp", "hidden": 512, "depth": 3}\' (default: the preset\'s U-Net)')
    parser.add_argument("--digits-batch", type=int, default=None)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--nll-points", type=int, default=300)
    parser.add_argument("--nll-steps", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="skip the NLL (smoke runs)")
    parser.add_argument("--merge", type=Path, nargs="*", default=[],
                        help="result files of separate runs (e.g. one model each, run in parallel) to merge in; "
                             "relative ones in the bench output folder")
    parser.add_argument("--figure", type=Path, default=None, help="only draw the PF-ODE figure to this PNG")
    parser.add_argument("--no-reference", action="store_true", help="skip the exact-score reference row")
    parser.add_argument("--results", type=Path, default=Path("score_quality.json"),
                        help="JSON file to merge results into, in the bench output folder (default: %(default)s)")
    parser.add_argument("--doc", type=Path, default=None,
                        help="markdown table to rewrite (default: score.md in the bench output folder)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.figure is not None:
        draw_figure(args.figure)
        return
    folder = output_dir()
    args.results = folder / args.results  # the trained checkpoints are kept next to it
    results_path, doc_path = args.results, args.doc or folder / "score.md"
    results_path.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    command = "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/score_quality.py " + " ".join(sys.argv[1:])
    for other in args.merge:
        part = json.loads((folder / other).read_text())
        results.update({k: v for k, v in part.items() if k not in ("commands", "verdicts")})
        results.setdefault("commands", []).extend(c for c in part.get("commands", []) if c not in results["commands"])
    results.setdefault("notes", []).extend(n for n in args.note if n not in results["notes"])
    results.setdefault("commands", [])
    if command not in results["commands"] and not args.merge:
        results["commands"].append(command)
    if "exact_reference" not in results and not args.no_reference:
        results["exact_reference"] = exact_reference(args.seeds, args.n)
        print(f"[exact] heun 35 NFE W2/floor {results['exact_reference']['ratio']:.3f}", flush=True)
    for name in ([] if args.merge else args.models.split(",")):
        results[name] = run_digits(args) if name == "digits" else run_ring5(name, args)
        results["verdicts"] = verdicts(results)
        results_path.write_text(json.dumps(results, indent=2))
        write_doc(results, doc_path)
    results["verdicts"] = verdicts(results)
    results_path.write_text(json.dumps(results, indent=2))
    write_doc(results, doc_path)
    print(json.dumps(results["verdicts"], indent=2))


if __name__ == "__main__":
    main()
