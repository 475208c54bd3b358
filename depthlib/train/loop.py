"""The one training loop of depthlib, shared by SparK pretraining and UNet++ fine-tuning.

What differs between the two is a :class:`~depthlib.train.config.Task`: how a batch becomes a
loss, and optionally how the model is validated after an epoch. Everything else lives here once:
AdamW with decay-free norms/biases, warmup + cosine per step, gradient clipping, a NaN/Inf guard,
progress bars, one log row and one checkpoint per epoch, exact resumption, a time budget, and
clean stopping.

Stopping (:class:`~depthlib.train.distributed.StopSignals`): on the first SIGINT/SIGTERM (Ctrl-C, Jupyter's "interrupt
kernel", ``kill``) the current step finishes, a checkpoint is written and :func:`fit` *returns*
with ``interrupted=True``; a second Ctrl-C aborts at once (the last checkpoint stays intact).

Exact resumption: the checkpoint holds weights, optimizer, schedule, RNG states, step, epoch and
the position inside the epoch; batch order is a function of (seed, epoch), and RNG states are
restored after skipping the batches already seen.

Multi-process (torchrun/DDP): :func:`fit` joins the process group, wraps the model in DDP
(BatchNorms synchronised) and expects each rank's loader to hold its shard; ``lr`` is used as
given for the global batch. Only rank 0 writes, draws and validates; stop decisions are agreed by
all ranks; any world size can resume a checkpoint (the position is converted to samples seen).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from depthlib.atomic import ensure_writable_dir
from depthlib.errors import ConfigError
from depthlib.profiles import shown_path
from depthlib.progress import progress_bar, write
from depthlib.train import distributed as dist
from depthlib.train.batches import (
    batch_size_of,
    check_sharded,
    epoch_batches,
    grouped,
    steps_per_epoch,
    to_device,
)
from depthlib.train.checkpoint import CheckpointStore, load_checkpoint, model_spec, model_weights
from depthlib.train.config import Task, TrainConfig, TrainingDiverged, TrainResult
from depthlib.train.optim import WarmupCosine, make_optimizer
from depthlib.train.rng import capture_rng_state, restore_rng_state, seed_everything
from depthlib.train.runlog import RunLog, accumulate, epoch_row, summary_line

__all__ = ["fit"]


def _unpack(out: Any) -> tuple[torch.Tensor, Mapping[str, Any]]:
    loss, logs = (out[0], out[1]) if isinstance(out, tuple) else (out, {})
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise TypeError("Task.training_step must return a scalar loss tensor, or (loss, dict)")
    return loss, logs or {}


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
        micro = steps_per_epoch(
            loader, config.steps_per_epoch and config.steps_per_epoch * config.accumulate
        )
        self.steps_per_epoch = micro // config.accumulate
        if self.steps_per_epoch < 1:
            raise ConfigError(
                f"The loader gives {micro} micro-batches per epoch, fewer than the "
                f"{config.accumulate} that make one step; lower accumulate or use more data."
            )
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
            write(message)

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
            self.say(f"No checkpoint in {shown_path(self.run_dir)}: starting a fresh run there.")
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
        # Only rank 0's RNG state is saved: other ranks keep their own seeding, which is
        # exact for everything drawn from per-batch seeds (masks, augmentation) on every rank.
        self.rng_to_restore = state["rng"] if dist.rank() == 0 else None
        self.log.rewrite(self.history)  # drop rows a killed run wrote after this checkpoint
        changed = self.config.changes_from(ckpt.meta.get("config", {}))
        if changed:
            self.say("Resuming with changed settings: " + ", ".join(changed) + ".")

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
            f"the last good checkpoint is {shown_path(self.last_ckpt)}"
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

    def _train_step(self, group: list) -> float:
        """One optimizer step over ``group``: micro-batches whose gradients accumulate (one
        micro-batch unless ``TrainConfig.accumulate`` > 1), each loss scaled by 1/len(group)."""
        self.optimizer.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        for i, micro in enumerate(group):
            last = i == len(group) - 1
            sync = contextlib.nullcontext() if last or not hasattr(self.model, "no_sync") else (
                self.model.no_sync()  # DDP: all-reduce the gradients once, after the last one
            )  # fmt: skip
            with sync:
                loss, logs = _unpack(
                    self.task.training_step(self.model, to_device(micro, self.device))
                )
                (loss / len(group)).backward()
            for key, value in {"loss": loss, **logs}.items():
                value = float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
                sums[key] = sums.get(key, 0.0) + value / len(group)
        keys = sorted(k for k in sums if k != "loss")
        # The global batch's loss and logs (one all-reduce; NaN anywhere → NaN on every rank).
        loss_value, *values = dist.mean_over_ranks(
            [sums["loss"], *(sums[k] for k in keys)], self.device
        )
        logs = dict(zip(keys, values, strict=True))
        if not math.isfinite(loss_value):
            raise self._diverged("loss", loss_value)
        norm = float(torch.nn.utils.clip_grad_norm_(self.params, self.config.grad_clip or math.inf))
        if not math.isfinite(norm):  # gradients are all-reduced under DDP: same on every rank
            raise self._diverged("gradient norm", norm)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        self.batch_in_epoch += 1
        samples = sum(batch_size_of(micro) or 0 for micro in group)
        accumulate(self.epoch_stats, loss_value, logs, samples and samples * dist.world_size())
        return loss_value

    def _should_stop(self, signals: dist.StopSignals) -> str | None:
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

    def run(self, signals: dist.StopSignals) -> str:
        bar = progress_bar(
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
                acc = self.config.accumulate
                limit = self.config.steps_per_epoch and self.config.steps_per_epoch * acc
                batches = grouped(
                    epoch_batches(self.loader, self.epoch, self.batch_in_epoch * acc, limit), acc
                )
                if self.rng_to_restore is not None:  # after skipping, before the first new batch
                    restore_rng_state(self.rng_to_restore)
                    self.rng_to_restore = None
                self.model.train()
                epoch_t0 = time.monotonic()
                stop = None
                for group in batches:
                    window.append(self._train_step(group))
                    bar.update(1)
                    if self.step % self.config.log_every == 0 or self.finished:
                        mean = sum(window) / len(window)
                        seen = self.epoch_stats.get("samples", 0)
                        rate = seen / max(time.monotonic() - epoch_t0, 1e-9)
                        bar.set_postfix(
                            loss=f"{mean:.4f}", lr=f"{self.scheduler.lr:.2e}", img_s=f"{rate:.1f}"
                        )
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
    device = dist.resolve_device(device)
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
            f"The run in {shown_path(run_dir)} is already complete (epoch {run.epoch}, step {run.step}); "
            "nothing to do. Raise epochs or max_steps to continue it, or use a new out_dir."
        )
        return run.result("already_complete")
    if run.step:
        run.say(
            f"Resuming from {shown_path(run.last_ckpt)} at epoch {run.epoch + 1}, step {run.step}."
        )

    deterministic_before = torch.are_deterministic_algorithms_enabled()
    if config.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with dist.StopSignals() as signals:
            stop_reason = run.run(signals)
    finally:
        torch.use_deterministic_algorithms(deterministic_before)
    if stop_reason == "interrupted":
        run.say(
            f"Stopped by {signals.reason} at step {run.step}; checkpoint: {shown_path(run.last_ckpt)}. "
            "Continue with resume=True (--resume)."
        )
    elif stop_reason == "time_budget":
        run.say(
            f"Time budget of {config.time_budget_s:g} s used up at step {run.step} of "
            f"{run.total_steps}; checkpoint: {shown_path(run.last_ckpt)}. Continue with resume=True."
        )
    return run.result(stop_reason)
