"""Presets: the special cases of SPEC §3.5 as recipes (documented in docs/flows/ndm.md).

Every preset uses an MLP reverse model sized for 2-D data; override ``flow.network`` for images.
"""
from __future__ import annotations

_NET = {"name": "mlp", "hidden": 256, "depth": 3}
_TRAIN = {"steps": 4000, "batch_size": 256, "lr": 1e-3, "warmup": 100, "grad_clip": 1.0, "ema": 0.999}

# The NDM recipe of the benchmark (docs/benchmarks/ndm.md, where its quality and time are measured): two 3x128
# MLPs (reverse model and Fbar), 5,000 steps with EMA 0.999, sampled with 100 Heun steps.
_NDM_NET = {"name": "mlp", "hidden": 128, "depth": 3}

NDM = {
    "summary": "Neural Diffusion Model: learned F_phi(x, t) = (1 - t) x + t Fbar(x, t), VP cosine, continuous NELBO, ODE",
    "flow": {"name": "ndm", "network": _NDM_NET, "schedule": "cosine", "mode": "ode",
             "transform": {"name": "learned", "network": _NDM_NET}},
    "objective": {"name": "nelbo-continuous", "proposal": "logsnr"},
    "solver": "heun", "data": "ring5", "train": {**_TRAIN, "steps": 5000}, "sample": {"steps": 100},
}

DDPM = {
    "summary": "DDPM: F = x, linear VP schedule, discrete NELBO (T = 1000), ancestral sampling",
    "flow": {"name": "ndm", "network": _NET, "schedule": "linear", "transform": "identity"},
    "objective": {"name": "nelbo", "steps": 1000},
    "solver": "ndm-ddpm", "data": "ring5", "train": _TRAIN, "sample": {"steps": 1000},
}

DDIM = {
    "summary": "DDIM: F = x, linear VP schedule, discrete NELBO, deterministic eta = 0 sampler",
    "flow": {"name": "ndm", "network": _NET, "schedule": "linear", "transform": "identity"},
    "objective": {"name": "nelbo", "steps": 1000},
    "solver": "ndm-ddim", "data": "ring5", "train": _TRAIN, "sample": {"steps": 50},
}

VDM = {
    "summary": "VDM: F = x, learnable monotone log-SNR schedule, continuous NELBO (-1/2 SNR' ||x - x_hat||^2)",
    "flow": {"name": "ndm", "network": _NET, "schedule": "learned", "transform": "identity"},
    "objective": {"name": "nelbo-continuous", "proposal": "logsnr"},
    "solver": "ndm-ddpm", "data": "ring5", "train": _TRAIN, "sample": {"steps": 1000},
}

FLOW_MATCHING = {
    "summary": "Flow matching / rectified flow as an NDM: F = x, alpha = 1 - t, sigma = t (+1e-3), continuous NELBO, ODE",
    "flow": {"name": "ndm", "network": _NET, "schedule": "flow-matching", "transform": "identity", "mode": "ode"},
    "objective": {"name": "nelbo-continuous", "proposal": "logsnr"},
    "solver": "heun", "data": "ring5", "train": _TRAIN, "sample": {"steps": 100},
}
