"""Data-parallel training under ``torchrun`` with ``torch.distributed`` (gloo on CPU, nccl on CUDA).

Each rank trains on its own shard of the data with its own random stream. Every player's loss runs through
its own :class:`~torch.nn.parallel.DistributedDataParallel`, whose module is exactly that player's parameters
(:class:`PlayerModule`): DDP averages their gradients across ranks in buckets while the backward pass is still
running, so every rank takes the same optimiser step and the parameters stay identical. A player's loss may run
other players' networks (a GAN's generator step evaluates the discriminator): their parameters belong to another
DDP, whose hooks ignore a backward they did not prepare, and they get no all-reduce here. The model itself is
never wrapped, so module attributes and ``state_dict`` keys are the same as in one process. The logged losses
are averaged across ranks when they are logged. Rank 0 alone writes logs and checkpoints.

Timeouts: a rank waits at most ``DIFFFLOW_DDP_TIMEOUT`` seconds (default :data:`DEFAULT_TIMEOUT`, 5 minutes,
instead of gloo's 30) in a collective for the others. Before each collective every rank records how many it
has entered in the rendezvous store, so the rank that gives up can name the ranks that stopped answering
(:class:`CollectiveTimeout`). The timeout must exceed the longest time one rank works alone: rank 0's
evaluation (``eval_every``) and checkpoint writes.
"""
from __future__ import annotations

import contextlib
import datetime
import functools
import gc
import math
import os
from typing import Any, Callable, ContextManager, TypeVar

import torch
from torch import Tensor, nn

from diffflow_core.errors import ConfigError, DiffflowError
from diffflow_core.interfaces import Batch, Player

__all__ = ["DistContext", "PlayerModule", "CollectiveTimeout", "collective_timeout", "is_main_process"]

#: Seconds a rank waits for the others in a collective unless ``DIFFFLOW_DDP_TIMEOUT`` says otherwise.
DEFAULT_TIMEOUT = 300.0
TIMEOUT_VARIABLE = "DIFFFLOW_DDP_TIMEOUT"
T = TypeVar("T")


class CollectiveTimeout(DiffflowError, RuntimeError):
    """A rank waited longer than the collective timeout for the others (one stalled, hung or died)."""


def collective_timeout() -> float:
    """The collective timeout in seconds: ``DIFFFLOW_DDP_TIMEOUT`` (a positive number) or the default."""
    raw = os.environ.get(TIMEOUT_VARIABLE, "").strip()
    if not raw:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds < math.inf:
        raise ConfigError(f"{TIMEOUT_VARIABLE}: expected a positive number of seconds, got {raw!r}")
    return seconds


def is_main_process() -> bool:
    """Whether this process is rank 0 of a ``torchrun`` launch (or not launched by it): the one that reports."""
    return int(os.environ.get("RANK", "0")) == 0


class DistContext:
    """Rank, world size and the collective operations the trainer needs; a no-op in a single process."""

    def __init__(self) -> None:
        import torch.distributed as dist

        self.dist = dist
        world = int(os.environ.get("WORLD_SIZE", "1"))
        self.owns_group, self.store, self.entered = False, None, 0
        if world > 1 and dist.is_available() and not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            self.timeout = collective_timeout()
            timeout = datetime.timedelta(seconds=self.timeout)
            rank = int(os.environ["RANK"])
            store, _, _ = next(dist.rendezvous("env://", rank, world, timeout=timeout))
            dist.init_process_group(backend=backend, store=store, rank=rank, world_size=world, timeout=timeout)
            # one counter per rank and group; a later group in the same launch (a second fit) gets new keys
            generation = (store.add("diffflow/joined", 1) - 1) // world
            self.store = dist.PrefixStore(f"diffflow/{generation}/", store)
            self.owns_group = True
        self.enabled = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        self.rank = dist.get_rank() if self.enabled else 0
        self.world = dist.get_world_size() if self.enabled else 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, default: torch.device) -> torch.device:
        """Under nccl each rank drives the GPU of its local rank."""
        if self.enabled and torch.cuda.is_available():
            local = int(os.environ.get("LOCAL_RANK", self.rank))
            torch.cuda.set_device(local)
            return torch.device("cuda", local)
        return default

    def _collective(self, name: str, op: Callable[[], T]) -> T:
        """Run the collective ``op`` after recording that this rank entered it; a timeout in it becomes a
        :class:`CollectiveTimeout` naming the ranks that never arrived (on groups this context created)."""
        self.entered += 1
        if self.store is not None:
            self.store.set(str(self.rank), str(self.entered))
        try:
            return op()
        except RuntimeError as exc:
            if self.store is None or "timed out" not in str(exc).lower():
                raise
            raise CollectiveTimeout(f"distributed: rank {self.rank} waited {self.timeout:g} s in {name} (collective "
                                    f"#{self.entered}) and gave up: {self._absent()}; if a rank is only slow "
                                    f"(evaluation, checkpoint writes), raise {TIMEOUT_VARIABLE} (seconds, "
                                    f"default {DEFAULT_TIMEOUT:g})") from None

    def _absent(self) -> str:
        """Which ranks have not entered the collective this rank is in, from the counts in the store."""
        behind = []
        try:
            for rank in range(self.world):
                count = int(self.store.get(str(rank))) if self.store.check([str(rank)]) else 0
                if count < self.entered:
                    behind.append(f"rank {rank} (stopped at collective #{count})")
        except Exception as exc:  # noqa: BLE001 - the store may be gone with the launcher
            return f"the other ranks could not be asked ({type(exc).__name__}: {exc})"
        if not behind:
            return "every rank entered it, so one died or the network failed inside it"
        return ", ".join(behind) + " stopped answering"

    def broadcast_module(self, module: nn.Module) -> None:
        """Make every rank start from rank 0's weights and buffers."""
        if not self.enabled:
            return
        with torch.no_grad():
            for tensor in module.state_dict().values():
                self._collective("broadcast", functools.partial(self.dist.broadcast, tensor, src=0))

    def data_parallel(self, player: Player, find_unused: bool) -> Callable[[Batch, torch.Generator], Tensor]:
        """What computes ``player``'s loss: the loss itself in one process, else a DDP over the player's
        parameters whose backward averages their gradients across ranks. ``find_unused`` (the config's
        ``find_unused_parameters``) lets DDP search each step's graph for parameters the loss did not reach."""
        if not self.enabled:
            return player.loss
        from torch.nn.parallel import DistributedDataParallel

        module = PlayerModule(player)  # DDP checks the shapes and broadcasts rank 0's values: collectives
        return self._collective("broadcast",
                                lambda: DistributedDataParallel(module, find_unused_parameters=find_unused))

    @staticmethod
    def no_sync(loss: Callable[..., Tensor]) -> ContextManager:
        """Context for a forward pass whose gradients only accumulate on this rank (the micro-batches of gradient
        accumulation before the last): DDP's ``no_sync``, nothing in one process."""
        from torch.nn.parallel import DistributedDataParallel

        return loss.no_sync() if isinstance(loss, DistributedDataParallel) else contextlib.nullcontext()

    def average(self, backward: Callable[[], None]) -> None:
        """Run ``backward``, during which DDP averages the gradients across ranks, as one recorded collective (a
        timeout in it names the ranks that never arrived); in one process just ``backward()``."""
        if self.enabled:
            self._collective("all-reduce", backward)
        else:
            backward()

    def mean(self, values: Tensor) -> Tensor:
        """The elementwise mean of ``values`` over ranks (the logged losses), in one all-reduce."""
        if not self.enabled:
            return values
        values = values.clone()
        self._collective("all-reduce", lambda: self.dist.all_reduce(values))
        return values / self.world

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (in rank order) on every rank."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world
        self._collective("all-gather", lambda: self.dist.all_gather_object(out, obj))
        return out

    def barrier(self) -> None:
        if self.enabled:
            self._collective("barrier", self.dist.barrier)

    def close(self) -> None:
        """Destroy the process group this context created, once every rank got here (a rank that destroyed it
        while another still waited in a collective would abort that one) and no DDP holds it any more."""
        if self.owns_group:
            gc.collect()  # reducers of released DDPs, whose destructors still talk to the group
            self.barrier()
            self.dist.destroy_process_group()


class PlayerModule(nn.Module):
    """A player's parameters, with its loss as the forward: the module a player's DDP wraps. DDP registers its
    gradient hooks on exactly these parameters, wherever in the model they live; the networks the loss calls
    stay where they are."""

    def __init__(self, player: Player) -> None:
        super().__init__()
        self.params = nn.ParameterList(player.parameters)
        self.loss = player.loss

    def forward(self, batch: Batch, generator: torch.Generator | None) -> Tensor:
        return self.loss(batch, generator)
