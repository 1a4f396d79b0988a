"""Adaptive and stochastic solvers on closed forms: orders, tolerance sweeps, the likelihood check, marginals.

Everything here has an exact answer, so nothing is trained (float64, one thread, about a minute):

* fixed-step orders of ``dopri5``/``bosh3`` (``adaptive=False``): fitted log-log slope of the endpoint error on
  the decay ``dx/dt = -x`` over [0, 1] and the rotation ``dx/dt = A x`` over [0, 20];
* tolerance sweeps on the rotation (rtol = atol): endpoint error and NFE of ``dopri5``, ``bosh3`` and, when
  ``torchdiffeq`` is importable, the contrib ``torchdiffeq`` adapter (dopri5);
* the likelihood: ``log_prob`` of the score plugin's EDM flow with the exact denoiser of ``N(0, 0.7^2 I)`` in 2-D
  against the model's exact Gaussian law, for the adaptive solvers at several tolerances and the fixed default;
* stochastic samplers: the final variance over the data variance of 200,000 particles sampled from the EDM prior
  with the exact denoiser of ``N(0, 0.5^2)`` on the rho-grid (sampling std of the ratio: 0.0032);
* against k-diffusion: ``euler_ancestral``, ``dpmpp_2m_sde`` and ``dpmpp_3m_sde`` from its released wheel (loaded
  by ``benchmarks/samplers.py``'s ``load_k_diffusion``, never by diffflow), fed the same prior and the same noise
  draws through their ``noise_sampler``: the largest absolute difference from ours on the EDM grid.

Usage::

    .venv/bin/python benchmarks/adaptive_stochastic.py [--out adaptive_stochastic.json]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import time
from pathlib import Path

import torch

from diffflow_core import registry
from diffflow_core.commands.bench import output_dir
from diffflow_core.likelihood import log_prob
from diffflow_core.testing import decay_problem, fitted_order, rotation_problem
from diffflow_score.testing import exact_flow, gaussian_denoiser

F64 = torch.float64


def orders() -> list[dict]:
    rows = []
    for name in ("dopri5", "bosh3"):
        solver = registry("solvers").create(name, adaptive=False)
        rows.append({"solver": name, "decay": fitted_order(solver, decay_problem(), (4, 8, 16, 32)),
                     "rotation": fitted_order(solver, rotation_problem(), (40, 80, 160, 320))})
    return rows


def sweeps() -> list[dict]:
    problem, rows = rotation_problem(), []
    names = [("dopri5", {}), ("bosh3", {})]
    if "torchdiffeq" in registry("solvers"):
        names.append(("torchdiffeq", {"method": "dopri5"}))
    for name, params in names:
        for tol in (1e-4, 1e-5, 1e-6, 1e-7, 1e-8):
            solution = registry("solvers").create(name, rtol=tol, atol=tol, **params).solve(
                problem.flow, problem.x0, problem.grid(1))
            rows.append({"solver": name, "rtol": tol, "error": float((solution.x - problem.exact).abs().max()),
                         "nfe": solution.nfe})
    return rows


def likelihood() -> list[dict]:
    s, sigma_min, sigma_max = 0.7, 0.002, 80.0
    flow = exact_flow(gaussian_denoiser(s), "edm", event_shape=(2,)).double()
    x = torch.randn(256, 2, generator=torch.Generator().manual_seed(0), dtype=F64) * s * 1.5
    var = sigma_max ** 2 * (s ** 2 + sigma_min ** 2) / (s ** 2 + sigma_max ** 2)
    exact = -0.5 * (x.pow(2) / var + math.log(2 * math.pi * var)).sum(1)
    rows = []
    for solver, tol in (("dopri5", 1e-3), ("dopri5", 1e-5), ("dopri5", 1e-7), ("bosh3", 1e-5), ("heun", None)):
        start = time.perf_counter()
        result = log_prob(flow, x, solver=solver, **({"rtol": tol, "atol": tol} if tol else {}))
        rows.append({"solver": solver, "rtol": tol, "max_error_nats": float((result.nats - exact).abs().max()),
                     "nfe": result.nfe, "seconds": time.perf_counter() - start})
    return rows


def marginals() -> list[dict]:
    s, n = 0.5, 200_000
    flow = exact_flow(gaussian_denoiser(s), "edm", event_shape=(1,)).double()
    rows = []
    for name in ("euler-ancestral", "heun-ancestral", "dpmpp-2m-sde", "dpmpp-3m-sde"):
        for steps in (25, 50, 100, 200):
            generator = torch.Generator().manual_seed(0)
            x0 = flow.prior(n, generator=generator).double()
            solution = registry("solvers").create(name).solve(flow, x0, flow.time_grid(steps), generator=generator)
            rows.append({"solver": name, "steps": steps, "nfe": solution.nfe,
                         "var_ratio": float(solution.x.var()) / s ** 2, "mean": float(solution.x.mean())})
    return rows


def k_diffusion(folder: Path) -> list[dict]:
    spec = importlib.util.spec_from_file_location("sampler_benchmark", Path(__file__).with_name("samplers.py"))
    sampler_benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sampler_benchmark)
    kdiff = sampler_benchmark.load_k_diffusion(folder / "k-diffusion")
    s = 0.5
    flow = exact_flow(gaussian_denoiser(s), "edm", event_shape=(3,)).double()
    denoiser = gaussian_denoiser(s)
    rows = []
    for name, theirs in (("euler-ancestral", kdiff.sample_euler_ancestral), ("dpmpp-2m-sde", kdiff.sample_dpmpp_2m_sde),
                         ("dpmpp-3m-sde", kdiff.sample_dpmpp_3m_sde)):
        for steps in (5, 12, 40):
            outputs = []
            for use_ours in (True, False):
                generator = torch.Generator().manual_seed(3)
                x0 = flow.prior(1000, generator=generator).double()
                if use_ours:
                    outputs.append(registry("solvers").create(name).solve(flow, x0, flow.time_grid(steps),
                                                                          generator=generator).x)
                else:
                    def noise(sigma, sigma_next, generator=generator, like=x0):
                        return torch.randn(like.shape, generator=generator, dtype=like.dtype)

                    outputs.append(theirs(lambda x, sigma, **_: denoiser(x, sigma), x0, flow.time_grid(steps),
                                          disable=True, noise_sampler=noise))
            rows.append({"solver": name, "steps": steps, "max_abs_diff": float((outputs[0] - outputs[1]).abs().max())})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="adaptive_stochastic.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = {"orders": orders(), "sweeps": sweeps(), "likelihood": likelihood(), "marginals": marginals(),
               "k_diffusion": k_diffusion(output_dir())}
    for section, rows in results.items():
        print(f"## {section}")
        for row in rows:
            print("  " + "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    path = output_dir() / args.out
    path.write_text(json.dumps(results, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
