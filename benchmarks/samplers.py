"""Deterministic samplers on trained ring5 models: diffflow's solvers beside k-diffusion's own code (EDM), and every
applicable registered solver on the other families with an ODE drift (``rectified-flow``, ``ndm`` in ODE mode).

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

``--families`` (default: all of ``edm``, ``rectified-flow``, ``ndm``) picks the families. Each other family is
trained once on ring5 at its preset's settings (``ndm``: 2,000 steps instead of 5,000, to keep it to ~3 min on one
core) and cached as ``samplers_<preset>_ring5.pt``; it is scored exactly like EDM (same N, seeds, budgets and
reference, on the flow's default grid ``flow.time_grid``) with every registered deterministic solver whose
``check(flow)`` passes and whose NFE is known in advance (``dopri5``/``bosh3`` in fixed-step mode,
``adaptive=False``); the refused ones are listed with the reason. Results go to ``samplers_<family>.json`` and
``samplers_<family>.png``.
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
from diffflow_core.errors import ConfigError
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
#: family -> (preset, training steps overriding the preset's, or None)
FAMILIES = {"edm": ("edm", None), "rectified-flow": ("rectified-flow", None), "ndm": ("ndm", 2000)}
#: solver parameters on the other families (the embedded pairs in fixed-step mode, so their NFE is known)
PARAMS = {"lms": {"order": 4}, "dopri5": {"adaptive": False}, "bosh3": {"adaptive": False}}


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


def trained_model(folder: Path, family: str) -> Model:
    preset, steps = FAMILIES[family]
    path = folder / f"samplers_{preset}_ring5.pt"
    if path.exists():
        return Model.load(str(path))
    model = build(preset=preset, data="ring5", train={"progress": False, **({"steps": steps} if steps else {})})
    model.fit()
    model.save(str(path))
    return model


def rms(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).pow(2).sum(1).mean().sqrt())


class Bench:
    """One trained model under test: the same noise (``N`` particles per seed) and grid family for every sampler,
    the converged reference solve from seed 0, and the shared scoring of a sampler's runs."""

    def __init__(self, model: Model, args: argparse.Namespace) -> None:
        self.model, self.flow, self.args, self.rows, self.outputs = model, model.flow, args, [], {}
        tick = time.perf_counter()
        with torch.no_grad():
            self.reference = registry("solvers").create("heun").solve(self.flow, self.noise(0),
                                                                      self.grid(args.reference_steps)).x
        print(f"reference: heun at {args.reference_steps} steps ({time.perf_counter() - tick:.0f} s)", flush=True)

    def noise(self, seed: int) -> torch.Tensor:
        return self.flow.prior(N, generator=torch.Generator().manual_seed(seed))

    def grid(self, steps: int) -> torch.Tensor:
        return self.flow.time_grid(steps).float()

    def ours(self, name: str, params: dict, budget: int):
        """``(steps, nfe, samples per seed)`` of a registered solver at the most steps that fit ``budget``."""
        solver = registry("solvers").create(name, **params)
        steps = solver.steps_for(budget, self.flow)
        if steps < 1:
            return None
        with torch.no_grad():
            runs = [solver.solve(self.flow, self.noise(seed), self.grid(steps)) for seed in range(self.args.seeds)]
        return steps, runs[0].nfe, [r.x for r in runs]

    def score(self, budget: int, runs: dict) -> None:
        """One row per run: RMS of seed 0 to the reference, W2 / floor over the seeds."""
        for label, run in runs.items():
            if run is None:
                continue
            steps, nfe, xs = run
            self.outputs[(label, budget)] = xs[0]
            w2 = metrics.w2_ratio(xs, self.model.data, n=N, seeds=self.args.seeds)
            row = {"sampler": label, "budget": budget, "steps": steps, "nfe": nfe,
                   "rms_to_converged": round(rms(xs[0], self.reference), 5), "w2_over_floor": round(w2.ratio, 4),
                   "w2_mean": round(w2.w2_mean, 5), "w2_std": round(w2.w2_std, 5), "floor": round(w2.floor_mean, 5)}
            self.rows.append(row)
            print(f"NFE<={budget:3d} {label:22s} steps {steps:3d} nfe {nfe:3d}  rms {row['rms_to_converged']:.5f}  "
                  f"W2/floor {row['w2_over_floor']:.3f}", flush=True)

    def write(self, result: dict, out: Path, title: str, colour_of=lambda label: label) -> None:
        result = {"n": N, "seeds": self.args.seeds, "reference": f"heun, {self.args.reference_steps} steps",
                  "torch": torch.__version__, **result, "rows": self.rows}
        out.write_text(json.dumps(result, indent=2))
        print("\n| sampler | NFE budget | steps | NFE | RMS to converged | W2 / floor |\n|---|---|---|---|---|---|")
        for r in self.rows:
            print(f"| {r['sampler']} | {r['budget']} | {r['steps']} | {r['nfe']} | {r['rms_to_converged']:.4f} | "
                  f"{r['w2_over_floor']:.3f} |")
        plot(self.rows, out.with_suffix(".png"), title, colour_of)
        print(f"wrote {out} and {out.with_suffix('.png')}")


def edm(bench: Bench, kdiff: types.ModuleType, out: Path) -> None:
    """diffflow's score-flow solvers and their k-diffusion twins on the EDM flow's Karras grid."""
    flow, args = bench.flow, bench.args
    denoiser = lambda x, sigma: flow.denoise(x, sigma)  # noqa: E731  k-diffusion's model(x, sigma) -> denoised

    def theirs(name: str, budget: int):
        steps = max(s for s in range(1, budget + 1) if KDIFF[name](s) <= budget)
        sampler = getattr(kdiff, f"sample_{name}")
        with torch.no_grad():
            xs = [sampler(denoiser, bench.noise(seed), bench.grid(steps), disable=True) for seed in range(args.seeds)]
        return steps, KDIFF[name](steps), xs

    for budget in args.budgets:
        runs = {f"diffflow {label}": bench.ours(name, params, budget) for label, (name, params, _) in OURS.items()}
        runs.update({f"k-diffusion {name}": theirs(name, budget) for name in KDIFF})
        bench.score(budget, runs)
    rows, outputs = bench.rows, bench.outputs
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
    twin_of = {twin: label for label, (_, _, twin) in OURS.items() if twin}
    bench.write({"wheel": WHEEL, "grid": "Karras rho = 7, sigma in [0.02, 20], then 0 (the edm preset's)",
                 "twins": twins, "verdict": verdict}, out, "EDM on ring5, Karras grid (rho 7, sigma 0.02..20)",
                lambda label: twin_of.get(label.split(" ", 1)[1], label.split(" ", 1)[1]))
    for t in twins:
        print(f"ours {t['ours']} vs k-diffusion {t['k_diffusion']} at NFE<={t['budget']}: max |diff| "
              f"{t['max_abs_difference']:.3g}")
    print(json.dumps(verdict, indent=2))


def applicable(flow) -> tuple[list[str], dict[str, str]]:
    """The registered solvers that integrate ``flow``'s ODE at a budget known in advance, and why each other is
    refused (its ``check`` message, stochastic, or adaptive only)."""
    names, refused = [], {}
    for name in registry("solvers").names():
        solver = registry("solvers").create(name, **PARAMS.get(name, {}))
        try:
            solver.check(flow)
            solver.steps_for(1, flow)
        except ConfigError as error:
            refused[name] = str(error)
            continue
        try:  # a one-step probe: a flow can have the attributes ``requires`` names but not the API behind them
            with torch.no_grad():
                solver.solve(flow, flow.prior(4, generator=torch.Generator().manual_seed(0)), flow.time_grid(2))
        except Exception as error:  # noqa: BLE001  reported, not raised: the table lists it as refused
            refused[name] = f"passes check() but fails on a solve: {type(error).__name__}: {error}"
            continue
        if solver.stochastic and getattr(solver, "eta", 1.0) != 0:
            refused[name] = "stochastic sampler: draws noise at every step, so it does not solve the ODE"
        else:
            names.append(name)
    return names, refused


def family(bench: Bench, name: str, out: Path) -> None:
    """Every applicable registered solver on the family's default grid."""
    solvers, refused = applicable(bench.flow)
    for reason in refused.items():
        print("refused: %s: %s" % reason, flush=True)
    for budget in bench.args.budgets:
        bench.score(budget, {solver: bench.ours(solver, PARAMS.get(solver, {}), budget) for solver in solvers})
    preset, steps = FAMILIES[name]
    bench.write({"preset": preset, "training_steps": steps or bench.model.config.train.steps,
                 "grid": f"flow.time_grid(steps): {bench.grid(4).tolist()} at 4 steps", "params": PARAMS,
                 "refused": refused}, out, f"{name} on ring5, its default grid")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10, help="sampling seeds of W2/floor (default %(default)s)")
    parser.add_argument("--reference-steps", type=int, default=1000)
    parser.add_argument("--budgets", type=int, nargs="+", default=list(BUDGETS), help="NFE budgets")
    parser.add_argument("--families", nargs="+", choices=list(FAMILIES), default=list(FAMILIES),
                        help="model families (default: all)")
    parser.add_argument("--out", type=Path, default=Path("samplers.json"),
                        help="EDM's JSON file, relative to the bench output folder (default: %(default)s); "
                             "the other families write samplers_<family>.json beside it")
    args = parser.parse_args()
    torch.set_num_threads(1)
    folder = output_dir()
    for name in args.families:
        bench = Bench(trained_model(folder, name), args)
        if name == "edm":
            edm(bench, load_k_diffusion(folder / "k-diffusion"), folder / args.out)
        else:
            family(bench, name, (folder / args.out).with_name(f"samplers_{name}.json"))


def plot(rows: list[dict], path: Path, title: str, colour_of) -> None:
    """RMS to the converged solve against NFE; one colour per solver (``colour_of(label)``), k-diffusion's dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(dict.fromkeys(r["sampler"] for r in rows))
    colours = {key: f"C{i}" for i, key in enumerate(dict.fromkeys(colour_of(label) for label in labels))}
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for label in labels:
        mine = [r for r in rows if r["sampler"] == label]
        ours = not label.startswith("k-diffusion")
        ax.plot([r["nfe"] for r in mine], [r["rms_to_converged"] for r in mine], marker="o" if ours else "x",
                linestyle="-" if ours else "--", color=colours[colour_of(label)], label=label,
                markersize=6 if ours else 9)
    ax.set(xscale="log", yscale="log", xlabel="NFE", ylabel="RMS distance to the converged ODE solve", title=title)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
