"""Evaluation of a sampled model: the quality figures, pictures and sample files a run folder holds.

``diffflow run`` and ``diffflow eval`` call :func:`evaluate`; :func:`draw` writes the pictures,
:func:`draw_snapshot` one picture of samples (also during training) and :func:`write_samples` the samples in
the data's own space.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = ["evaluate", "draw", "draw_snapshot", "draw_samples", "draw_loss", "draw_interpolation",
           "write_samples"]


def evaluate(model, steps: int, n: int, seed: int, progress: bool = True,
             **options: Any) -> tuple[dict[str, Any], Any]:
    """Sample ``n`` points (seed ``seed``, the flow's sampling ``options`` such as ``label``) and measure them;
    returns (metrics, first Samples). Each phase has a labelled progress bar and its wall time in the metrics.

    Every dataset: its name, file, split sizes and how the test split was made (``data``), and the
    dimension-free distances (sliced W2, MMD^2, energy) to held-out data, each beside its data-vs-data floor
    (``distances``; over 3 sampling seeds for vector data, one for images); 2-D data: exact W2 over the
    same 3 seeds against its floor; digits: Fréchet distance with its floor (n >= 300) and the class shares;
    MNIST-like images (one channel, 28 to 32 pixels square, by shape: ``mnist``, ``mnist:`` files, padded or
    not): ``image_quality``, the Fréchet distance, precision and recall in the MNIST classifier's features beside
    their floors, and its class shares, at as many samples as the test split allows; data with a closed-form
    density: test NLL through the PF-ODE next to the exact NLL (SPEC §1.7), only
    where the model's samples have that likelihood (free particles under a non-interacting flow with a
    PF-ODE: not a generator, a Stein kernel, a KDE or an MMD flow).
    """
    from diffflow_core.metrics import image_quality, is_mnist_like
    from diffflow_core.metrics._common import reference_rows

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
    elif is_mnist_like(shape) and (size := min(n, reference_rows(data))) > 3:  # precision/recall: k = 3 neighbours
        start = time.perf_counter()
        quality = image_quality(samples.x, data, n=size).as_dict()
        metrics["image_quality"] = {**quality, "seconds": round(time.perf_counter() - start, 3)}
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


def draw(model, samples, out: Path, log: Path | None = None) -> list[str]:
    """The pictures of a run folder; returns the names written.

    * ``samples.png`` (:func:`draw_snapshot`);
    * ``trajectory.png`` when the samples carry their sampling path and are 2-D points (particle snapshots) or
      images (a grid: one row per sample, one column per time, as GPM's Figure 1);
    * ``interpolation.png`` for a one-step generator, which has no path (:func:`draw_interpolation`);
    * ``loss.png``, the training losses against the step, from the run's ``log`` (``metrics.jsonl``) when it
      holds any (:func:`draw_loss`).
    """
    from diffflow_core import plots

    draw_snapshot(model, samples, out / "samples.png")
    written = ["samples.png"]
    x, traj = samples.x, samples.trajectory
    images = _images(x)
    if traj is not None and x.shape[1:] == (2,):
        plots.snapshots(traj[:, :1000].cpu(), out / "trajectory.png", times=samples.times.cpu(), data=model.data)
        written.append("trajectory.png")
    elif traj is not None and images is not None:
        picks = sorted({round(i * (traj.shape[0] - 1) / 7) for i in range(8)})
        path = traj[picks, :8].cpu().transpose(0, 1).reshape(-1, *images.shape[1:])
        labels = [f"t={float(samples.times[k]):.3g}" for k in picks] if samples.times is not None else None
        plots.image_grid(path, out / "trajectory.png", nrow=len(picks), value_range=_value_range(model, x),
                         column_labels=labels)
        written.append("trajectory.png")
    if draw_interpolation(model, out / "interpolation.png") is not None:
        written.append("interpolation.png")
    if log is not None and draw_loss(log, out / "loss.png") is not None:
        written.append("loss.png")
    return written


def draw_snapshot(model, samples, path: Path, title: str | None = None) -> str:
    """One picture of samples at ``path``, whatever their shape: a scatter over the data for 2-D points, an
    image grid of the first 64 for images (``[C, H, W]`` with C = 1 or 3, or ``[H, W]``, over the data's grey
    range), and otherwise pairwise projections of the first four coordinates over the data; returns the path.

    ``samples`` is a ``Samples`` (titled with its NFE) or a tensor of samples in model space, e.g. the trainer's
    periodic evaluation draw (titled ``title``, such as ``"step 500"``); a ``model`` without ``data`` draws the
    samples alone.
    """
    from diffflow_core import plots

    if title is None and hasattr(samples, "nfe"):
        title = f"{samples.nfe} NFE"
    x = getattr(samples, "x", samples).detach().cpu()
    images, data = _images(x), getattr(model, "data", None)
    if x.shape[1:] == (2,):
        plots.scatter(x, path, data=data, title=title)
    elif images is not None:
        plots.image_grid(images[:64], path, value_range=_value_range(model, x), title=title)
    else:
        plots.pairs(x, path, data=data, title=title)
    return str(path)


#: ``diffflow sample``'s picture: :func:`draw_snapshot` of a ``Samples``.
draw_samples = draw_snapshot


def draw_loss(log: Path, path: Path) -> str | None:
    """The training losses (``loss/<player>`` of each row of the JSON-lines ``log``) against the step, on a log
    scale when all are positive and span more than a decade; None (nothing written) when the log is missing or
    holds no loss. Rows that are not JSON objects (a line cut by an interrupted write) are skipped."""
    from diffflow_core import plots

    if not Path(log).is_file():
        return None
    rows = []
    for line in Path(log).read_text(errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and "step" in row:
            rows.append(row)
    keys = sorted({k for row in rows for k in row if k.startswith("loss/")})
    rows = [row for row in rows if keys and all(isinstance(row.get(k), (int, float)) for k in keys)]
    if not rows:
        return None
    series = {k.removeprefix("loss/"): [float(row[k]) for row in rows] for k in keys}
    values = [v for losses in series.values() for v in losses]
    logy = min(values) > 0 and max(values) > 10 * min(values)
    plots.curve([row["step"] for row in rows], series, path, ylabel="loss", logy=logy, title="training loss")
    return str(path)


def draw_interpolation(model, path: Path, pairs: int = 8, steps: int = 10, seed: int = 0) -> str | None:
    """For a generator smoother (one-step samples ``g(z)``): ``g`` along spherical interpolations (slerp) between
    ``pairs`` pairs of latents drawn with ``seed``, at ``steps`` points each. Images: a grid with one row per pair;
    2-D points: the paths over the data. None (nothing written) for other smoothers or shapes."""
    from diffflow_core import plots

    smoother = model.smoother
    if not hasattr(smoother, "sample_latent"):
        return None
    generator = torch.Generator().manual_seed(seed)
    z = smoother.sample_latent(2 * pairs, generator)
    t = torch.linspace(0, 1, steps, dtype=z.dtype, device=z.device)
    with torch.no_grad():
        x = smoother(slerp(z[:pairs], z[pairs:], t).reshape(pairs * steps, -1)).detach().cpu()
    images = _images(x)
    if x.shape[1:] == (2,):
        plots.paths(x.reshape(pairs, steps, 2), path, data=model.data, title="latent interpolation")
    elif images is not None:
        plots.image_grid(images, path, nrow=steps, value_range=_value_range(model, x), title="latent interpolation")
    else:
        return None
    return str(path)


def slerp(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """Spherical interpolation ``[P, K, D]`` from rows ``a`` to rows ``b`` (``[P, D]``) at the ``K`` fractions
    ``t``: Gaussian latents keep their typical norm on the way (a straight line would pass near the origin,
    where the generator never saw a latent). Parallel pairs fall back to the straight line."""
    cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)
    omega = cos.clamp(-1, 1).acos()[:, None, None]
    t = t[None, :, None]
    sin = omega.sin()
    parallel = sin.abs() < 1e-6
    safe = torch.where(parallel, torch.ones_like(sin), sin)
    wa = torch.where(parallel, 1 - t, torch.sin((1 - t) * omega) / safe)
    wb = torch.where(parallel, t, torch.sin(t * omega) / safe)
    return wa * a[:, None] + wb * b[:, None]


def _images(x: Tensor) -> Tensor | None:
    """``x`` as images ``[N, C, H, W]`` when its rows are pictures (``[1 or 3, H, W]`` or ``[H, W]``), else None."""
    if x.ndim == 4 and x.shape[1] in (1, 3):
        return x
    return x[:, None] if x.ndim == 3 else None


def _value_range(model, x: Tensor) -> tuple[float, float]:
    """The grey scale of image grids: the data's range in model space (the samples' without data)."""
    if getattr(model, "data", None) is None:
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
