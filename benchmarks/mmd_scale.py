"""One MMD-flow step at scale: bounded memory at N = 100,000 and speed against a naive O(N^2) step.

Each measurement runs in a fresh subprocess so its peak RSS (``resource.getrusage``) is its own. The naive
baseline materialises the full ``N x N`` (and ``N x M``) kernel-gradient matrices; the chunked step is
``diffflow_mmd.flow.MMDFlow.drift`` (memory O((N + M) * chunk)). Both run in the same invocation, on one thread.
Writes ``mmd_scale.json`` to the bench output folder (``diffflow bench --out DIR``; default
``~/.cache/diffflow/bench``).

    .venv/bin/python benchmarks/mmd_scale.py
"""
from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

GIB = 1024 ** 3


def child(mode: str, n: int) -> dict:
    import torch

    from diffflow_core.data import load_dataset
    from diffflow_kl.kernels import Gaussian
    from diffflow_mmd.flow import MMDFlow

    torch.set_num_threads(1)
    flow = MMDFlow(load_dataset("ring5"), kernel="gaussian", bandwidth=[0.5, 2.0], points=2000)
    x = torch.randn(n, 2, generator=torch.Generator().manual_seed(0))
    t = torch.tensor(0.0)
    if mode == "naive":
        kernel = Gaussian([0.5, 2.0])

        def step() -> torch.Tensor:
            out = []
            for centres in (flow.targets, x):
                psi = kernel.psi(torch.cdist(x, centres) ** 2)  # the full N x M matrix
                out.append((psi.sum(1, keepdim=True) * x - psi @ centres) / centres.shape[0])
            return out[0] - out[1]
    else:
        def step() -> torch.Tensor:
            return flow.evaluate_drift(x, t)

    start = time.perf_counter()
    v = step()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    return {"mode": mode, "n": n, "seconds": seconds, "peak_rss_bytes": peak, "peak_rss_gib": peak / GIB,
            "velocity_norm": float(v.norm())}


def run(mode: str, n: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", mode, str(n)], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    from diffflow_core.commands.bench import output_dir

    naive = run("naive", 10_000)
    chunked_small = run("chunked", 10_000)
    chunked_big = run("chunked", 100_000)
    same = abs(naive["velocity_norm"] - chunked_small["velocity_norm"]) <= 1e-3 * naive["velocity_norm"]
    result = {"naive_10k": naive, "chunked_10k": chunked_small, "chunked_100k": chunked_big,
              "speedup_chunked_vs_naive_10k": naive["seconds"] / chunked_small["seconds"],
              "memory_ratio_naive_vs_chunked_10k": naive["peak_rss_bytes"] / chunked_small["peak_rss_bytes"],
              "chunked_100k_under_2gib": chunked_big["peak_rss_gib"] < 2.0, "same_velocity_10k": same,
              "command": "python benchmarks/mmd_scale.py"}
    path = output_dir() / "mmd_scale.json"
    path.write_text(json.dumps(result, indent=2))
    for key in ("naive_10k", "chunked_10k", "chunked_100k"):
        r = result[key]
        print(f"{key:13s} N={r['n']:>7d}  {r['seconds']:8.3f} s/step  peak RSS {r['peak_rss_gib']:.3f} GiB")
    print(f"time ratio naive/chunked at N=10,000: {result['speedup_chunked_vs_naive_10k']:.2f}x; "
          f"peak-RSS ratio {result['memory_ratio_naive_vs_chunked_10k']:.2f}x; "
          f"N=100,000 under 2 GiB: {result['chunked_100k_under_2gib']}")
    print(f"wrote {path}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], int(sys.argv[3]))))
    else:
        main()
