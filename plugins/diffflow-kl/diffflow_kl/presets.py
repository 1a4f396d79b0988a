"""Presets of the particle flows (plain config dicts; DESIGN §2). Each runs on any dataset: the target score
is the dataset's closed form when it has one (``target="auto"``), a KDE of 2,000 data samples otherwise.

Step counts and horizons were chosen on ring5 (see ``docs/benchmarks/particle-flows.md``).
"""
from __future__ import annotations

import math

__all__ = ["PRESETS"]

_SDE = {"name": "euler-maruyama"}

PRESETS: dict[str, tuple[str, dict]] = {
    "langevin": ("Langevin dynamics on the data score (analytic when available)", {
        "flow": {"name": "langevin", "horizon": 10.0}, "solver": _SDE, "data": "ring5", "sample": {"steps": 1000}}),
    "annealed-langevin": ("Annealed Langevin (NCSN) over 15 noise levels from 3 to 0.01", {
        "flow": {"name": "annealed-langevin", "sigma_max": 3.0, "sigma_min": 0.01, "levels": 15, "tau": 20.0},
        "solver": _SDE, "data": "ring5", "sample": {"steps": 2000}}),
    "kl": ("Forward-KL flow with a particle KDE and the target smoothed by the same kernel", {
        "flow": {"name": "kl", "smooth_target": True, "horizon": 3.0}, "solver": "euler", "data": "ring5", "sample": {"steps": 300}}),
    "svgd": ("SVGD: the KL flow through the Stein kernel (integration-by-parts form)", {
        "flow": {"name": "kl", "particles": None, "smooth_target": False, "horizon": 30.0},
        "smoother": {"name": "stein", "bandwidth": "median", "scale": 0.5}, "solver": "euler",
        "data": "ring5", "sample": {"steps": 600}}),
    "diffflow-sde": ("DiffFlow SDE, VP reverse-SDE row (DDPM) on analytic smoothed scores", {
        "flow": {"name": "diffflow", "row": {"name": "vp"}, "particles": None}, "solver": _SDE,
        "data": "ring5", "sample": {"steps": 1000}}),
    "diffflow-langevin": ("DiffFlow row: single-noise Langevin (f=0, beta=gamma=1, lambda=sqrt 2)", {
        "flow": {"name": "diffflow", "row": {"name": "constant", "lam": math.sqrt(2.0), "horizon": 10.0},
                 "particles": None}, "solver": _SDE, "data": "ring5", "sample": {"steps": 1000}}),
    "diffflow-annealed-langevin": ("DiffFlow row: annealed Langevin over a sigma ladder", {
        "flow": {"name": "diffflow", "row": {"name": "ladder"}, "particles": None}, "solver": _SDE,
        "data": "ring5", "sample": {"steps": 1500}}),
    "diffflow-vp": ("DiffFlow row: VP reverse SDE (DDPM), beta=g^2, gamma=g^2/2, lambda=g", {
        "flow": {"name": "diffflow", "row": {"name": "vp"}, "particles": None}, "solver": _SDE,
        "data": "ring5", "sample": {"steps": 1000}}),
    "diffflow-ve": ("DiffFlow row: VE reverse SDE (SMLD)", {
        "flow": {"name": "diffflow", "row": {"name": "ve"}, "particles": None}, "solver": _SDE,
        "data": "ring5", "sample": {"steps": 1000}}),
    "diffflow-pf-ode": ("DiffFlow row: VP probability-flow ODE (lambda=0, rho_t = q_sigma(t))", {
        "flow": {"name": "diffflow", "row": {"name": "vp"}, "particles": "target", "noise_scale": 0.0},
        "solver": "heun", "data": "ring5", "sample": {"steps": 200}}),
    "diffflow-gan-kde": ("DiffFlow row: vanilla GAN, beta=gamma=D(x) with the optimal D against a particle KDE", {
        "flow": {"name": "diffflow", "row": {"name": "gan", "loss": "vanilla", "horizon": 6.0},
                 "smooth_target": True}, "solver": "euler", "data": "ring5", "sample": {"steps": 600}}),
    "diffflow-nsgan-kde": ("DiffFlow row: non-saturating GAN, beta=gamma=1-D(x)", {
        "flow": {"name": "diffflow", "row": {"name": "gan", "loss": "ns", "horizon": 6.0},
                 "smooth_target": True}, "solver": "euler", "data": "ring5", "sample": {"steps": 600}}),
}
