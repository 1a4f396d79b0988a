"""Presets (plain config dicts): rectified flow, ScoreFlow, and class-conditional ScoreFlow for translation."""

_MLP = {"name": "mlp", "hidden": 256, "depth": 3, "fourier_scale": 1.0}

RECTIFIED_FLOW = {
    "summary": "Rectified flow: velocity MLP, flow-matching loss, Euler sampling from N(0, I)",
    "flow": {"name": "velocity", "network": _MLP, "source": "gaussian"},
    "objective": {"name": "flow-matching"},
    "solver": {"name": "euler"},
    "data": {"name": "ring5"},
    "train": {"steps": 5000, "batch_size": 256, "lr": 1e-3, "ema": 0.999},
    "sample": {"steps": 10},
}

SCOREFLOW = {
    "summary": "ScoreFlow: velocity MLP, path-constrained loss with lambda(t) = 1/t, Heun sampling",
    "flow": {"name": "velocity", "network": _MLP, "source": "gaussian"},
    "objective": {"name": "path-constrained", "weight": "inverse"},
    "solver": {"name": "heun"},
    "data": {"name": "ring5"},
    "train": {"steps": 5000, "batch_size": 256, "lr": 1e-3, "ema": 0.999},
    "sample": {"steps": 5},
}

SCOREFLOW_TRANSLATE = {
    "summary": "Class-conditional ScoreFlow on digits with label dropout: guidance and shared-latent translation",
    "flow": {"name": "velocity", "network": {**_MLP, "hidden": 512}, "source": "gaussian", "conditional": True},
    "objective": {"name": "flow-matching", "label_dropout": 0.15},
    "solver": {"name": "heun"},
    "data": {"name": "digits"},
    "train": {"steps": 4000, "batch_size": 256, "lr": 1e-3, "ema": 0.999},
    "sample": {"steps": 10},
}
