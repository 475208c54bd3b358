"""The one training loop of depthlib, shared by SparK pretraining and UNet++ fine-tuning.

What differs between the two is a :class:`Task`: how a batch becomes a loss, and optionally how
the model is validated at the end of an epoch. Everything else lives here once: AdamW with
decay-free norms/biases, warmup + cosine stepped per iteration, gradient clipping, a NaN/Inf
guard, tqdm progress bars (terminal and notebook), ``log.jsonl``/``log.csv`` with one row per
epoch, a checkpoint every epoch (see :mod:`depthlib.checkpoint`), exact resumption, a time budget
and clean stopping on SIGINT/SIGTERM.

Stopping: on the first SIGINT/SIGTERM (Ctrl-C, "interrupt kernel" in Jupyter, ``kill``) the
current step finishes, a checkpoint is written and :func:`fit` *returns* a result with
``interrupted=True`` (a notebook cell ends normally; the CLI turns it into exit status 130). A
second Ctrl-C aborts at once with ``KeyboardInterrupt``; the previous checkpoint stays intact.

Exact resumption: the checkpoint holds weights, optimizer, schedule, the RNG states of torch,
numpy and python, step, epoch and the position inside the epoch. Batch order must be a function
of (seed, epoch) (use :func:`depthlib.batching.epoch_loader`), so a resumed run sees the same
batches; RNG states are restored after skipping the batches already seen.

Multi-process (torchrun/DDP): under ``torchrun`` :func:`fit` joins the process group itself
(:func:`depthlib.distributed.init_distributed`), wraps the model in DistributedDataParallel
(BatchNorms synchronised with ``TrainConfig.sync_batchnorm``) and expects each rank's loader to
hold its shard (``epoch_loader`` shards by rank; ``set_epoch`` is called every epoch). The
effective batch is the per-process batch × world size; ``lr`` is used as given (no automatic
scaling). The logged loss is the mean over ranks (the global batch's). Only rank 0 writes files,
draws bars and runs ``validate``/``on_epoch_end``; stop decisions are agreed by all ranks
(:func:`depthlib.distributed.any_rank`). Checkpoints hold the unwrapped weights and rank 0's
optimizer state (equal on all ranks), so any world size can resume them: the position is then
converted to samples seen (batch_in_epoch × old world size / new world size, and the step count
and schedule follow the new steps per epoch). Leaving the group is the caller's business
(:func:`depthlib.distributed.cleanup_distributed`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn
from tqdm.auto import tqdm

from depthlib import distributed as dist
from depthlib.atomic import ensure_writable_dir
from depthlib.batching import (
    batch_size_of,
    check_sharded,
    epoch_batches,
    epoch_loader,
    steps_per_epoch,
    to_device,
)
from depthlib.checkpoint import CheckpointStore, load_checkpoint, model_spec, model_weights
from depthlib.errors import ConfigError, DepthlibError
from depthlib.interrupt import StopSignals
from depthlib.optim import DEFAULT_NO_DECAY_KEYS, WarmupCosine, make_optimizer
from depthlib.rng import capture_rng_state, restore_rng_state, seed_everything
from depthlib.run_log import RunLog, accumulate, epoch_row, summary_line

__all__ = [
    "Task",
    "TrainConfig",
    "TrainResult",
    "TrainingDiverged",
    "epoch_loader",
    "fit",
    "resolve_device",
    "seed_everything",
]


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
        ]
        for name, rule, ok in rules:
            if not ok:
                raise ConfigError(
                    f"TrainConfig.{name} must be {rule}, got {getattr(self, name)!r}. "
                    "Fix the value (or the profile) and rerun."
                )

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


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → cuda when available, else cpu."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _unpack(out: Any) -> tuple[torch.Tensor, Mapping[str, Any]]:
    loss, logs = (out[0], out[1]) if isinstance(out, tuple) else (out, {})
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise TypeError("Task.training_step must return a scalar loss tensor, or (loss, dict)")
    return loss, logs or {}


def _note_changes(say: Callable[[str], None], saved: Mapping, config: TrainConfig) -> None:
    current = dataclasses.asdict(config)
    changed = [
        f"{k} {saved[k]!r} → {current[k]!r}"
        for k in current
        if k in saved and _plain(saved[k]) != _plain(current[k])
    ]
    if changed:
        say("Resuming with changed settings: " + ", ".join(changed) + ".")


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value


class _Run:
    """The mutable state of one :func:`fit` call; the methods are the phases of the loop."""

    def __init__(
        self, model, task, loader, config, run_dir, device, progress, run_config, model_config
    ):
        self.model, self.task, self.loader, self.config = model, task, loader, config
        self.run_dir, self.device = run_dir, device
        self.main = dist.is_main_process()
        self.t_start = time.monotonic()
        self.store = CheckpointStore(run_dir / "checkpoints", config.keep_last) if run_dir else None
        self.log = RunLog(run_dir if self.main else None)
        self.progress = progress and self.main
        self.run_config, self.model_config = dict(run_config or {}), model_config

        model.to(device)
        self.plain = dist.unwrap_model(model)
        self.optimizer = make_optimizer(
            model, config.lr, config.weight_decay, config.betas, config.no_decay_keys
        )
        self.params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.steps_per_epoch = steps_per_epoch(loader, config.steps_per_epoch)
        total = config.epochs * self.steps_per_epoch
        self.total_steps = min(total, config.max_steps) if config.max_steps else total
        self.scheduler = WarmupCosine(
            self.optimizer,
            total_steps=self.total_steps,
            warmup_steps=round(config.warmup * self.steps_per_epoch),
            min_ratio=config.min_lr_ratio,
            weight_decay_end=config.weight_decay_end,
        )
        self.step = self.epoch = self.batch_in_epoch = 0  # epoch = epochs finished
        self.history: list[dict] = []
        self.metrics: dict = {}
        self.best_value: float | None = None
        self.epoch_stats: dict = {}
        self.rng_to_restore: dict | None = None
        self.last_ckpt = self.store.latest() if self.store else None

    # ------------------------------------------------------------------ messages and results
    def say(self, message: str) -> None:
        if self.main:
            tqdm.write(message)

    def result(self, stop_reason: str) -> TrainResult:
        return TrainResult(
            history=self.history,
            final_metrics=self.metrics,
            step=self.step,
            epoch=self.epoch,
            stop_reason=stop_reason,
            elapsed_s=time.monotonic() - self.t_start,
            out_dir=self.run_dir,
            checkpoint=self.last_ckpt,
            best_checkpoint=self.store.best() if self.store else None,
            log_paths=self.log.paths,
        )

    @property
    def finished(self) -> bool:
        return self.step >= self.total_steps or self.epoch >= self.config.epochs

    # ------------------------------------------------------------------ start: fresh or resumed
    def start(self, resume: bool, overwrite: bool) -> None:
        if resume and self.last_ckpt is None:
            self.say(f"No checkpoint in {self.run_dir}: starting a fresh run there.")
        elif resume:
            self._load(self.last_ckpt)
            return
        elif self.last_ckpt is not None:
            if not overwrite:
                raise ConfigError(
                    f"{self.run_dir} already holds a training run (latest checkpoint "
                    f"{self.last_ckpt.name}). Continue it with resume=True (--resume), choose "
                    "another output folder, or pass overwrite=True to delete it and start over."
                )
            if self.main:
                self.store.clear()
            self.last_ckpt = None
        self.log.rewrite([])  # logs without a checkpoint belong to a run that never saved

    def _load(self, path: Path) -> None:
        ckpt = load_checkpoint(path)
        ckpt.restore_model(self.plain)
        state = ckpt.state
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError) as err:
            raise ConfigError(
                f"The optimizer state in {path} does not fit this model's parameters ({err}). "
                "Resume with the same model and settings, or start a new run."
            ) from err
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.epoch = int(state["step"]), int(state["epoch"])
        self.batch_in_epoch = int(state["batch_in_epoch"])
        self.best_value = state.get("best")
        self.epoch_stats = dict(state.get("epoch_stats") or {})
        self.history = list(ckpt.meta.get("history", []))
        self.metrics = dict(ckpt.meta.get("metrics", {}))
        saved_world = int(state.get("world_size", 1))
        if saved_world != dist.world_size() and self.batch_in_epoch:
            # Same number of samples seen, counted in this world size's batches.
            self.batch_in_epoch = self.batch_in_epoch * saved_world // dist.world_size()
            self.say(f"Checkpoint from {saved_world} processes: mid-epoch position rescaled.")
        saved_steps = int(state.get("steps_per_epoch", self.steps_per_epoch))
        if saved_steps != self.steps_per_epoch:  # another world size or batch size
            self.step = self.epoch * self.steps_per_epoch + self.batch_in_epoch
            self.scheduler.load_state_dict({"step": self.step})
            self.say(
                f"Checkpoint made with {saved_steps} steps per epoch, now {self.steps_per_epoch}: "
                f"continuing at step {self.step} of {self.total_steps}."
            )
        # Only rank 0's RNG state is saved; other ranks keep their own seeding (see issue 7).
        self.rng_to_restore = state["rng"] if dist.rank() == 0 else None
        self.log.rewrite(self.history)  # drop rows a killed run wrote after this checkpoint
        _note_changes(self.say, ckpt.meta.get("config", {}), self.config)

    # ------------------------------------------------------------------ checkpoints
    def save(self, name: str) -> None:
        if self.store is None or not self.main:
            return
        is_best = False
        key = self.config.best_metric
        if key and self.batch_in_epoch == 0 and key in self.metrics:
            value = float(self.metrics[key])
            if (
                self.best_value is None
                or (self.config.best_mode == "min" and value < self.best_value)
                or (self.config.best_mode == "max" and value > self.best_value)
            ):
                self.best_value, is_best = value, True
        state = {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": capture_rng_state(),
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "best": self.best_value,
            "epoch_stats": self.epoch_stats,
            "world_size": dist.world_size(),
            "steps_per_epoch": self.steps_per_epoch,
        }
        meta = {
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "finished": self.finished,
            "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "elapsed_s": round(time.monotonic() - self.t_start, 3),
            "config": dataclasses.asdict(self.config),
            "run_config": self.run_config,
            "metrics": self.metrics,
            "history": self.history,
            "model": model_spec(self.plain, self.model_config),
            "world_size": dist.world_size(),
            "torch_version": torch.__version__,
        }
        weights = model_weights(self.plain)
        self.last_ckpt = self.store.save(name, weights, state, meta, best=is_best)

    # ------------------------------------------------------------------ the loop
    def _diverged(self, what: str, value: float) -> TrainingDiverged:
        last = (
            f"the last good checkpoint is {self.last_ckpt}"
            if self.last_ckpt
            else "no checkpoint had been written yet"
        )
        return TrainingDiverged(
            f"Non-finite {what} ({value}) at step {self.step + 1} (epoch {self.epoch + 1}, batch "
            f"{self.batch_in_epoch + 1} of {self.steps_per_epoch}). The weights were not updated "
            f"and nothing was saved for this step; {last}. Check the data for NaN/Inf values "
            "(e.g. depth maps), lower the learning rate or set grad_clip, then rerun with "
            "resume=True."
        )

    def _train_step(self, batch: Any) -> float:
        loss, logs = _unpack(self.task.training_step(self.model, to_device(batch, self.device)))
        keys = sorted(logs)
        # The global batch's loss and logs (one all-reduce; NaN anywhere → NaN on every rank).
        loss_value, *values = dist.mean_over_ranks(
            [
                float(v.detach()) if isinstance(v, torch.Tensor) else float(v)
                for v in [loss, *(logs[k] for k in keys)]
            ],
            self.device,
        )
        logs = dict(zip(keys, values, strict=True))
        if not math.isfinite(loss_value):
            raise self._diverged("loss", loss_value)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = float(torch.nn.utils.clip_grad_norm_(self.params, self.config.grad_clip or math.inf))
        if not math.isfinite(norm):  # gradients are all-reduced under DDP: same on every rank
            raise self._diverged("gradient norm", norm)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        self.batch_in_epoch += 1
        samples = batch_size_of(batch)
        accumulate(self.epoch_stats, loss_value, logs, samples and samples * dist.world_size())
        return loss_value

    def _should_stop(self, signals: StopSignals) -> str | None:
        budget = self.config.time_budget_s
        over = budget is not None and time.monotonic() - self.t_start > budget
        if not dist.any_rank(over or signals.reason is not None, self.device):
            return None
        return "interrupted" if signals.reason else "time_budget"

    def _end_epoch(self) -> dict:
        self.epoch += 1
        self.batch_in_epoch = 0
        if self.main and hasattr(self.task, "validate"):
            self.metrics = dict(self.task.validate(self.plain, self.epoch) or {})
        row = epoch_row(
            self.epoch,
            self.step,
            self.scheduler.lr,
            self.epoch_stats,
            self.metrics,
            time.monotonic() - self.t_start,
        )
        if self.main and hasattr(self.task, "on_epoch_end"):
            row.update(self.task.on_epoch_end(self.plain, self.epoch, row) or {})
        self.model.train()
        self.history.append(row)
        self.epoch_stats = {}
        self.log.append(row, self.history)
        self.save(CheckpointStore.epoch_name(self.epoch))
        return row

    def run(self, signals: StopSignals) -> str:
        bar = tqdm(
            total=self.total_steps,
            initial=self.step,
            disable=not self.progress,
            unit="step",
            dynamic_ncols=True,
        )
        window: list[float] = []
        try:
            while not self.finished:
                if dist.any_rank(signals.reason is not None, self.device):
                    return "interrupted"  # the epoch checkpoint was just written
                bar.set_description(f"epoch {self.epoch + 1}/{self.config.epochs}")
                batches = epoch_batches(
                    self.loader, self.epoch, self.batch_in_epoch, self.config.steps_per_epoch
                )
                if self.rng_to_restore is not None:  # after skipping, before the first new batch
                    restore_rng_state(self.rng_to_restore)
                    self.rng_to_restore = None
                self.model.train()
                epoch_t0 = time.monotonic()
                stop = None
                for batch in batches:
                    window.append(self._train_step(batch))
                    bar.update(1)
                    if self.step % self.config.log_every == 0 or self.finished:
                        mean = sum(window) / len(window)
                        bar.set_postfix(loss=f"{mean:.4f}", lr=f"{self.scheduler.lr:.2e}")
                        window.clear()
                    if self.step >= self.total_steps:
                        break
                    stop = self._should_stop(signals)
                    if stop:
                        break
                self.epoch_stats["time_s"] = (
                    self.epoch_stats.get("time_s", 0.0) + time.monotonic() - epoch_t0
                )
                if stop and self.batch_in_epoch < self.steps_per_epoch:
                    self.save(CheckpointStore.step_name(self.step))
                    return stop
                row = self._end_epoch()
                if self.progress:
                    bar.write(summary_line(row, self.config.epochs))
                if stop:
                    return stop
            return "completed"
        finally:
            bar.close()


def fit(
    model: nn.Module,
    task: Task,
    train_loader: Iterable | Callable[[int], Iterable],
    config: TrainConfig,
    out_dir: str | Path | None = None,
    resume: bool = False,
    device: str | torch.device = "auto",
    progress: bool = True,
    *,
    overwrite: bool = False,
    run_config: Mapping | None = None,
    model_config: Any = None,
) -> TrainResult:
    """Train ``model`` on ``task``; see the module docstring for the guarantees.

    ``train_loader``: an iterable of batches (its own ``set_epoch`` or its sampler's is called
    every epoch) or a function ``epoch -> iterable`` (epoch from 0). ``out_dir``: where
    ``checkpoints/``, ``log.jsonl`` and ``log.csv`` go (None: nothing is written). ``resume``:
    continue from the latest checkpoint there (none → a fresh start, said so; a finished run →
    nothing to do, said so). A used ``out_dir`` without ``resume`` is refused unless
    ``overwrite``. ``run_config`` (profile, data path, ...) and ``model_config`` (how to rebuild
    the model; default: the model's ``config`` attribute) are stored in ``meta.json``.
    Under ``torchrun`` it joins the process group and wraps ``model`` in DDP itself (see the
    module docstring); ``model`` stays the plain module, trained in place.
    """
    if not callable(getattr(task, "training_step", None)):
        raise TypeError("task must have a training_step(model, batch) method")
    run_dir = Path(out_dir).expanduser() if out_dir is not None else None
    if resume and run_dir is None:
        raise ConfigError("resume=True needs out_dir: the folder of the run to continue.")
    placement = dist.init_distributed()  # joins torchrun's process group; else a no-op
    device = resolve_device(device)
    if device.type == "cuda" and device.index is None and dist.is_distributed():
        device = placement.device  # this process's GPU (LOCAL_RANK)
    if run_dir is not None and dist.is_main_process():
        ensure_writable_dir(run_dir)  # fail before any training time is spent
    check_sharded(train_loader, dist.world_size())
    model = dist.prepare_model(model, device, sync_batchnorm=config.sync_batchnorm)
    run = _Run(
        model, task, train_loader, config, run_dir, device, progress, run_config, model_config
    )
    seed_everything(config.seed + dist.rank())
    run.start(resume, overwrite)
    if resume and run.last_ckpt is not None and run.finished:
        run.say(
            f"The run in {run_dir} is already complete (epoch {run.epoch}, step {run.step}); "
            "nothing to do. Raise epochs or max_steps to continue it, or use a new out_dir."
        )
        return run.result("already_complete")
    if run.step:
        run.say(f"Resuming from {run.last_ckpt} at epoch {run.epoch + 1}, step {run.step}.")

    deterministic_before = torch.are_deterministic_algorithms_enabled()
    if config.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with StopSignals() as signals:
            stop_reason = run.run(signals)
    finally:
        torch.use_deterministic_algorithms(deterministic_before)
    if stop_reason == "interrupted":
        run.say(
            f"Stopped by {signals.reason} at step {run.step}; checkpoint: {run.last_ckpt}. "
            "Continue with resume=True (--resume)."
        )
    elif stop_reason == "time_budget":
        run.say(
            f"Time budget of {config.time_budget_s:g} s used up at step {run.step} of "
            f"{run.total_steps}; checkpoint: {run.last_ckpt}. Continue with resume=True."
        )
    return run.result(stop_reason)
