"""Trainer: optimises every Player of a model's Objective over shuffled epochs of the data.

Features: Adam per player (lr warm-up, gradient clipping), EMA of the trained weights (swapped into the
model at the end), a progress bar with the live loss, periodic evaluation (a callable or the default sample
metric) and sample snapshots, metric logs (JSONL + CSV), atomic checkpoints that record the config and the
providers' versions, exact resume (weights, optimisers, loss scales, EMA, RNG states and data position: an
interrupted then resumed run ends with parameters identical to an uninterrupted one), seeded determinism,
bfloat16/float16 autocast, gradient accumulation, ``torch.compile`` and channels-last networks
(:mod:`diffflow_core.training.acceleration`), a hot loop that never waits for the device (values are read back
only when logging, evaluating or checkpointing), and data-parallel training through DDP under ``torchrun``
(:mod:`diffflow_core.training.distributed`).
"""
from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Any, Callable

import attrs
import torch
from torch import Tensor, nn

from diffflow_core.config import TrainConfig
from diffflow_core.data import Dataset
from diffflow_core.data.loader import LoaderStream
from diffflow_core.errors import CheckpointError, ConfigError
from diffflow_core.interfaces import Batch, Player
from diffflow_core.progress import progress_bar
from diffflow_core.training.acceleration import accelerated, channels_last_batch
from diffflow_core.training.distributed import DistContext
from diffflow_core.training.logs import MetricLog

__all__ = ["Trainer", "History", "BatchStream", "EMA", "Evaluator", "make_stream"]

#: ``evaluate(model, step) -> {name: number}``, called with the EMA weights swapped in.
Evaluator = Callable[[nn.Module, int], dict[str, float]]
CHECKPOINT = "checkpoint.pt"


@attrs.define
class History:
    """Logged records (one dict per logged step) and the wall time of the run."""

    records: list[dict[str, Any]] = attrs.Factory(list)
    seconds: float = 0.0
    #: wall time of the objective's preparation (:meth:`Objective.prepare`), not counted in ``seconds``
    prepare_seconds: float = 0.0

    def series(self, key: str) -> list[float]:
        return [r[key] for r in self.records if key in r]


class BatchStream:
    """Shuffled epochs over a fixed tensor, driven by one generator: its position is ``(order, index)``."""

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

    def state_dict(self) -> dict[str, Any]:
        return {"order": self.order.clone(), "index": self.index, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.order, self.index = state["order"].clone(), int(state["index"])
        self.generator.set_state(state["generator"])


def make_stream(rows: Any, labels: Tensor | None, batch_size: int, generator: torch.Generator, workers: int,
                device: torch.device) -> BatchStream | LoaderStream:
    """The training batches: :class:`BatchStream` in this process without ``workers`` (``train.workers = 0``),
    else a ``DataLoader`` over ``workers`` processes, its batches pinned for an asynchronous copy to a GPU."""
    if not workers:
        return BatchStream(rows, labels, batch_size, generator)
    return LoaderStream(rows, labels, batch_size, generator, workers=workers, pin_memory=device.type == "cuda")


class EMA:
    """Exponential moving average of a module's trained parameters and floating-point buffers, whose averaging
    length grows with training (EDM's EMA warm-up).

    ``decay`` is the final per-step decay (``train.ema``): a half-life of ``H = ln 0.5 / ln decay`` steps (693
    for 0.999). With ``rampup = r > 0`` update number ``s`` (1 for the first) uses the half-life
    ``h_s = min(H, r * s)``, i.e. ``shadow <- decay_s * shadow + (1 - decay_s) * weights`` with
    ``decay_s = 0.5 ** (1 / h_s)``. While ``r * s < H`` the weight of step ``t`` in the average after ``s``
    steps is about proportional to ``t ** (ln 2 / r - 1)`` (``prod_{u>t} decay_u = 0.5 ** (sum 1 / (r u))``
    ~ ``(t / s) ** (ln 2 / r)``), so half of it lies on the last fraction ``1 - exp(-r)`` ~ ``r`` of the steps
    whatever the run's length, and the random initial weights keep ``0.5 ** (1 / r)`` after the first update;
    from ``s >= H / r`` on the decay is exactly ``decay``. ``rampup = 0`` is a fixed decay from the first
    step (the EMA before the warm-up existed).

    This is EDM's ``ema_rampup_ratio`` (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based
    Generative Models", ``training/training_loop.py``: ``ema_beta = 0.5 ** (batch_size /
    max(min(ema_halflife_nimg, cur_nimg * ema_rampup_ratio), 1e-8))``) counted in steps instead of images
    (EDM's ``cur_nimg`` counts the images before the update, so its first ``ema_beta`` is 0; here the first is
    ``0.5 ** (1 / r)``). It is preferred over EDM2's power-function EMA (Karras et al. 2024,
    ``decay_t = (1 - 1/t) ** (gamma + 1)``, the same ``t ** gamma`` profile as the ramp but for the whole
    run) because it keeps ``train.ema`` the decay the presets were tuned and measured with: a run longer than
    ``H / r`` steps ends with the EMA it had before. The decay is a function of the step alone, so a resumed
    run (the shadow and the step are checkpointed) continues bit-identically.

    Frozen parameters (``requires_grad=False``, e.g. a Score GAN's pretrained data score) never move, so they
    are not averaged: no per-step work for them; nor are the ``skip`` ones, which sampling never reads
    (:meth:`Objective.unaveraged`): they keep their trained values."""

    def __init__(self, module: nn.Module, decay: float, skip: list[Tensor] = (), rampup: float = 0.0) -> None:
        self.module, self.decay, self.rampup = module, decay, rampup
        self.half_life = math.log(0.5) / math.log(decay) if 0 < decay < 1 else 0.0
        skipped = {id(p) for p in skip}
        frozen = {name for name, p in module.named_parameters(remove_duplicate=False)
                  if not p.requires_grad or id(p) in skipped}
        live = {k: v for k, v in module.state_dict().items() if v.dtype.is_floating_point and k not in frozen}
        self.shadow = {k: v.detach().clone() for k, v in live.items()}
        # state_dict tensors share storage with the module (loading copies in place): one fused lerp per step
        self._pairs = ([self.shadow[k] for k in live], [v.detach() for v in live.values()])

    def decay_at(self, step: int) -> float:
        """The decay of update number ``step`` (1 for the first): ``0.5 ** (1 / min(H, rampup * step))``."""
        if not self.rampup or self.rampup * step >= self.half_life:
            return self.decay
        return 0.5 ** (1.0 / max(self.rampup * step, 1e-8))

    @torch.no_grad()
    def update(self, step: int | None = None) -> None:
        """Average in the current weights as update number ``step`` (None: the final decay)."""
        decay = self.decay if step is None else self.decay_at(step)
        torch._foreach_lerp_(self._pairs[0], self._pairs[1], 1 - decay)

    @torch.no_grad()
    def reset(self) -> None:
        """Restart the average at the module's current weights."""
        torch._foreach_copy_(self._pairs[0], self._pairs[1])

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        state = module.state_dict()
        for key, value in self.shadow.items():
            state[key].copy_(value)


class _SwapIn:
    """Context: the EMA weights in the model, the raw weights restored on exit."""

    def __init__(self, model: nn.Module, ema: EMA | None) -> None:
        self.model, self.ema, self.saved = model, ema, None

    def __enter__(self) -> None:
        if self.ema is not None:
            self.saved = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            self.ema.copy_to(self.model)

    def __exit__(self, *exc: Any) -> None:
        if self.saved is not None:
            self.model.load_state_dict(self.saved)


class Trainer:
    """Train ``model`` with its objective's players; settings come from the config's ``train`` section.

    ``out_dir`` receives ``metrics.jsonl``/``metrics.csv``, ``checkpoint.pt`` (every ``checkpoint_every``
    steps and at the end) and ``snapshots/step_<k>.npy``; ``resume`` (a checkpoint path, or True for
    ``out_dir/checkpoint.pt``) continues a run exactly; ``evaluate`` replaces the default evaluation (sliced
    W2 of ``eval_samples`` samples to the test split) run every ``eval_every`` steps.
    """

    def __init__(self, model: nn.Module, config: TrainConfig | None = None, *, out_dir: str | Path | None = None,
                 resume: str | Path | bool | None = None, evaluate: Evaluator | None = None,
                 eval_samples: int = 512, label: str = "train", **overrides: Any) -> None:
        base = config or (model.config.train if getattr(model, "config", None) is not None else TrainConfig())
        try:
            self.config = attrs.evolve(base, **overrides)
        except TypeError as exc:
            names = [f.name for f in attrs.fields(TrainConfig)]
            raise ConfigError(f"train: {exc}; expected settings among {', '.join(names)}") from None
        if resume is True and out_dir is None:
            raise ConfigError("resume: True means 'out_dir/checkpoint.pt', but no out_dir was given")
        if self.config.checkpoint_every and out_dir is None:
            raise ConfigError("train.checkpoint_every: checkpoints need an out_dir to write to")
        self.model, self.evaluate, self.eval_samples, self.label = model, evaluate, eval_samples, label
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.resume = (self.out_dir / CHECKPOINT) if resume is True else (Path(resume) if resume else None)
        if self.resume is not None and not self.resume.exists():
            raise ConfigError(f"resume: checkpoint {str(self.resume)!r} does not exist")

    def _optimizers(self, players: list[Player]) -> list[torch.optim.Optimizer]:
        """Adam per player; the fused kernel (one pass over all tensors instead of a loop over them, same update;
        timed in docs/benchmarks.md) wherever every parameter is a floating-point CPU/CUDA tensor."""
        cfg = self.config
        optimizers = []
        for p in players:
            lr, betas = p.lr or cfg.lr, p.betas or tuple(cfg.betas)
            groups = [{**g, "lr": g.get("lr") or lr, "betas": g.get("betas") or betas} for g in p.groups] \
                or [{"params": p.parameters, "lr": lr, "betas": betas}]
            for group in groups:  # the warm-up scales each group's own learning rate
                group["base_lr"] = group["lr"]
            optimizers.append(torch.optim.Adam(groups, weight_decay=cfg.weight_decay, fused=_fusable(p.parameters)))
        return optimizers

    def _lr_scale(self, step: int) -> float:
        """Linear warm-up over the first ``warmup`` steps, linear decay over the last fraction ``decay`` of them
        (a fraction, so the decay scales with an overridden step count)."""
        cfg = self.config
        scale = min(1.0, (step + 1) / cfg.warmup) if cfg.warmup else 1.0
        decay_steps = max(1, round(cfg.decay * cfg.steps)) if cfg.decay else 0
        return scale * min(1.0, (cfg.steps - step) / decay_steps) if decay_steps else scale

    def fit(self, data: Dataset) -> History:
        """Train from step 0 (or the checkpoint's step) to ``train.steps``; returns the logged history.

        Each optimiser step of a player averages the gradients of ``train.accumulate`` micro-batches, under
        autocast in ``train.precision`` (float16 with a loss scaler per player), and under ``torchrun`` across
        ranks (DDP, :mod:`~diffflow_core.training.distributed`). The loop never waits for the device: losses and
        a per-player "was NaN/Inf" flag stay where they are computed and are read in one transfer only at the
        steps that log (every ``train.log_every``), evaluate or checkpoint, and at the end. A loss that turned
        NaN or Inf therefore stops training at the next such step, naming the player and the steps since the
        previous check; no checkpoint is written after it.
        """
        cfg = self.config
        dist = DistContext()
        model = self.model
        device = dist.device(next((p.device for p in model.parameters()), torch.device("cpu")))
        model.to(device)
        dist.broadcast_module(model)
        torch.manual_seed(cfg.seed + dist.rank)
        generator = torch.Generator().manual_seed(cfg.seed + 7919 * dist.rank)
        prepared = time.perf_counter()
        model.objective.prepare(model)
        prepare_seconds = time.perf_counter() - prepared
        players = model.objective.players(model)
        if not players or not any(p.parameters for p in players):
            raise ConfigError("objective: produced no trainable parameters")
        train, labels = data.train_rows, data.train_labels  # image data: uint8, converted per batch
        if dist.world > 1:
            train, labels = train[dist.rank::dist.world], None if labels is None else labels[dist.rank::dist.world]
        with accelerated(model, cfg, data.event_shape, device, report=dist.is_main):
            run = _Run(dist=dist, device=device, players=players, optimizers=self._optimizers(players),
                       scalers=[torch.amp.GradScaler(device.type, enabled=cfg.precision == "float16")
                                for _ in players],
                       ema=EMA(model, cfg.ema, skip=model.objective.unaveraged(model), rampup=cfg.ema_rampup)
                       if cfg.ema > 0 else None,
                       stream=make_stream(train, labels, cfg.batch_size, generator, cfg.workers, device),
                       generator=generator,
                       flags=torch.zeros(len(players), dtype=torch.bool, device=device))
            start_step = self._restore(run) if self.resume is not None else 0
            run.checked = start_step
            run.losses = [dist.data_parallel(p, cfg.find_unused_parameters) for p in players]
            run.log = MetricLog(self.out_dir, keep=len(run.history.records)) \
                if self.out_dir is not None and dist.is_main else None
            start = time.perf_counter()
            progress = progress_bar(cfg.steps, self.label, cfg.progress and dist.is_main, initial=start_step)
            for step in range(start_step, cfg.steps):
                self._step(run, step)
                done = step + 1
                logging = step % cfg.log_every == 0 or done == cfg.steps
                evaluating = bool(cfg.eval_every) and done % cfg.eval_every == 0
                saving = bool(cfg.checkpoint_every) and (done % cfg.checkpoint_every == 0 or done == cfg.steps)
                if logging or evaluating or saving:
                    losses = self._check(run, step)
                    if logging:
                        self._record(run, {"step": step, **{f"loss/{k}": v for k, v in losses.items()},
                                           "seconds": time.perf_counter() - start})
                        if progress is not None:
                            progress.set_postfix({k: f"{v:.4g}" for k, v in losses.items()}, refresh=False)
                if evaluating:
                    self._evaluate(run, data, done)
                if progress is not None:
                    progress.update(1)
                if saving:
                    self._checkpoint(run, done)
            if progress is not None:
                progress.close()
            if run.ema is not None:
                run.ema.copy_to(model)
        run.history.seconds = time.perf_counter() - start
        run.history.prepare_seconds = prepare_seconds
        run.losses.clear()  # the players' DDPs hold the process group: released before it is destroyed
        dist.close()
        return run.history

    def _step(self, run: "_Run", step: int) -> None:
        """One training iteration: every player due at ``step`` takes its ``repeats`` optimiser steps, then the
        EMA averages the weights in. Nothing here reads a value back from the device."""
        cfg, k = self.config, self.config.accumulate
        low = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(cfg.precision)
        lr_scale = self._lr_scale(step)
        for index, (player, optimizer, scaler, compute) in enumerate(zip(run.players, run.optimizers, run.scalers,
                                                                         run.losses)):
            if step % player.every:
                continue
            for _ in range(player.repeats):
                total = None
                for micro in range(k):
                    batch = _to_device(next(run.stream), run.device)
                    if cfg.channels_last:
                        batch = channels_last_batch(batch)
                    last = micro == k - 1
                    with (contextlib.nullcontext() if last else run.dist.no_sync(compute)), \
                            torch.autocast(run.device.type, dtype=low, enabled=low is not None):
                        loss = compute(batch, run.generator)
                    if micro == 0:  # after the forward, not before: fewer page faults (docs/benchmarks/engine.md)
                        optimizer.zero_grad(set_to_none=True)
                    loss = loss.to(torch.promote_types(loss.dtype, torch.float32))
                    backward = scaler.scale(loss / k).backward
                    if last:
                        run.dist.average(backward)  # DDP averages the accumulated gradients over ranks
                    else:
                        backward()
                    total = loss.detach() if total is None else total + loss.detach()
                if run.dist.enabled and not cfg.find_unused_parameters:
                    _check_reached(player, step)
                if cfg.grad_clip is not None:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(player.parameters, cfg.grad_clip)
                for group in optimizer.param_groups:
                    group["lr"] = group["base_lr"] * lr_scale
                scaler.step(optimizer)
                scaler.update()
                mean = total / k
                run.running[player.name] = mean
                run.flags[index].logical_or_(mean.isfinite().logical_not_())
        if run.ema is not None:
            run.ema.update(step + 1)  # a function of the step alone: resume is exact

    def _check(self, run: "_Run", step: int) -> dict[str, float]:
        """The players' latest losses, averaged over ranks, read from the device in one transfer together with
        the NaN/Inf flags raised since the last check; a raised flag ends training here."""
        names = list(run.running)
        values = run.dist.mean(torch.cat([*(run.running[n].double().reshape(1) for n in names),
                                          run.flags.double()])).tolist()
        for player, flag in zip(run.players, values[len(names):]):
            if flag > 0:
                raise FloatingPointError(f"training diverged: {player.name} loss was NaN or Inf at a step in "
                                         f"{run.checked}..{step} (losses are checked when logging, every "
                                         f"train.log_every = {self.config.log_every} steps, evaluating and "
                                         "checkpointing); try a smaller train.lr")
        run.checked = step + 1
        return dict(zip(names, values[:len(names)]))

    def _record(self, run: "_Run", record: dict[str, Any]) -> None:
        run.history.records.append(record)
        if run.log is not None:
            run.log.append(record)

    # -- evaluation ----------------------------------------------------------------------------------
    def _evaluate(self, run: "_Run", data: Dataset, step: int) -> None:
        """Run the evaluator with the EMA weights on rank 0 (sampling consumes no training randomness)."""
        if not run.dist.is_main:
            return
        with _SwapIn(self.model, run.ema):
            metrics = (self.evaluate or self._default_evaluate)(self.model, step)
        self._record(run, {"step": step, **{f"eval/{k}": float(v) for k, v in metrics.items()}})

    def _default_evaluate(self, model: nn.Module, step: int) -> dict[str, float]:
        """Sliced W2 of ``eval_samples`` samples (seed 0, the config's sampling steps) to the test split;
        the samples are saved as ``snapshots/step_<k>.npy`` in the run folder with their picture
        ``step_<k>.png`` (an image grid, or a scatter over the data)."""
        from diffflow_core.metrics import sliced_wasserstein

        if not hasattr(model, "sample"):
            raise ConfigError("train.eval_every: the default evaluation samples the model; pass evaluate=")
        samples = model.sample(self.eval_samples, seed=0).x.detach().cpu()
        if self.out_dir is not None:
            import numpy as np

            folder = self.out_dir / "snapshots"
            folder.mkdir(parents=True, exist_ok=True)
            np.save(folder / f"step_{step:07d}.npy", samples.float().numpy())
            from diffflow_core.evaluation import draw_snapshot

            draw_snapshot(model, samples, folder / f"step_{step:07d}.png", title=f"step {step}")
        test = model.data.test if getattr(model, "data", None) is not None else None
        if test is None:
            return {}
        n = min(samples.shape[0], test.shape[0])
        return {"sliced_w2": sliced_wasserstein(samples[:n].flatten(1).float(), test[:n].flatten(1).float())}

    # -- checkpoints ---------------------------------------------------------------------------------
    def _checkpoint(self, run: "_Run", step: int) -> None:
        """Atomically write ``out_dir/checkpoint.pt``: a loadable model (EMA weights) plus the training state."""
        from diffflow_core.checkpoint import atomic_save, model_payload

        dist, model = run.dist, self.model
        rng = dist.gather({"torch": torch.get_rng_state(), "stream": run.stream.state_dict(),
                           "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []})
        if not dist.is_main:
            dist.barrier()
            return
        raw = {k: v.detach().clone() for k, v in model.state_dict().items()}
        with _SwapIn(model, run.ema):
            payload = model_payload(model)
        payload["train_state"] = {
            "step": step, "world_size": dist.world, "raw_state_dict": raw,
            "optimizers": [o.state_dict() for o in run.optimizers],
            "scalers": [s.state_dict() for s in run.scalers],
            "ema": run.ema.shadow if run.ema is not None else None, "rng": rng, "history": run.history.records,
        }
        atomic_save(payload, self.out_dir / CHECKPOINT)
        dist.barrier()

    def _restore(self, run: "_Run") -> int:
        """Load the checkpoint's training state into ``run`` and the model; returns its step."""
        from diffflow_core.checkpoint import load_state, read_checkpoint

        dist, ema = run.dist, run.ema
        payload = read_checkpoint(self.resume, map_location="cpu")
        state = payload.get("train_state")
        if state is None:
            raise CheckpointError(f"resume: {self.resume} holds a model but no training state")
        if int(state["step"]) > self.config.steps:
            raise ConfigError(f"train.steps: {self.config.steps} is below the step of {self.resume} "
                              f"({state['step']}); a resumed run can only continue to more steps")
        if state["world_size"] != dist.world:
            raise CheckpointError(f"resume: {self.resume} was written by {state['world_size']} process(es), "
                                  f"this run has {dist.world}")
        load_state(self.model, state["raw_state_dict"], str(self.resume))
        if len(state["optimizers"]) != len(run.optimizers):
            raise CheckpointError(f"resume: {self.resume} has {len(state['optimizers'])} optimiser(s), "
                                  f"this objective has {len(run.optimizers)}")
        for optimizer, saved in zip(run.optimizers, state["optimizers"]):
            base_lrs = [group["base_lr"] for group in optimizer.param_groups]
            optimizer.load_state_dict(saved)
            for group, base_lr in zip(optimizer.param_groups, base_lrs):  # the config's rates, old checkpoints too
                group["base_lr"] = base_lr
        for scaler, saved in zip(run.scalers, state.get("scalers") or []):  # float16's loss scales
            if saved:
                scaler.load_state_dict(saved)
        if ema is not None and state["ema"] is not None:
            for key, value in state["ema"].items():
                if key in ema.shadow:  # checkpoints from before frozen parameters were skipped hold them too
                    ema.shadow[key].copy_(value)
        elif ema is not None:  # the run so far had no EMA: average from the restored weights, not the initial ones
            ema.reset()
        mine = state["rng"][dist.rank]
        torch.set_rng_state(mine["torch"])
        if mine["cuda"]:
            torch.cuda.set_rng_state_all(mine["cuda"])
        run.stream.load_state_dict(mine["stream"])
        run.history.records.extend(state["history"])
        return int(state["step"])


@attrs.define(eq=False)
class _Run:
    """The state of one ``fit``: what it trains, with what, and what it has logged and not yet checked."""

    dist: DistContext
    device: torch.device
    players: list[Player]
    optimizers: list[torch.optim.Optimizer]
    #: one per player; disabled (a pass-through) unless ``train.precision`` is float16
    scalers: list[torch.amp.GradScaler]
    ema: EMA | None
    stream: BatchStream | LoaderStream
    generator: torch.Generator
    #: per player: whether a loss was NaN/Inf since the last check (on the device)
    flags: Tensor
    #: per player: what computes its loss (the loss itself, or its DDP under torchrun)
    losses: list[Callable[[Batch, torch.Generator], Tensor]] = attrs.Factory(list)
    #: per player name: the mean loss of its last optimiser step (on the device)
    running: dict[str, Tensor] = attrs.Factory(dict)
    history: History = attrs.Factory(History)
    log: MetricLog | None = None
    #: the first step the next check covers
    checked: int = 0


def _to_device(batch: Batch, device: torch.device) -> Batch:
    """``batch`` on ``device``; from the CPU to a GPU through pinned memory, without waiting for the copy (a plain
    copy from pageable memory would make the host wait for the GPU every step)."""
    if device.type != "cuda" or batch.x.device.type != "cpu":
        return batch.to(device)
    y = None if batch.y is None else batch.y.pin_memory().to(device, non_blocking=True)
    return Batch(batch.x.pin_memory().to(device, non_blocking=True), y)


def _check_reached(player: Player, step: int) -> None:
    """Under DDP without ``find_unused_parameters`` every parameter of a player must get a gradient: DDP would
    otherwise wait for it and average none of its bucket. A host-side check of the ``grad`` fields (no device
    transfer), so the mistake is one line naming the player instead of a hang or a later internal error."""
    missing = sum(p.grad is None for p in player.parameters)
    if missing:
        raise ConfigError(f"train.find_unused_parameters: player {player.name!r} left {missing} of its "
                          f"{len(player.parameters)} parameters without a gradient at step {step}; under torchrun "
                          "expected every parameter in its loss, or set find_unused_parameters = true")


def _fusable(params: list[Tensor]) -> bool | None:
    """True when ``torch.optim.Adam(fused=True)`` accepts ``params``; None (torch's default) otherwise."""
    ok = bool(params) and all(p.dtype.is_floating_point and p.device.type in ("cpu", "cuda") for p in params)
    return True if ok else None
