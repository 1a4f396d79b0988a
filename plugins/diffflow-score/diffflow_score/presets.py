"""Presets (plain config dicts) of the score family; the network is chosen from the data's shape ("auto":
a U-Net for images when one is registered, else GPM's 4x512 Fourier MLP)."""

#: GPM's score network, a 4x512 MLP with 128 Fourier time features of scale 2: the ``"auto"`` network for
#: particles that are not images, and the discriminator family's Score GAN and ``diffusion-gan`` score networks.
GPM_SCORE_MLP = {"name": "mlp", "hidden": 512, "depth": 4, "embedding_dim": 128, "fourier_scale": 2.0}

_TRAIN = {"steps": 10000, "batch_size": 128, "lr": 2e-4, "ema": 0.999, "warmup": 200}

# Sampling range sigma in [0.02, 20] rather than EDM's image default [0.002, 80]: the rho-grid spends its steps
# where sigma is large, and for data of scale ~1-3 (toys, [-1, 1] images) sigma > 20 only re-blurs an almost
# Gaussian law. On ring5 the narrower range samples better at a small NFE, with the exact score and with a learned
# model alike (measured in docs/benchmarks.md, "Why the sampling range matters at 17 NFE").
# Training is unaffected: dsm-edm draws sigma from LogNormal(-1.2, 1.2) whatever the sampling range.
EDM = {
    "summary": "EDM: preconditioned denoiser (sigma_data 0.5), dsm-edm, deterministic Heun on the rho-grid",
    "flow": {"name": "score", "parameterisation": "edm", "network": "auto", "sigma_min": 0.02, "sigma_max": 20.0,
             "rho": 7.0},
    "objective": {"name": "dsm-edm"},
    "solver": {"name": "heun"},
    "data": {"name": "ring5"},
    "train": _TRAIN,
    "sample": {"steps": 18},
}

VP = {
    "summary": "VP-SDE (continuous DDPM, beta 0.1..20): epsilon net, dsm-vp, Heun on the probability-flow ODE",
    "flow": {"name": "score", "parameterisation": "vp", "network": "auto"},
    "objective": {"name": "dsm-vp"},
    "solver": {"name": "heun"},
    "data": {"name": "ring5"},
    "train": _TRAIN,
    "sample": {"steps": 50},
}

VE = {
    "summary": "VE-SDE (SMLD, sigma 0.01..50 geometric): epsilon net, dsm-ve, Heun on the probability-flow ODE",
    "flow": {"name": "score", "parameterisation": "ve", "network": "auto"},
    "objective": {"name": "dsm-ve"},
    "solver": {"name": "heun"},
    "data": {"name": "ring5"},
    "train": _TRAIN,
    "sample": {"steps": 50},
}

NCSN = {
    "summary": "NCSN: VE score net, dsm-ve, annealed Langevin (10 steps per level) over a geometric sigma ladder",
    "flow": {"name": "score", "parameterisation": "ve", "network": "auto"},
    "objective": {"name": "dsm-ve"},
    "solver": {"name": "annealed-langevin", "langevin_steps": 10, "step_ratio": 1.0},
    "data": {"name": "ring5"},
    "train": _TRAIN,
    "sample": {"steps": 10},
}
