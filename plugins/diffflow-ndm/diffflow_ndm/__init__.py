"""Neural Diffusion Models (SPEC §3): learned forward transforms F_phi(x, t), NELBO objectives, samplers."""
