"""What a training run is given and what it returns: the task protocol, the settings, the result.

A :class:`Task` says how a batch becomes a loss (and optionally how to validate); a
:class:`TrainConfig` holds every task-agnostic setting of :func:`depthlib.train.loop.fit`, checked
when it is built so that a bad value fails before any data is read.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from depthlib.errors import ConfigError, DepthlibError
from depthlib.train.optim import DEFAULT_NO_DECAY_KEYS

__all__ = ["Task", "TrainConfig", "TrainResult", "TrainingDiverged"]


class TrainingDiverged(DepthlibError, FloatingPointError):
    """A loss or gradient became NaN/Inf; the message names the step and the last good checkpoint."""


@runtime_checkable
class Task(Protocol):
    """What a kind of training must provide. Optional hooks, called on rank 0 only after every epoch
    (``epoch`` counts from 1):

    - ``validate(model, epoch) -> Mapping[str, float]``: metrics, logged as ``val_<name>``;
    - ``on_epoch_end(model, epoch, row) -> Mapping | None``: figures, schedules; a returned
      mapping is merged into the epoch's log row. Runs before the checkpoint is written so any
      random numbers it draws are part of the saved RNG state.
    """

    def training_step(
        self, model: nn.Module, batch: Any
    ) -> torch.Tensor | tuple[torch.Tensor, Mapping[str, float]]:
        """The scalar loss of one batch (already on the device), optionally with extra scalars
        to log (averaged over the epoch, logged as ``train_<name>``)."""
        ...


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run (task-agnostic)."""

    epochs: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.01
    weight_decay_end: float | None = None  # cosine-move the decay to this value (SparK)
    warmup: float = 0.0  # epochs, may be fractional
    min_lr_ratio: float = 0.0  # the cosine ends at lr * min_lr_ratio
    grad_clip: float | None = 1.0  # max global gradient norm; None = no clipping
    seed: int = 0
    log_every: int = 10  # steps between progress-bar postfix updates
    keep_last: int = 2  # epoch checkpoints kept (plus the best one)
    max_steps: int | None = None  # planned length cap; the schedule ends there
    time_budget_s: float | None = None  # per fit() call: stop cleanly, with a checkpoint
    steps_per_epoch: int | None = None  # needed only when the data has no len()
    betas: tuple[float, float] = (0.9, 0.999)
    best_metric: str | None = None  # a key of validate()'s metrics, e.g. "abs_rel"
    best_mode: str = "min"
    no_decay_keys: tuple[str, ...] = DEFAULT_NO_DECAY_KEYS
    deterministic: bool = False  # torch.use_deterministic_algorithms(True, warn_only=True)
    sync_batchnorm: bool = False  # multi-process: BatchNorm statistics over all ranks' batches
    accumulate: int = 1  # micro-batches per optimizer step (their gradients add up)

    def __post_init__(self):
        rules = [
            ("epochs", "an integer ≥ 1", isinstance(self.epochs, int) and self.epochs >= 1),
            ("lr", "> 0", self.lr > 0),
            ("weight_decay", "≥ 0", self.weight_decay >= 0),
            ("warmup", "≥ 0 (epochs)", self.warmup >= 0),
            ("min_lr_ratio", "in [0, 1]", 0 <= self.min_lr_ratio <= 1),
            ("grad_clip", "> 0 or None", self.grad_clip is None or self.grad_clip > 0),
            ("log_every", "≥ 1", self.log_every >= 1),
            ("keep_last", "≥ 1", self.keep_last >= 1),
            ("max_steps", "≥ 1 or None", self.max_steps is None or self.max_steps >= 1),
            ("time_budget_s", "> 0 or None", self.time_budget_s is None or self.time_budget_s > 0),
            (
                "steps_per_epoch",
                "≥ 1 or None",
                self.steps_per_epoch is None or self.steps_per_epoch >= 1,
            ),
            ("best_mode", "'min' or 'max'", self.best_mode in ("min", "max")),
            (
                "accumulate",
                "an integer ≥ 1",
                isinstance(self.accumulate, int) and self.accumulate >= 1,
            ),
        ]
        for name, rule, ok in rules:
            if not ok:
                raise ConfigError(
                    f"TrainConfig.{name} must be {rule}, got {getattr(self, name)!r}. "
                    "Fix the value (or the profile) and rerun."
                )

    def changes_from(self, saved: Mapping) -> list[str]:
        """``"lr 0.001 → 0.002"`` for each setting that differs from a checkpoint's config."""
        plain = lambda v: list(v) if isinstance(v, (list, tuple)) else v  # noqa: E731
        now = dataclasses.asdict(self)
        return [
            f"{k} {saved[k]!r} → {now[k]!r}"
            for k in now
            if k in saved and plain(saved[k]) != plain(now[k])
        ]

    @classmethod
    def from_profile(cls, section: Any, **overrides: Any) -> TrainConfig:
        """From a profile's ``finetune``/``pretrain`` section (``warmup_epochs`` → ``warmup``)."""
        names = {"warmup_epochs": "warmup"}
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {}
        for key, value in dataclasses.asdict(section).items():
            key = names.get(key, key)
            if key in fields:
                values[key] = value
        return cls(**(values | overrides))


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
    log_paths: list[Path] = field(default_factory=list)

    @property
    def interrupted(self) -> bool:
        return self.stop_reason == "interrupted"
