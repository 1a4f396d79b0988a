"""Pictures of particle flows, one call each (matplotlib, Agg backend, imported lazily).

* :func:`snapshots` - a row of panels of the particles at chosen times with the flow's drift arrows and an
  optional background (a density, a discriminator), as GPM's Figures 8-12;
* :func:`animate` - an animated GIF of a trajectory (Pillow writer);
* :func:`scatter` - samples over the data; :func:`pairs` - pairwise projections of the first coordinates of
  data in any dimension; :func:`image_grid` - a grid of images (optionally labelled columns, e.g. sampling
  times); :func:`paths` - 2-D paths over the data (latent interpolations); :func:`curve` - a metric against
  training step (several named series, optional reference line such as a W2 floor).

Every function writes ``path`` (parent folders are created), closes its figure and returns the path.
Trajectories are ``[T, N, 2]`` tensors (``Samples.trajectory``) or lists of ``[N, 2]`` tensors.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from diffflow_core import validation as check
from diffflow_core.errors import ConfigError

__all__ = ["snapshots", "animate", "scatter", "paths", "pairs", "image_grid", "curve"]

_DATA_STYLE = {"s": 2, "c": "0.7", "alpha": 0.4, "linewidths": 0}
_PARTICLE_STYLE = {"s": 3, "c": "tab:blue", "alpha": 0.7, "linewidths": 0}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _points(x, what: str) -> Tensor:
    x = torch.as_tensor(getattr(x, "x", x)).detach().cpu().double()
    if x.ndim != 2 or x.shape[1] != 2:
        raise ConfigError(f"{what}: expected 2-D points [N, 2], got shape {tuple(x.shape)}")
    return x


def _trajectory(trajectory) -> Tensor:
    if isinstance(trajectory, (list, tuple)):
        trajectory = torch.stack([torch.as_tensor(x) for x in trajectory])
    trajectory = torch.as_tensor(trajectory).detach().cpu().double()
    if trajectory.ndim != 3 or trajectory.shape[2] != 2 or trajectory.shape[0] < 1:
        raise ConfigError(f"trajectory: expected [T, N, 2] with T >= 1, got shape {tuple(trajectory.shape)}")
    return trajectory


def _limits(*clouds: Tensor | None, limits=None) -> tuple[tuple[float, float], tuple[float, float]]:
    """Square axis limits holding the 0.5%-99.5% quantiles of every cloud, with a margin.

    Trajectories are framed by their *final* particles and the data, where the structure is; a wide prior
    (EDM starts at sigma = 80) would otherwise shrink the result to a dot. Particles outside are clipped.
    """
    if limits is not None:
        low, high = limits
        return (low, high), (low, high)
    stacked = torch.cat([c for c in clouds if c is not None])
    low = torch.quantile(stacked, 0.005, dim=0).min().item()
    high = torch.quantile(stacked, 0.995, dim=0).max().item()
    margin = 0.1 * (high - low) + 1e-6
    return (low - margin, high + margin), (low - margin, high + margin)


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def _draw_background(ax, background: Callable[[Tensor], Tensor], xlim, ylim, resolution: int = 120) -> None:
    xs = torch.linspace(*xlim, resolution)
    ys = torch.linspace(*ylim, resolution)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).reshape(-1, 2)
    with torch.no_grad():
        values = torch.as_tensor(background(grid)).detach().cpu().reshape(resolution, resolution).numpy()
    ax.imshow(values, extent=(*xlim, *ylim), origin="lower", cmap="Greens", alpha=0.6, aspect="auto")


def _drift(flow, x: Tensor, t: float) -> Tensor:
    """The flow's drift at the panel's particles (the whole batch: interacting flows need it); a Flow is evaluated
    through ``evaluate_drift`` (a drift that takes a sampling context gets an empty one)."""
    param = next(iter(flow.parameters()), None) if hasattr(flow, "parameters") else None
    dtype = param.dtype if param is not None else torch.float32
    device = param.device if param is not None else "cpu"
    x = x.to(device, dtype)
    drift = getattr(flow, "evaluate_drift", flow.drift)
    return drift(x, torch.tensor(t, dtype=dtype, device=device)).detach().cpu().double()


def snapshots(trajectory, path, times: Sequence[float] | Tensor | None = None, flow=None, data=None,
              background: Callable[[Tensor], Tensor] | None = None, panels: int = 5, arrows: int = 100,
              limits: tuple[float, float] | None = None, title: str | None = None) -> Path:
    """A row of ``panels`` snapshots of a 2-D particle ``trajectory`` at evenly spaced recorded steps.

    ``times`` (one per recorded step, e.g. ``Samples.times``) label the panels and, with ``flow``, give the
    time at which ``flow.drift`` is drawn as arrows on ``arrows`` particles. ``data`` (points or a Dataset)
    is drawn faintly; ``background`` maps grid points ``[M, 2]`` to values ``[M]`` (e.g. a density
    ``lambda g: dataset.log_prob(g).exp()`` or a discriminator) and is shown as a shaded map. Arrows are
    drawn on particles inside the frame, scaled per panel (the longest spans 12% of it); the title gives its speed.
    """
    traj = _trajectory(trajectory)
    steps = traj.shape[0]
    if times is not None and len(times) != steps:
        raise ConfigError(f"times: expected {steps} values (one per recorded step), got {len(times)}")
    check.integer("panels", panels, 1)
    reference = None if data is None else _points(getattr(data, "train", data)[:5000], "data")
    xlim, ylim = _limits(traj[-1], reference, limits=limits)
    chosen = np.unique(np.linspace(0, steps - 1, min(panels, steps)).round().astype(int))
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(chosen), figsize=(3 * len(chosen), 3.1), squeeze=False)
    for ax, k in zip(axes[0], chosen):
        if background is not None:
            _draw_background(ax, background, xlim, ylim)
        if reference is not None:
            ax.scatter(reference[:, 0], reference[:, 1], **_DATA_STYLE)
        x = traj[k]
        ax.scatter(x[:, 0], x[:, 1], **_PARTICLE_STYLE)
        t = float(times[k]) if times is not None else float(k)
        label = f"t = {t:.3g}" if times is not None else f"step {k}"
        if flow is not None and arrows > 0:
            v = _drift(flow, x, t)
            shown = torch.nonzero((x[:, 0] > xlim[0]) & (x[:, 0] < xlim[1]) & (x[:, 1] > ylim[0])
                                  & (x[:, 1] < ylim[1])).flatten()  # arrows only on particles in the frame
            idx = shown[torch.linspace(0, len(shown) - 1, min(arrows, len(shown))).long()] if len(shown) else shown
            longest = v[idx].norm(dim=1).max().item() if len(idx) else 0.0
            if longest > 0:
                scale = longest / (0.12 * (xlim[1] - xlim[0]))  # the longest arrow spans 12% of the panel
                ax.quiver(x[idx, 0], x[idx, 1], v[idx, 0], v[idx, 1], color="tab:red", angles="xy",
                          scale_units="xy", scale=scale, width=0.005)
            label += f", max|v| = {longest:.2g}"
        ax.set_title(label, fontsize=9)
        ax.set_xlim(*xlim)
        ax.set_ylim(*ylim)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def animate(trajectory, path, data=None, fps: int = 12, limits: tuple[float, float] | None = None,
            times: Sequence[float] | Tensor | None = None) -> Path:
    """An animated GIF of a 2-D particle ``trajectory`` (one frame per recorded step) over optional ``data``."""
    from matplotlib.animation import FuncAnimation, PillowWriter

    traj = _trajectory(trajectory)
    reference = None if data is None else _points(getattr(data, "train", data)[:5000], "data")
    xlim, ylim = _limits(traj[-1], reference, limits=limits)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4, 4))
    if reference is not None:
        ax.scatter(reference[:, 0], reference[:, 1], **_DATA_STYLE)
    cloud = ax.scatter(traj[0, :, 0], traj[0, :, 1], **_PARTICLE_STYLE)
    label = ax.set_title("")
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_aspect("equal")

    def frame(k: int):
        cloud.set_offsets(traj[k].numpy())
        label.set_text(f"t = {float(times[k]):.3g}" if times is not None else f"step {k}")
        return cloud, label

    movie = FuncAnimation(fig, frame, frames=traj.shape[0], blit=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    movie.save(path, writer=PillowWriter(fps=fps))
    plt.close(fig)
    return path


def scatter(samples, path, data=None, limits: tuple[float, float] | None = None, title: str | None = None) -> Path:
    """2-D samples (blue) over the data (grey)."""
    x = _points(samples, "samples")
    reference = None if data is None else _points(getattr(data, "train", data)[:5000], "data")
    xlim, ylim = _limits(x, reference, limits=limits)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4, 4))
    if reference is not None:
        ax.scatter(reference[:, 0], reference[:, 1], label="data", **_DATA_STYLE)
    ax.scatter(x[:, 0], x[:, 1], label="samples", **_PARTICLE_STYLE)
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_aspect("equal")
    ax.legend(loc="upper right", markerscale=4, fontsize=8)
    if title:
        ax.set_title(title)
    return _save(fig, path)


def paths(trajectories, path, data=None, title: str | None = None) -> Path:
    """2-D paths ``[P, K, 2]`` (P paths of K points, e.g. a generator along latent interpolations) as lines over
    the data (grey), each starting at a dot and ending at a cross."""
    lines = torch.as_tensor(trajectories).detach().cpu().double()
    if lines.ndim != 3 or lines.shape[2] != 2 or lines.shape[1] < 2:
        raise ConfigError(f"paths: expected [P, K, 2] with K >= 2 points per path, got shape {tuple(lines.shape)}")
    reference = None if data is None else _points(getattr(data, "train", data)[:5000], "data")
    xlim, ylim = _limits(lines.reshape(-1, 2), reference)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4, 4))
    if reference is not None:
        ax.scatter(reference[:, 0], reference[:, 1], **_DATA_STYLE)
    for line in lines:
        drawn = ax.plot(line[:, 0], line[:, 1], marker=".", markersize=4, linewidth=1)
        ax.plot(line[0, 0], line[0, 1], "o", line[-1, 0], line[-1, 1], "x", color=drawn[0].get_color())
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_aspect("equal")
    if title:
        ax.set_title(title)
    return _save(fig, path)


def image_grid(images, path, nrow: int | None = None, value_range: tuple[float, float] = (-1.0, 1.0),
               title: str | None = None, column_labels: Sequence[str] | None = None) -> Path:
    """A grid of images ``[N, C, H, W]`` (C = 1 grey or 3 colour) or ``[N, H, W]``, shown over ``value_range``,
    ``nrow`` images a row; ``column_labels`` (one per column, e.g. the sampling times) are written above it."""
    images = torch.as_tensor(getattr(images, "x", images)).detach().cpu().float()
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4 or images.shape[1] not in (1, 3) or images.shape[0] < 1:
        raise ConfigError(f"images: expected [N, 1 or 3, H, W] or [N, H, W] images, got {tuple(images.shape)}")
    low, high = value_range
    images = ((images - low) / (high - low)).clamp(0, 1).permute(0, 2, 3, 1)  # [N, H, W, C] in [0, 1]
    n, h, w, c = images.shape
    nrow = nrow or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / nrow))
    if column_labels is not None and len(column_labels) != min(nrow, n):
        raise ConfigError(f"column_labels: expected {min(nrow, n)} labels (one per column), got {len(column_labels)}")
    canvas = torch.zeros((rows * (h + 1) + 1, nrow * (w + 1) + 1, c))
    for k in range(n):
        r, col = divmod(k, nrow)
        canvas[1 + r * (h + 1):1 + r * (h + 1) + h, 1 + col * (w + 1):1 + col * (w + 1) + w] = images[k]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(0.5 * nrow + 0.5, 0.5 * rows + 0.5))
    picture = canvas[..., 0] if c == 1 else canvas
    ax.imshow(picture.numpy(), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    for col, label in enumerate(column_labels or ()):
        ax.text(1 + col * (w + 1) + (w - 1) / 2, -1, label, ha="center", va="bottom", fontsize=6)
    ax.axis("off")
    if title:
        ax.set_title(title)
    return _save(fig, path)


def _rows(x, what: str) -> Tensor:
    x = torch.as_tensor(getattr(x, "x", x)).detach().cpu().double()
    if x.ndim < 2 or x.shape[0] < 1:
        raise ConfigError(f"{what}: expected an array [N, ...] with N >= 1, got shape {tuple(x.shape)}")
    return x.reshape(x.shape[0], -1)


def _span(*columns: Tensor) -> tuple[float, float]:
    """Axis limits holding the 0.5%-99.5% quantiles of the columns, with a margin (as :func:`_limits`)."""
    stacked = torch.cat(columns)
    low, high = torch.quantile(stacked, 0.005).item(), torch.quantile(stacked, 0.995).item()
    margin = 0.1 * (high - low) + 1e-6
    return low - margin, high + margin


def pairs(samples, path, data=None, dims: int = 4, title: str | None = None) -> Path:
    """Pairwise projections of the first ``dims`` coordinates: samples (blue) over the data (grey).

    A ``dims x dims`` scatter matrix of coordinate ``j`` against ``i`` off the diagonal and the marginal
    histograms on it, so data in any dimension get a picture; rows of any shape are flattened.
    """
    dims = check.integer("dims", dims, 1)
    x = _rows(samples, "samples")
    reference = None if data is None else _rows(getattr(data, "train", data)[:5000], "data")
    if reference is not None and reference.shape[1] != x.shape[1]:
        raise ConfigError(f"data: rows have {reference.shape[1]} coordinates but the samples have {x.shape[1]}")
    k = min(dims, x.shape[1])
    clouds = [c for c in (x, reference) if c is not None]
    spans = [_span(*(c[:, i] for c in clouds)) for i in range(k)]
    plt = _pyplot()
    fig, axes = plt.subplots(k, k, figsize=(2.2 * k + 0.4, 2.2 * k + 0.4), squeeze=False)
    for i in range(k):
        for j in range(k):
            ax = axes[i][j]
            if i == j:
                bins = np.linspace(*spans[i], 40)
                if reference is not None:
                    ax.hist(reference[:, i].numpy(), bins, density=True, color="0.75", label="data")
                ax.hist(x[:, i].numpy(), bins, density=True, histtype="step", color="tab:blue", label="samples")
            else:
                if reference is not None:
                    ax.scatter(reference[:, j], reference[:, i], **_DATA_STYLE)
                ax.scatter(x[:, j], x[:, i], **_PARTICLE_STYLE)
                ax.set_ylim(*spans[i])
            ax.set_xlim(*spans[j])
            ax.set_xticks([])
            ax.set_yticks([])
            if i == k - 1:
                ax.set_xlabel(f"x[{j}]", fontsize=8)
            if j == 0:
                ax.set_ylabel(f"x[{i}]", fontsize=8)
    axes[0][0].legend(loc="upper right", fontsize=7)
    coordinates = f"the first {k} of {x.shape[1]} coordinates"
    fig.suptitle(f"{title}: {coordinates}" if title else coordinates)
    return _save(fig, path)


def curve(xs, ys, path, xlabel: str = "step", ylabel: str = "metric", reference: float | None = None,
          reference_label: str = "floor", logy: bool = False, title: str | None = None) -> Path:
    """``ys`` against ``xs``: one series, or a mapping name -> values (all over the same ``xs``)."""
    series: Mapping[str, Sequence[float]] = ys if isinstance(ys, Mapping) else {ylabel: ys}
    xs = np.asarray(xs, dtype=float)
    for name, values in series.items():
        if len(values) != len(xs):
            raise ConfigError(f"ys[{name!r}]: expected {len(xs)} values (one per x), got {len(values)}")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for name, values in series.items():
        ax.plot(xs, np.asarray(values, dtype=float), marker="o", markersize=3, label=name)
    if reference is not None:
        ax.axhline(reference, color="0.4", linestyle="--", label=reference_label)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if len(series) > 1 or reference is not None:
        ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    return _save(fig, path)
