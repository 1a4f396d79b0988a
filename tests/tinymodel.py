"""A tiny trainable model for engine tests (training, checkpoints, DDP, CLI): a denoising score net on 2-D
data, registered programmatically so tests need no plugin. Import with ``ensure_registered()``."""
from __future__ import annotations

import math

import torch

from diffflow_core import Flow, Objective, register, registry
from diffflow_core.networks import build_network


class TinyScore(Flow):
    """PF-ODE of a VE path ``x_sigma = x + sigma eps`` with a learned noise predictor: ``v = -net(x, sigma)``."""

    singular_end = False

    def __init__(self, event_shape=(2,), hidden: int = 32, depth: int = 2, sigma_max: float = 3.0):
        super().__init__()
        self.event_shape = tuple(event_shape)
        self.sigma_max = sigma_max
        self.net = build_network({"name": "mlp", "hidden": hidden, "depth": depth, "fourier_scale": 1.0},
                                 in_shape=self.event_shape)

    def drift(self, x, t):
        return self.net(x, t)

    def time_grid(self, steps):
        return torch.linspace(self.sigma_max, 0.05, steps + 1)

    def prior(self, n, generator=None, device=None):
        return self.sigma_max * torch.randn((n, *self.event_shape), generator=generator, device=device)

    def prior_log_prob(self, x):
        flat = x.flatten(1) / self.sigma_max
        return -0.5 * (flat.pow(2).sum(1) + flat.shape[1] * math.log(2 * math.pi * self.sigma_max**2))


class TinyDSM(Objective):
    """``E || net(x + sigma eps, sigma) - eps ||^2`` with ``sigma ~ U(0.05, sigma_max)`` (so drift = eps-hat)."""

    def __init__(self, flow):
        self.flow = flow

    def loss(self, flow, batch, generator=None):
        x = batch.x
        sigma = 0.05 + (flow.sigma_max - 0.05) * torch.rand(x.shape[0], generator=generator).to(x)
        eps = torch.randn(x.shape, generator=generator).to(x)
        return (flow.net(x + sigma[:, None] * eps, sigma) - eps).pow(2).mean()


def ensure_registered() -> None:
    if "tiny-score" not in registry("flows"):
        register("flows", "tiny-score", TinyScore, "test flow")
    if "tiny-dsm" not in registry("objectives"):
        register("objectives", "tiny-dsm", TinyDSM, "test objective")


def config(steps: int = 30, **train) -> dict:
    return {"flow": {"name": "tiny-score"}, "objective": {"name": "tiny-dsm"}, "solver": {"name": "heun"},
            "data": {"name": "ring5", "n_train": 512, "n_test": 256},
            "train": {"steps": steps, "batch_size": 32, "lr": 1e-3, "progress": False, "log_every": 1, **train},
            "sample": {"steps": 4, "n": 64}}


def torchrun(script, timeout: float, **env: str):
    """Run ``script`` as two gloo ranks under ``torchrun --standalone`` (one thread each, ``env`` added); the
    finished process with its captured output."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    launcher = Path(sys.executable).with_name("torchrun")
    return subprocess.run([str(launcher), "--standalone", "--nproc_per_node=2", str(script)],
                          env={**os.environ, "OMP_NUM_THREADS": "1", **env}, capture_output=True, text=True,
                          timeout=timeout)
