"""Presets of the discriminator family: GPM's settings (SPEC §2.10) plus an EMA of the weights, which
improved W2 on ring5 in every measured run (docs/benchmarks/discriminator.md)."""
from __future__ import annotations

_MLP = {"name": "mlp", "hidden": 512, "depth": 4, "activation": "leaky_relu"}
#: The GAN's networks: 3x256 (GPM: 4x512) trained 12,000 iterations with EMA 0.9995 reached W2/floor 1.24 on
#: ring5, where 4x512 for GPM's 1,900 iterations gave 3.44 (docs/benchmarks/discriminator.md).
_MLP_GAN = {"name": "mlp", "hidden": 256, "depth": 3, "activation": "leaky_relu"}
_ADAM = {"lr": 2e-4, "betas": [0.5, 0.999]}


def _gan(loss: str, summary: str, train: dict | None = None, **objective) -> dict:
    return {
        "summary": summary,
        "flow": {"name": "discriminator", "loss": loss, "time_conditioned": False, "network": dict(_MLP_GAN)},
        "objective": {"name": "gan", **objective},
        "smoother": {"name": "generator", "latent_dim": 128, "network": dict(_MLP_GAN)},
        "solver": "euler",
        "data": "ring5",
        "train": {"steps": 12000, "batch_size": 128, "ema": 0.9995, **_ADAM, **(train or {})},
        "sample": {"steps": 1, "n": 2000},
    }


#: The learning rate decays linearly over the last third (4,000 iterations): W2/floor 1.228 / 1.083 on training
#: seeds 0 / 1 against 1.318 / 1.351 with a constant rate; over seeds 0-5 median 1.21, worst 2.22
#: (docs/benchmarks/discriminator.md). Measured and not shipped (benchmarks/results/discriminator_quality_ring_*):
#: an R1 penalty (``objective.r1_weight = 1``) 1.454 / 1.391 / 1.322 on seeds 0 / 2 / 4 (helps the bad seeds,
#: hurts seed 0; weight 0.3 on seed 0: 1.415); the hinge loss with this decay 1.612 on seed 4. Both keep the error of the preset: generated
#: modes narrower than the data's (RMS per axis 0.35-0.39 against 0.50 with EMA; the raw weights have the
#: data's width but score 1.96-2.01).
GAN = _gan("non-saturating", "GAN (non-saturating loss) as an Int-PM: discriminator drift through the generator NTK",
           train={"decay": 1 / 3})
WGAN_GP = _gan("wgan", "WGAN-GP: IPM critic with gradient penalty (c0 = 1, weight 10)", d_steps=5, gp_weight=10.0,
               gp_center=1.0)
HINGE_GAN = _gan("hinge", "Hinge-loss GAN as an Int-PM")

#: The Discriminator Flow's discriminator: 3x128 (GPM: 4x512) with lr 5e-4 for GPM's 4,000 iterations reached
#: W2/floor 1.11 at 56 NFE on ring5 (docs/benchmarks/discriminator.md), at a fraction of the 4x512 cost.
_MLP_FLOW = {"name": "mlp", "hidden": 128, "depth": 3, "activation": "leaky_relu"}

DISCRIMINATOR_FLOW = {
    "summary": "Discriminator Flow (GPM Algorithm 3): one time-conditioned discriminator drives free particles",
    "flow": {"name": "discriminator", "loss": "non-saturating", "eta": 20.0, "time_conditioned": True,
             "network": dict(_MLP_FLOW)},
    "objective": {"name": "gan", "flow_steps": 56},
    "smoother": "identity",
    "solver": "euler",
    "data": "ring5",
    "train": {"steps": 4000, "batch_size": 128, "ema": 0.999, **_ADAM, "lr": 5e-4},
    "sample": {"steps": 56, "n": 2000},
}

#: GPM's score network, also the ``diffusion-gan`` flow's default. The Score GAN with it for both denoisers
#: (the data one trained 10,000 iterations first), a 3x256 generator, the EDM-weighted generated-score loss,
#: 10 score steps per generator step and EMA 0.999: W2/floor
#: 1.247 / 1.271 / 1.162 / 1.176 / 1.192 on seeds 0-4 after GPM's 31,500 iterations (docs/benchmarks/discriminator.md).
#: Both scores at 3x256 (data 4,000 iterations) gave 1.289 / 1.343 / 1.306, a 4x512 data score alone 1.224 / 1.193
#: / 1.341, ring5's exact data denoiser with 3x256 generated score 1.189 / - / 1.147: score error is the limit.
GPM_SCORE_MLP = {"name": "mlp", "hidden": 512, "depth": 4, "embedding_dim": 128, "fourier_scale": 2.0}

SCORE_GAN = {
    "summary": "Score GAN: a generator driven by the smoothed KL of noised laws (data score trained first)",
    "flow": {"name": "score-gan", "sigma_min": 0.1, "sigma_max": 10.0, "rho": 3.0, "data_steps": 10000,
             "network": dict(GPM_SCORE_MLP), "data_network": dict(GPM_SCORE_MLP)},
    "objective": {"name": "generated-dsm", "score_steps": 10, "weighting": "edm"},
    "smoother": {"name": "generator", "latent_dim": 128, "network": dict(_MLP_GAN)},
    "solver": "euler",
    "data": "ring5",
    "train": {"steps": 31500, "batch_size": 128, "ema": 0.999, **_ADAM},
    "sample": {"steps": 1, "n": 2000},
}


def _diffflow(loss: str, summary: str) -> dict:
    """DiffFlow's GAN rows with a learned noise-conditioned discriminator (SPEC §1.4, §1.6), VE smoothing."""
    return {**DISCRIMINATOR_FLOW, "summary": summary,
            "flow": {**DISCRIMINATOR_FLOW["flow"], "loss": loss, "sigma_max": 1.0}}


DIFFFLOW_GAN = _diffflow("vanilla", "DiffFlow GAN row (beta = gamma = D), learned noise-conditioned discriminator")
DIFFFLOW_NSGAN = _diffflow("non-saturating", "DiffFlow NS-GAN row (beta = gamma = 1 - D), learned discriminator")


_SCORE_FLOW = {"name": "mlp", "hidden": 128, "depth": 3, "embedding_dim": 64, "fourier_scale": 2.0}


def _mixed(row: str, summary: str, **flow) -> dict:
    """Score + discriminator rows at the Discriminator Flow's sizes (3x128 discriminator, 3x128 score net)."""
    return {**DISCRIMINATOR_FLOW, "summary": summary, "solver": "euler-maruyama",
            "flow": {"name": "diffusion-gan", "row": row, "loss": "non-saturating", "eta": 5.0,
                     "network": dict(_MLP_FLOW), "score_network": dict(_SCORE_FLOW), **flow}}


DIFFUSION_GAN = _mixed("diffusion-gan", "DiffFlow Diffusion-GAN: g^2 s_q + w (1 - D) grad d, noise g", sigma_max=3.0)
TDPM = _mixed("tdpm", "TDPM: GAN row at sigma_trunc for t < t1, then the reverse SDE to sigma = 0",
              sigma_trunc=0.5, t1=0.5, eta=10.0)
