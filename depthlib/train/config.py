"""What a training run is given besides its settings, and what it returns.

A :class:`Task` says how a batch becomes a loss (and, if it wants, how to validate); a
:class:`Loader` gives the batches of any epoch from any position in it, which is what makes a
resumed run see the same batches. The settings are :class:`depthlib.profiles.TrainConfig`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from depthlib.errors import DepthlibError

__all__ = ["Loader", "Task", "TrainResult", "TrainingDiverged"]


class TrainingDiverged(DepthlibError, FloatingPointError):
    """A loss or gradient became NaN/Inf; the message names the step and the last good checkpoint."""


class Task(ABC):
    """What a kind of training provides. The two hooks run on rank 0 only, after every epoch
    (``epoch`` counts from 1); by default they do nothing."""

    @abstractmethod
    def training_step(
        self, model: nn.Module, batch: Any
    ) -> torch.Tensor | tuple[torch.Tensor, Mapping[str, float]]:
        """The scalar loss of one batch (already on the device), optionally with extra scalars
        to log (averaged over the epoch, logged as ``train_<name>``)."""

    def validate(self, model: nn.Module, epoch: int) -> Mapping[str, float]:
        """Metrics of the model, logged as ``val_<name>``."""
        return {}

    def on_epoch_end(self, model: nn.Module, epoch: int, row: Mapping) -> Mapping | None:
        """Figures, schedules; a returned mapping joins the epoch's log row. Runs before the
        checkpoint is written, so random numbers it draws are part of the saved RNG state."""
        return None


@runtime_checkable
class Loader(Protocol):
    """A batch source whose order is a function of (seed, epoch) only
    (:mod:`depthlib.train.batches` has two)."""

    def __len__(self) -> int:
        """Batches per epoch (on this rank)."""
        ...

    def set_epoch(self, epoch: int) -> None:
        """The epoch (from 0) the next iteration yields."""
        ...

    def skip_batches(self, count: int) -> None:
        """Start the next iteration at batch ``count`` of the epoch, without loading the others."""
        ...

    def __iter__(self) -> Iterator: ...


@dataclass
class TrainResult:
    """What :func:`fit` returns. ``stop_reason``: completed, already_complete, time_budget or
    interrupted (``interrupted`` is True only for a signal)."""

    history: list[dict]
    final_metrics: dict
    step: int
    epoch: int
    stop_reason: str
    elapsed_s: float
    out_dir: Path | None = None
    checkpoint: Path | None = None
    best_checkpoint: Path | None = None

    @property
    def interrupted(self) -> bool:
        return self.stop_reason == "interrupted"
