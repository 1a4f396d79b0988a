"""Deterministic samplers on one trained EDM denoiser: diffflow's solvers beside k-diffusion's own code.

Trains the ``edm`` preset on ring5 once (10,000 steps, one thread; reused from the bench output folder when
``samplers_edm_ring5.pt`` is there), then for each solver and NFE budget in {5, 10, 20, 50} runs the most steps
that fit the budget on the preset's Karras grid (rho = 7, sigma in [0.02, 20], then 0), the same grid and the same
initial noise for every sampler:

* accuracy: the RMS distance (per particle, 2,000 particles) to a converged solve from the same noise (Heun at
  1,000 steps on the same grid family);
* W2 / floor over ``--seeds`` sampling seeds (``diffflow_core.metrics.w2_ratio``, 2,000 samples each);
* for each sampler that has a k-diffusion twin, the largest absolute difference between the two solutions.

k-diffusion is loaded here only, never by diffflow: its released wheel is fetched with ``pip download --no-deps``
into the bench output folder and its ``sampling.py`` imported by path. Its package ``__init__`` and ``utils.py``
pull torchvision, PIL and safetensors, so ``k_diffusion.utils`` is a module holding only the one function
``sampling.py`` uses (``append_dims``, executed from the wheel's own ``utils.py`` source), and ``torchdiffeq`` /
``torchsde`` are placeholders that fail if called (only its likelihood and SDE noise use them). Usage::

    .venv/bin/python benchmarks/samplers.py [--seeds 10] [--out samplers.json]

Writes the JSON and ``samplers.png`` (error vs NFE) to the bench output folder and prints the table.
"""
from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import subprocess
import sys
import time
import types
import zipfile
from pathlib import Path

import torch

from diffflow_core import build, metrics, registry
from diffflow_core.commands.bench import output_dir
from diffflow_core.model import Model

WHEEL = "k-diffusion==0.1.1.post1"
BUDGETS = (5, 10, 20, 50)
N = 2000
#: ours: (registry name, parameters) -> the k-diffusion twin computing the same update, if any
OURS = {"euler": ("euler", {}, "euler"), "heun": ("heun", {}, "heun"), "lms": ("lms", {"order": 4}, "lms"),
        "dpm-2": ("dpm-2", {}, "dpm_2"), "dpmpp-2m": ("dpmpp-2m", {}, "dpmpp_2m"), "unipc": ("unipc", {}, None)}
#: k-diffusion's samplers and their NFE for ``steps`` steps into sigma = 0
KDIFF = {"euler": lambda s: s, "heun": lambda s: 2 * s - 1, "dpm_2": lambda s: 2 * s - 1, "lms": lambda s: s,
         "dpmpp_2m": lambda s: s}


def load_k_diffusion(cache: Path) -> types.ModuleType:
    """``k_diffusion/sampling.py`` from the released wheel, imported by path with light stand-ins for its heavy
    imports (see the module docstring)."""
    cache.mkdir(parents=True, exist_ok=True)
    wheels = sorted(cache.glob("k_diffusion-*.whl"))
    if not wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", WHEEL, "-d", str(cache)], check=True)
        wheels = sorted(cache.glob("k_diffusion-*.whl"))
    with zipfile.ZipFile(wheels[-1]) as wheel:
        sampling = wheel.read("k_diffusion/sampling.py").decode()
        utils_source = wheel.read("k_diffusion/utils.py").decode()
    package = types.ModuleType("k_diffusion")
    package.__path__ = []
    utils = types.ModuleType("k_diffusion.utils")
    tree = ast.parse(utils_source)
    wanted = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "append_dims"]
    exec(compile(ast.Module(body=wanted, type_ignores=[]), "k_diffusion/utils.py", "exec"), utils.__dict__)
    package.utils = utils

    def unavailable(*args, **kwargs):
        raise RuntimeError("not loaded for this benchmark")

    stubs = {"torchdiffeq": types.ModuleType("torchdiffeq"), "torchsde": types.ModuleType("torchsde")}
    stubs["torchdiffeq"].odeint = unavailable
    stubs["torchsde"].BrownianTree = unavailable
    for name, module in {**stubs, "k_diffusion": package, "k_diffusion.utils": utils}.items():
        sys.modules.setdefault(name, module)
    path = cache / "sampling.py"
    path.write_text(sampling)
    spec = importlib.util.spec_from_file_location("k_diffusion.sampling", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["k_diffusion.sampling"] = module
    spec.loader.exec_module(module)
    return module


def trained_model(path: Path) -> Model:
    if path.exists():
        return Model.load(str(path))
    model = build(preset="edm", data="ring5", train={"progress": False})
    model.fit()
    model.save(str(path))
    return model


def rms(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).pow(2).sum(1).mean().sqrt())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10, help="sampling seeds of W2/floor (default %(default)s)")
    parser.add_argument("--reference-steps", type=int, default=1000)
    parser.add_argument("--budgets", type=int, nargs="+", default=list(BUDGETS), help="NFE budgets")
    parser.add_argument("--out", type=Path, default=Path("samplers.json"),
                        help="JSON file, relative to the bench output folder (default: %(default)s)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    folder = output_dir()
    kdiff = load_k_diffusion(folder / "k-diffusion")
    model = trained_model(folder / "samplers_edm_ring5.pt")
    flow = model.flow
    denoiser = lambda x, sigma: flow.denoise(x, sigma)  # noqa: E731  k-diffusion's model(x, sigma) -> denoised

    def noise(seed: int) -> torch.Tensor:
        return flow.prior(N, generator=torch.Generator().manual_seed(seed))

    def grid(steps: int) -> torch.Tensor:
        return flow.time_grid(steps).float()

    tick = time.perf_counter()
    with torch.no_grad():
        reference = registry("solvers").create("heun").solve(flow, noise(0), grid(args.reference_steps)).x
    print(f"reference: heun at {args.reference_steps} steps ({time.perf_counter() - tick:.0f} s)", flush=True)

    def ours(name: str, params: dict, budget: int):
        solver = registry("solvers").create(name, **params)
        steps = solver.steps_for(budget, flow)
        if steps < 1:
            return None
        with torch.no_grad():
            runs = [solver.solve(flow, noise(seed), grid(steps)) for seed in range(args.seeds)]
        return steps, runs[0].nfe, [r.x for r in runs]

    def theirs(name: str, budget: int):
        steps = max(s for s in range(1, budget + 1) if KDIFF[name](s) <= budget)
        sampler = getattr(kdiff, f"sample_{name}")
        with torch.no_grad():
            xs = [sampler(denoiser, noise(seed), grid(steps), disable=True) for seed in range(args.seeds)]
        return steps, KDIFF[name](steps), xs

    rows, outputs = [], {}
    for budget in args.budgets:
        runs = {f"diffflow {label}": ours(name, params, budget) for label, (name, params, _) in OURS.items()}
        runs.update({f"k-diffusion {name}": theirs(name, budget) for name in KDIFF})
        for label, run in runs.items():
            if run is None:
                continue
            steps, nfe, xs = run
            outputs[(label, budget)] = xs[0]
            w2 = metrics.w2_ratio(xs, model.data, n=N, seeds=args.seeds)
            row = {"sampler": label, "budget": budget, "steps": steps, "nfe": nfe,
                   "rms_to_converged": round(rms(xs[0], reference), 5), "w2_over_floor": round(w2.ratio, 4),
                   "w2_mean": round(w2.w2_mean, 5), "w2_std": round(w2.w2_std, 5), "floor": round(w2.floor_mean, 5)}
            rows.append(row)
            print(f"NFE<={budget:3d} {label:22s} steps {steps:3d} nfe {nfe:3d}  rms {row['rms_to_converged']:.5f}  "
                  f"W2/floor {row['w2_over_floor']:.3f}", flush=True)
    twins = []
    for label, (_, _, twin) in OURS.items():
        for budget in args.budgets:
            mine, other = outputs.get((f"diffflow {label}", budget)), outputs.get((f"k-diffusion {twin}", budget))
            if twin and mine is not None and other is not None:
                twins.append({"ours": label, "k_diffusion": twin, "budget": budget,
                              "max_abs_difference": float((mine - other).abs().max())})
    verdict = {}
    for budget in [b for b in args.budgets if b <= 20]:
        best = {side: min((r for r in rows if r["budget"] == budget and r["sampler"].startswith(side)),
                          key=lambda r: r["rms_to_converged"]) for side in ("diffflow", "k-diffusion")}
        verdict[budget] = {side: {"sampler": r["sampler"], "rms": r["rms_to_converged"]} for side, r in best.items()}
        verdict[budget]["ours_at_least_as_accurate"] = best["diffflow"]["rms_to_converged"] <= \
            best["k-diffusion"]["rms_to_converged"]
    result = {"wheel": WHEEL, "grid": "Karras rho = 7, sigma in [0.02, 20], then 0 (the edm preset's)",
              "n": N, "seeds": args.seeds, "reference": f"heun, {args.reference_steps} steps",
              "torch": torch.__version__, "rows": rows, "twins": twins, "verdict": verdict}
    out = folder / args.out
    out.write_text(json.dumps(result, indent=2))
    print("\n| sampler | NFE budget | steps | NFE | RMS to converged | W2 / floor |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['sampler']} | {r['budget']} | {r['steps']} | {r['nfe']} | {r['rms_to_converged']:.4f} | "
              f"{r['w2_over_floor']:.3f} |")
    for t in twins:
        print(f"ours {t['ours']} vs k-diffusion {t['k_diffusion']} at NFE<={t['budget']}: max |diff| "
              f"{t['max_abs_difference']:.3g}")
    print(json.dumps(verdict, indent=2))
    plot(rows, folder / "samplers.png")
    print(f"wrote {out} and {folder / 'samplers.png'}")


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    twin_of = {twin: label for label, (_, _, twin) in OURS.items() if twin}
    colours = {label: f"C{i}" for i, label in enumerate(OURS)}
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for label in dict.fromkeys(r["sampler"] for r in rows):
        mine = [r for r in rows if r["sampler"] == label]
        side, name = label.split(" ", 1)
        ours = side == "diffflow"
        ax.plot([r["nfe"] for r in mine], [r["rms_to_converged"] for r in mine], marker="o" if ours else "x",
                linestyle="-" if ours else "--", color=colours[name if ours else twin_of[name]], label=label,
                markersize=6 if ours else 9)
    ax.set(xscale="log", yscale="log", xlabel="NFE", ylabel="RMS distance to the converged ODE solve",
           title="EDM on ring5, Karras grid (rho 7, sigma 0.02..20)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
