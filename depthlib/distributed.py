"""Process-group helpers: who am I, and do all processes agree?

The training loop runs unchanged in one process or under ``torchrun`` (DistributedDataParallel).
These helpers answer the few questions the loop asks either way: this process's rank and the world
size, whether it is the one that writes files and draws progress bars (rank 0), the plain model
inside a DDP wrapper (checkpoints store its keys, without ``module.``), and whether any process
wants to stop (so every rank leaves the loop at the same step instead of hanging in a collective).
Without an initialised process group they all degrade to the single-process answer.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "any_rank",
    "barrier",
    "is_distributed",
    "is_main_process",
    "rank",
    "unwrap_model",
    "world_size",
]


def is_distributed() -> bool:
    """True inside an initialised ``torch.distributed`` process group."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's global rank (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """The number of training processes (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """Rank 0: the only process that writes logs, checkpoints, figures and progress bars."""
    return rank() == 0


def barrier() -> None:
    """Wait for every rank (a no-op in a single process)."""
    if is_distributed():
        dist.barrier()


def any_rank(flag: bool, device: torch.device | str = "cpu") -> bool:
    """True when ``flag`` is true on at least one rank.

    Used for decisions that must be collective: a NaN loss, a stop signal or an exhausted time
    budget seen by one rank must stop all of them at the same step, or the others would block
    forever in the next gradient all-reduce. ``device`` must suit the backend (cuda for nccl).
    """
    if not is_distributed():
        return bool(flag)
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel/DataParallel wrapper (else ``model`` itself)."""
    wrappers = (nn.parallel.DistributedDataParallel, nn.DataParallel)
    while isinstance(model, wrappers):
        model = model.module
    return model
