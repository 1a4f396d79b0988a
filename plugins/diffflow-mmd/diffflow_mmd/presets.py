"""Presets of the MMD flow (plain config dicts); tuned on ring5, see docs/benchmarks/particle-flows.md."""
from __future__ import annotations

__all__ = ["PRESETS"]

PRESETS: dict[str, tuple[str, dict]] = {
    "mmd": ("MMD flow with a multi-bandwidth Gaussian kernel to 2,000 fixed data samples", {
        "flow": {"name": "mmd", "kernel": "gaussian", "bandwidth": [0.25, 0.5, 1.0, 2.0, 4.0], "horizon": 100.0},
        "solver": "euler", "data": "ring5", "sample": {"steps": 500}}),
    "mmd-energy": ("MMD flow with the energy-distance kernel -||x - y|| to 2,000 fixed data samples", {
        "flow": {"name": "mmd", "kernel": "energy", "horizon": 20.0}, "solver": "euler", "data": "ring5", "sample": {"steps": 500}}),
}
