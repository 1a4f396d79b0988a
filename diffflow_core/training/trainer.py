"""Trainer: optimises every Player of a model's Objective over shuffled epochs of the data.

Features: Adam per player (lr warm-up, gradient clipping), EMA of the trained weights (swapped into the
model at the end), a progress bar with the live loss, seeded determinism, and a history of logged losses.
"""
from __future__ import annotations

import math
import time
from typing import Any

import attrs
import torch
from torch import Tensor, nn

from diffflow_core.config import TrainConfig
from diffflow_core.data import Dataset
from diffflow_core.errors import ConfigError
from diffflow_core.interfaces import Batch, Player

__all__ = ["Trainer", "History", "BatchStream", "EMA"]


@attrs.define
class History:
    """Logged records (one dict per logged step) and the wall time of the run."""

    records: list[dict[str, Any]] = attrs.Factory(list)
    seconds: float = 0.0

    def series(self, key: str) -> list[float]:
        return [r[key] for r in self.records if key in r]


class BatchStream:
    """Shuffled epochs over a fixed tensor, driven by one generator: its position is ``(epoch, index)``."""

    def __init__(self, data: Tensor, labels: Tensor | None, batch_size: int, generator: torch.Generator) -> None:
        if batch_size > data.shape[0]:
            batch_size = data.shape[0]
        self.data, self.labels, self.batch_size, self.generator = data, labels, batch_size, generator
        self.order = torch.randperm(data.shape[0], generator=generator)
        self.index = 0

    def __next__(self) -> Batch:
        if self.index + self.batch_size > self.data.shape[0]:
            self.order = torch.randperm(self.data.shape[0], generator=self.generator)
            self.index = 0
        idx = self.order[self.index:self.index + self.batch_size]
        self.index += self.batch_size
        return Batch(self.data[idx], None if self.labels is None else self.labels[idx])


class EMA:
    """Exponential moving average of a module's floating-point parameters and buffers."""

    def __init__(self, module: nn.Module, decay: float) -> None:
        self.module, self.decay = module, decay
        self.shadow = {k: v.detach().clone() for k, v in module.state_dict().items() if v.dtype.is_floating_point}

    @torch.no_grad()
    def update(self) -> None:
        for key, value in self.module.state_dict().items():
            if key in self.shadow:
                self.shadow[key].lerp_(value.detach(), 1 - self.decay)

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        state = module.state_dict()
        for key, value in self.shadow.items():
            state[key].copy_(value)


class Trainer:
    """Train ``model`` with its objective's players; settings come from the config's ``train`` section."""

    def __init__(self, model: nn.Module, config: TrainConfig | None = None, **overrides: Any) -> None:
        base = config or (model.config.train if getattr(model, "config", None) is not None else TrainConfig())
        try:
            self.config = attrs.evolve(base, **overrides)
        except TypeError as exc:
            names = [f.name for f in attrs.fields(TrainConfig)]
            raise ConfigError(f"train: {exc}; expected settings among {', '.join(names)}") from None
        self.model = model

    def _optimizers(self, players: list[Player]) -> list[torch.optim.Optimizer]:
        cfg = self.config
        return [torch.optim.Adam(p.parameters, lr=p.lr or cfg.lr, betas=p.betas or tuple(cfg.betas),
                                 weight_decay=cfg.weight_decay) for p in players]

    def _lr_scale(self, step: int) -> float:
        return min(1.0, (step + 1) / self.config.warmup) if self.config.warmup else 1.0

    def fit(self, data: Dataset) -> History:
        cfg = self.config
        device = next((p.device for p in self.model.parameters()), torch.device("cpu"))
        torch.manual_seed(cfg.seed)
        generator = torch.Generator().manual_seed(cfg.seed)
        players = self.model.objective.players(self.model)
        if not players or not any(p.parameters for p in players):
            raise ConfigError("objective: produced no trainable parameters")
        optimizers = self._optimizers(players)
        ema = EMA(self.model, cfg.ema) if cfg.ema > 0 else None
        stream = BatchStream(data.train, data.train_labels, cfg.batch_size, generator)
        history = History()
        start = time.perf_counter()
        progress = _progress(cfg.steps, cfg.progress)
        running: dict[str, float] = {}
        for step in range(cfg.steps):
            for player, optimizer in zip(players, optimizers):
                if step % player.every:
                    continue
                for _ in range(player.repeats):
                    loss = player.loss(next(stream).to(device), generator)
                    if not torch.isfinite(loss):
                        raise FloatingPointError(f"training diverged: {player.name} loss is {float(loss)} "
                                                 f"at step {step}")
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    if cfg.grad_clip is not None:
                        nn.utils.clip_grad_norm_(player.parameters, cfg.grad_clip)
                    for group in optimizer.param_groups:
                        group["lr"] = (player.lr or cfg.lr) * self._lr_scale(step)
                    optimizer.step()
                    running[player.name] = float(loss.detach())
            if ema is not None:
                ema.update()
            if step % cfg.log_every == 0 or step == cfg.steps - 1:
                history.records.append({"step": step, **{f"loss/{k}": v for k, v in running.items()}})
            if progress is not None:
                progress.update(1)
                progress.set_postfix({k: f"{v:.4g}" for k, v in running.items()}, refresh=False)
        if progress is not None:
            progress.close()
        if ema is not None:
            ema.copy_to(self.model)
        history.seconds = time.perf_counter() - start
        return history


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="train", leave=False, dynamic_ncols=True, mininterval=0.5)
