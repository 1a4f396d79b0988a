"""Score-based diffusion for diffflow: EDM, VP and VE flows, their DSM objectives and samplers."""
