"""Particle flows without a generator (SPEC §1, §2.1-2.5): KL / Langevin / entropy / f-divergence flows, the
DiffFlow SDE with its rows, radial kernels with chunked interactions, KDE score sources and the Stein smoother."""
