"""Evaluation of a sampled model: the quality figures, pictures and sample files a run folder holds.

``diffflow run`` and ``diffflow eval`` call :func:`evaluate`; :func:`draw` writes the pictures and
:func:`write_samples` the samples in the data's own space.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = ["evaluate", "draw", "draw_samples", "write_samples"]


def evaluate(model, steps: int, n: int, seed: int, progress: bool = True,
             **options: Any) -> tuple[dict[str, Any], Any]:
    """Sample ``n`` points (seed ``seed``, the flow's sampling ``options`` such as ``label``) and measure them;
    returns (metrics, first Samples). Each phase has a labelled progress bar and its wall time in the metrics.

    Every dataset: its name, file, split sizes and how the test split was made (``data``), and the
    dimension-free distances (sliced W2, MMD^2, energy) to held-out data, each beside its data-vs-data floor
    (``distances``; over 3 sampling seeds for vector data, one for images); 2-D data: exact W2 over the
    same 3 seeds against its floor; digits: Fréchet distance with its floor (n >= 300) and the class shares;
    data with a closed-form density: test NLL through the PF-ODE next to the exact NLL (SPEC §1.7), only
    where the model's samples have that likelihood (free particles under a non-interacting flow with a
    PF-ODE: not a generator, a Stein kernel, a KDE or an MMD flow).
    """
    def sample_seed(s: int, record: bool = False):
        label = f"sample (seed {s})" if progress else None
        return model.sample(n, steps, seed=s, record=record, progress=label, **options)

    start = time.perf_counter()
    samples = sample_seed(seed, record=True)
    metrics: dict[str, Any] = {"n": n, "solver_steps": steps, "nfe": samples.nfe,
                               "sample_seconds": round(time.perf_counter() - start, 3), **options}
    data, shape = model.data, tuple(samples.x.shape[1:])
    metrics["data"] = data.describe()
    start = time.perf_counter()
    more = [sample_seed(seed + i).x for i in (1, 2)] if len(shape) == 1 else []  # images: one draw is costly
    metrics.update(_distances(data, samples.x, more))
    metrics["distances_seconds"] = round(time.perf_counter() - start, 3)
    if getattr(data, "name", "") == "digits":
        from diffflow_core.metrics.digits import class_histogram, frechet_digits

        if n >= 300:
            fd = frechet_digits(samples.x)
            metrics["frechet"] = {"fd": fd.fd, "floor": fd.floor, "ratio": fd.ratio}
        metrics["class_shares"] = list(class_histogram(samples.x).shares)
    method = model.flow.likelihood if model.smoother.integrates_flow else None
    if data.has_density and math.prod(shape) <= 16 and method is not None:
        start = time.perf_counter()
        settings = model.config.sample
        test = data.test[:settings.likelihood_points].to(model.device)
        lp = model.log_prob(test, steps=settings.likelihood_steps, progress=progress)
        metrics["test_nll"] = {"model": lp.mean_nll, "exact": float(-data.log_prob(test).mean()),
                               "method": method, "nfe": lp.nfe, "points": test.shape[0],
                               "seconds": round(time.perf_counter() - start, 3)}
    return metrics, samples


#: Sample size of the distances to the data (MMD and energy cost O(n^2); W2 uses up to 2,000 points).
DISTANCE_N = 1000


def _distances(data, x, more: list) -> dict[str, Any]:
    """``distances`` (and ``w2`` for 2-D data) of the draws ``[x, *more]`` at the largest size the data's
    references allow; nothing when fewer than two reference rows exist."""
    from diffflow_core.metrics import data_distances, w2_ratio
    from diffflow_core.metrics._common import reference_rows

    draws, size = [x, *more], min(x.shape[0], reference_rows(data))
    if size < 2:
        return {}
    w2 = {"w2": w2_ratio(draws, data, n=min(size, 2000), seeds=len(draws)).as_dict()} if x.shape[1:] == (2,) else {}
    return {**w2, "distances": data_distances(draws, data, n=min(size, DISTANCE_N)).as_dict()}


def draw(model, samples, out: Path) -> list[str]:
    """The pictures of a run folder: ``samples.png`` (:func:`draw_samples`) and, when the samples carry their
    sampling path (one-step generators have none) and are 2-D points or images, ``trajectory.png`` (particle
    snapshots, or images along the path); returns the names written."""
    from diffflow_core import plots

    draw_samples(model, samples, out / "samples.png")
    x, traj = samples.x, samples.trajectory
    images = _images(x)
    if traj is None or (x.shape[1:] != (2,) and images is None):
        return ["samples.png"]
    traj = traj.cpu()
    if x.shape[1:] == (2,):
        plots.snapshots(traj[:, :1000], out / "trajectory.png", times=samples.times.cpu(), data=model.data)
    else:
        picks = sorted({round(i * (traj.shape[0] - 1) / 7) for i in range(8)})
        path = traj[picks, :8].transpose(0, 1).reshape(-1, *images.shape[1:])
        plots.image_grid(path, out / "trajectory.png", nrow=len(picks), value_range=_value_range(model, x))
    return ["samples.png", "trajectory.png"]


def draw_samples(model, samples, path: Path) -> str:
    """One picture of the samples at ``path``, whatever their shape: a scatter over the data for 2-D points,
    an image grid for images (``[C, H, W]`` with C = 1 or 3, or ``[H, W]``), and otherwise pairwise
    projections of the first four coordinates over the data; returns the path written."""
    from diffflow_core import plots

    x = samples.x.detach().cpu()
    images = _images(x)
    if x.shape[1:] == (2,):
        plots.scatter(x, path, data=model.data, title=f"{samples.nfe} NFE")
    elif images is not None:
        plots.image_grid(images[:64], path, value_range=_value_range(model, x))
    else:
        plots.pairs(x, path, data=model.data, title=f"{samples.nfe} NFE")
    return str(path)


def _images(x: Tensor) -> Tensor | None:
    """``x`` as images ``[N, C, H, W]`` when its rows are pictures (``[1 or 3, H, W]`` or ``[H, W]``), else None."""
    if x.ndim == 4 and x.shape[1] in (1, 3):
        return x
    return x[:, None] if x.ndim == 3 else None


def _value_range(model, x: Tensor) -> tuple[float, float]:
    """The grey scale of image grids: the data's range in model space (the samples' without data)."""
    if model.data is None:
        return float(x.min()), float(x.max())
    rows = model.data.train_rows  # at most a few thousand rows: image sets convert rows only when indexed
    reference = rows[torch.arange(min(rows.shape[0], 4096))]
    return float(reference.min()), float(reference.max())


def write_samples(model, samples, path: Path) -> None:
    """Samples in the data's own space as float32 ``[N, *shape]``."""
    import numpy as np

    x = model.data.to_data_space(samples.x.detach().cpu()) if model.data is not None else samples.x.cpu()
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, x.float().numpy())
