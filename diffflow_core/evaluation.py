"""Evaluation of a sampled model: the quality figures, pictures and sample files a run folder holds.

``diffflow run`` and ``diffflow eval`` call :func:`evaluate`; :func:`draw` writes the pictures and
:func:`write_samples` the samples in the data's own space.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

__all__ = ["evaluate", "draw", "write_samples"]


def evaluate(model, steps: int, n: int, seed: int) -> tuple[dict[str, Any], Any]:
    """Sample ``n`` points (seed ``seed``) and measure them; returns (metrics, first Samples).

    2-D data: W2 over 3 sampling seeds against the data-vs-data floor; digits: Fréchet distance with its
    floor (n >= 300) and the class shares; data with a closed-form density: test NLL through the PF-ODE
    next to the exact NLL (SPEC §1.7).
    """
    start = time.perf_counter()
    samples = model.sample(n, steps, seed=seed, record=True)
    metrics: dict[str, Any] = {"n": n, "solver_steps": steps, "nfe": samples.nfe,
                               "sample_seconds": round(time.perf_counter() - start, 3)}
    data, shape = model.data, tuple(samples.x.shape[1:])
    if shape == (2,):
        from diffflow_core.metrics import w2_ratio

        seeds = [seed + i for i in range(3)]
        draws = [samples.x] + [model.sample(n, steps, seed=s).x for s in seeds[1:]]
        metrics["w2"] = w2_ratio(draws, data, n=min(n, 2000), seeds=3).as_dict()
    if getattr(data, "name", "") == "digits":
        from diffflow_core.metrics.digits import class_histogram, frechet_digits

        if n >= 300:
            fd = frechet_digits(samples.x)
            metrics["frechet"] = {"fd": fd.fd, "floor": fd.floor, "ratio": fd.ratio}
        metrics["class_shares"] = list(class_histogram(samples.x).shares)
    if data.has_density and math.prod(shape) <= 16 and _has_pf_ode(model.flow):
        test = data.test[:256].to(model.device)
        lp = model.log_prob(test, steps=128)
        metrics["test_nll"] = {"model": lp.mean_nll, "exact": float(-data.log_prob(test).mean()),
                               "nfe": lp.nfe, "points": test.shape[0]}
    return metrics, samples


def _has_pf_ode(flow) -> bool:
    from diffflow_core.interfaces import Flow

    return not flow.is_stochastic or type(flow).ode_drift is not Flow.ode_drift


def draw(model, samples, out: Path) -> list[str]:
    """``samples.png`` and ``trajectory.png``: scatter and snapshots for 2-D, image grids for images."""
    from diffflow_core import plots

    x = samples.x.detach().cpu()
    if x.shape[1:] == (2,):
        plots.scatter(x, out / "samples.png", data=model.data, title=f"{samples.nfe} NFE")
        if samples.trajectory is not None:
            plots.snapshots(samples.trajectory[:, :1000].cpu(), out / "trajectory.png", times=samples.times.cpu(),
                            data=model.data)
        return ["samples.png", "trajectory.png"]
    if x.ndim == 4 and x.shape[1] == 1:
        plots.image_grid(x[:64], out / "samples.png")
        if samples.trajectory is not None:
            traj = samples.trajectory.cpu()
            picks = sorted({round(i * (traj.shape[0] - 1) / 7) for i in range(8)})
            plots.image_grid(traj[picks, :8].transpose(0, 1).reshape(-1, *x.shape[1:]), out / "trajectory.png",
                             nrow=len(picks))
        return ["samples.png", "trajectory.png"]
    return []


def write_samples(model, samples, path: Path) -> None:
    """Samples in the data's own space as float32 ``[N, *shape]``."""
    import numpy as np

    x = model.data.to_data_space(samples.x.detach().cpu()) if model.data is not None else samples.x.cpu()
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, x.float().numpy())
