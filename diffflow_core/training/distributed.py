"""Data-parallel training under ``torchrun`` with ``torch.distributed`` (gloo on CPU, nccl on CUDA).

Each rank trains on its own shard of the data with its own random stream; after every backward pass the
gradients (and the loss, for logging) are averaged across ranks in one flat all-reduce, so every rank takes
the same optimiser step and the parameters stay identical. Rank 0 alone writes logs and checkpoints.
"""
from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["DistContext"]


class DistContext:
    """Rank, world size and the collective operations the trainer needs; a no-op in a single process."""

    def __init__(self) -> None:
        import torch.distributed as dist

        self.dist = dist
        world = int(os.environ.get("WORLD_SIZE", "1"))
        self.owns_group = False
        if world > 1 and dist.is_available() and not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            dist.init_process_group(backend=backend)
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

    def broadcast_module(self, module: nn.Module) -> None:
        """Make every rank start from rank 0's weights and buffers."""
        if not self.enabled:
            return
        with torch.no_grad():
            for tensor in module.state_dict().values():
                self.dist.broadcast(tensor, src=0)

    def average(self, parameters: list[nn.Parameter], loss: Tensor) -> Tensor:
        """Average the gradients of ``parameters`` and ``loss`` over ranks in one flat all-reduce."""
        if not self.enabled:
            return loss
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
        flat = torch.cat([g.reshape(-1) for g in grads] + [loss.detach().reshape(1).to(grads[0].dtype)])
        self.dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for p, g in zip(parameters, grads):
            n = g.numel()
            if p.grad is None:
                p.grad = flat[offset:offset + n].view_as(p).clone()
            else:
                p.grad.copy_(flat[offset:offset + n].view_as(p))
            offset += n
        return flat[-1]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (in rank order) on every rank."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world
        self.dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.enabled:
            self.dist.barrier()

    def close(self) -> None:
        if self.owns_group:
            self.dist.destroy_process_group()
