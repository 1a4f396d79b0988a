"""One training run of a 1-NFE generator preset on ring5, scored with several EMAs of its weights.

    .venv/bin/python benchmarks/discriminator_ema_sweep.py TAG PRESET 0,0.999 [section.key=json ...]

Trains ``PRESET`` (with ``section.key=json`` overrides, as ``discriminator_quality.py --set``) once while
keeping, besides the preset's own EMA, one EMA per listed decay (0 = the raw weights); then scores each like
``discriminator_quality.py`` (W2 over 3 sampling seeds / data floor, mode shares of seed 0) and adds the
within-mode spread: RMS per axis of the distance to the nearest ring centre (the data: 0.5) and the fraction
of samples beyond 3 data std of every centre (bridges and outliers). Writes
``discriminator_quality_ring_<TAG>.json`` (``results`` = the preset's EMA, ``ema_sweep`` = all) to the bench output
folder (``diffflow bench --out DIR``; default ``~/.cache/diffflow/bench``).
Separates what training reached from what weight averaging makes of it, at the cost of one run.
"""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import torch


def main() -> None:
    torch.set_num_threads(1)
    sys.path.insert(0, str(Path(__file__).parent))
    from discriminator_quality import parse_set

    import diffflow_core.training.trainer as trainer_module
    from diffflow_core import build
    from diffflow_core.commands.bench import output_dir
    from diffflow_core.metrics import mode_coverage, w2_ratio

    tag, preset, decays, sets = sys.argv[1], sys.argv[2], [float(d) for d in sys.argv[3].split(",")], sys.argv[4:]
    base, made = trainer_module.EMA, []

    class MultiEMA(base):
        """The trainer's EMA plus one shadow per extra decay, all updated after every step."""

        def __init__(self, module, decay, *args, **kwargs):
            super().__init__(module, decay, *args, **kwargs)
            self.extras = {d: base(module, d, *args, **kwargs) for d in decays}
            made.append(self)

        def update(self, step=None):
            super().update(step)
            for extra in self.extras.values():
                extra.update(step)

    trainer_module.EMA = MultiEMA
    overrides = parse_set(sets)
    overrides.setdefault("train", {})["progress"] = False
    model = build(preset=preset, **overrides)
    tick = time.perf_counter()
    model.fit(model.data)
    seconds = time.perf_counter() - tick
    ema = made[-1]
    angles = 2 * math.pi * torch.arange(5, dtype=torch.float64) / 5
    centres = 3.0 * torch.stack([torch.cos(angles), torch.sin(angles)], 1)

    def spread(x: torch.Tensor) -> dict:
        distance = torch.cdist(x.double(), centres).min(1).values
        return {"rms_per_axis": float(distance.pow(2).mean().div(2).sqrt()),
                "beyond_1.5": float((distance > 1.5).double().mean())}

    out = {"preset": preset, "overrides": overrides, "train_seconds": seconds,
           "seconds_per_iteration": seconds / model.config.train.steps,
           "data_spread": spread(model.data.test[:2000]), "results": [], "ema_sweep": {}}
    print("data", out["data_spread"], flush=True)
    for decay in [ema.decay] + decays:
        (ema if decay == ema.decay else ema.extras[decay]).copy_to(model)
        w2 = w2_ratio(lambda n, s: model.sample(n, 1, seed=s).x, model.data, n=2000, seeds=3)
        x = model.sample(2000, 1, seed=0).x
        coverage = mode_coverage(x, model.data)
        row = {**w2.as_dict(), **spread(x), "mode_shares": list(coverage.shares),
               "max_deviation": coverage.max_deviation}
        out["ema_sweep"][str(decay)] = row
        if decay == ema.decay:
            out["results"].append({"steps": 1, "nfe": 1, "ema": decay, **row,
                                   "modes_ok": coverage.max_deviation <= 5.0})
        print(decay, w2, spread(x), coverage.max_deviation, flush=True)
    path = output_dir() / f"discriminator_quality_ring_{tag}.json"
    path.write_text(json.dumps(out, indent=1))
    print(f"trained in {seconds:.1f} s; wrote {path}")


if __name__ == "__main__":
    main()
