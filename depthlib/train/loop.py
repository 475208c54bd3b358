"""The one training loop of depthlib, shared by SparK pretraining and UNet++ fine-tuning.

A :class:`~depthlib.train.config.Task` says what differs (how a batch becomes a loss, how to
validate); everything else lives here once: AdamW with decay-free norms/biases, warmup + cosine
per step, gradient clipping, micro-batches whose gradients add up to the batch, a NaN/Inf guard,
progress bars, one log row and one checkpoint per epoch, exact resumption (the checkpoint holds
the position inside the epoch and the RNG states, restored after skipping the batches already
seen), a time budget, and clean stopping: the first SIGINT/SIGTERM finishes the step, writes a
checkpoint and returns ``interrupted``; a second Ctrl-C aborts at once.

Under torchrun :func:`fit` joins the process group, wraps the model in DDP and expects each
rank's loader to hold its shard; only rank 0 writes, draws and validates, stop decisions are
agreed by all ranks, and any world size can resume a checkpoint (position = samples seen).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import nn

from depthlib.atomic import ensure_writable_dir
from depthlib.errors import ConfigError
from depthlib.profiles import TrainConfig, printable_path
from depthlib.progress import progress_bar, write
from depthlib.train import distributed as dist
from depthlib.train.batches import batch_size_of, check_sharded, grouped, to_device
from depthlib.train.checkpoint import CheckpointStore, load_checkpoint, model_spec
from depthlib.train.config import Loader, Task, TrainingDiverged, TrainResult
from depthlib.train.optim import WarmupCosine, make_optimizer
from depthlib.train.rng import capture_rng_state, restore_rng_state, seed_everything
from depthlib.train.runlog import RunLog, accumulate, epoch_row, summary_line

__all__ = ["fit"]


class TrainingRun:
    """The state of one :func:`fit` call, its methods the phases of the loop. ``model`` is the
    plain module (what checkpoints store and validation sees); ``wrapped`` is what forward passes
    go through: DDP's wrapper under torchrun, else the model itself."""

    def __init__(self, wrapped, task, loader, config, run_dir, device, progress, run_config):
        self.wrapped, self.task, self.loader, self.config = wrapped, task, loader, config
        self.model, self.run_dir, self.device = dist.unwrap_model(wrapped), run_dir, device
        self.main = dist.is_main_process()
        self.say = write if self.main else lambda message: None
        self.t_start = time.monotonic()
        self.store = CheckpointStore(run_dir / "checkpoints", config.keep_last) if run_dir else None
        self.log = RunLog(run_dir if self.main else None)
        self.progress = progress and self.main
        self.run_config = dict(run_config or {})
        self.optimizer = make_optimizer(wrapped, config.lr, config.weight_decay)
        self.params = [p for g in self.optimizer.param_groups for p in g["params"]]
        micro = config.micro_batch
        self.accumulate = config.batch_size // micro if isinstance(micro, int) else 1
        self.steps_per_epoch = len(loader) // self.accumulate
        if self.steps_per_epoch < 1:
            raise ConfigError(
                f"The training loader gives {len(loader)} batches per epoch (on each of "
                f"{dist.world_size()} processes), fewer than the {self.accumulate} of one step. "
                "Lower the batch size, use fewer processes or more data."
            )
        total = config.epochs * self.steps_per_epoch
        self.total_steps = min(total, config.max_steps) if config.max_steps else total
        warmup = round(config.warmup_epochs * self.steps_per_epoch)
        self.scheduler = WarmupCosine(
            self.optimizer, self.total_steps, warmup, config.min_lr_ratio, config.weight_decay_end
        )
        self.step = self.epoch = self.batch_in_epoch = 0  # epoch = epochs finished
        self.history, self.metrics, self.epoch_stats = [], {}, {}
        self.best_value = self.rng_to_restore = None
        self.last_ckpt = self.store.latest() if self.store else None

    def result(self, stop_reason: str) -> TrainResult:
        elapsed, best = time.monotonic() - self.t_start, self.store and self.store.best()
        return TrainResult(self.history, self.metrics, self.step, self.epoch, stop_reason,
                           elapsed, self.run_dir, self.last_ckpt, best)  # fmt: skip

    @property
    def finished(self) -> bool:
        return self.step >= self.total_steps or self.epoch >= self.config.epochs

    def start(self, resume: bool, overwrite: bool) -> None:
        if resume and self.last_ckpt is not None:
            return self._load(self.last_ckpt)
        if resume:
            self.say(
                f"No checkpoint in {printable_path(self.run_dir)}: starting a fresh run there."
            )
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
        ckpt.restore_model(self.model)
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
        if changed := self.config.changes_from(ckpt.meta.get("config", {})):
            self.say("Resuming with changed settings: " + ", ".join(changed) + ".")

    def save(self, name: str) -> None:
        if self.store is None or not self.main:
            return
        is_best = False
        key = self.config.best_metric
        if key and self.batch_in_epoch == 0 and key in self.metrics:
            value = float(self.metrics[key])
            if self.best_value is None or value < self.best_value:
                self.best_value, is_best = value, True
        position = {"step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                    "world_size": dist.world_size()}  # fmt: skip
        state = {
            **position,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": capture_rng_state(),
            "best": self.best_value,
            "epoch_stats": self.epoch_stats,
            "steps_per_epoch": self.steps_per_epoch,
        }
        meta = {
            **position,
            "finished": self.finished,
            "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "elapsed_s": round(time.monotonic() - self.t_start, 3),
            "config": dataclasses.asdict(self.config),
            "run_config": self.run_config,
            "metrics": self.metrics,
            "history": self.history,
            "model": model_spec(self.model),
            "torch_version": torch.__version__,
        }
        self.last_ckpt = self.store.save(name, self.model.state_dict(), state, meta, best=is_best)

    def _diverged(self, what: str, value: float) -> TrainingDiverged:
        last = self.last_ckpt and f"the last good checkpoint is {printable_path(self.last_ckpt)}"
        last = last or "no checkpoint had been written yet"
        return TrainingDiverged(
            f"Non-finite {what} ({value}) at step {self.step + 1} (epoch {self.epoch + 1}, batch "
            f"{self.batch_in_epoch + 1} of {self.steps_per_epoch}). The weights were not updated "
            f"and nothing was saved for this step; {last}. Check the data for NaN/Inf values "
            "(e.g. depth maps), lower the learning rate or set grad_clip, then rerun with "
            "resume=True."
        )

    def _train_step(self, group: list) -> None:
        """One optimizer step over ``group``: micro-batches whose gradients add up (one unless
        ``micro_batch`` is set), each loss scaled by 1/len(group)."""
        self.optimizer.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        for i, micro in enumerate(group):
            last = i == len(group) - 1
            sync = contextlib.nullcontext() if last or self.wrapped is self.model else (
                self.wrapped.no_sync()  # DDP: all-reduce the gradients once, after the last one
            )  # fmt: skip
            with sync:
                out = self.task.training_step(self.wrapped, to_device(micro, self.device))
                loss, logs = out if isinstance(out, tuple) else (out, {})
                (loss / len(group)).backward()
            for key, value in {"loss": loss, **logs}.items():
                value = float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
                sums[key] = sums.get(key, 0.0) + value / len(group)
        keys = ["loss", *sorted(k for k in sums if k != "loss")]
        # The global batch's loss and logs (one all-reduce; NaN anywhere → NaN on every rank).
        loss_value, *values = dist.mean_over_ranks([sums[k] for k in keys], self.device)
        logs = dict(zip(keys[1:], values, strict=True))
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

    def _should_stop(self, signals: dist.StopSignals) -> str | None:
        budget = self.config.time_budget_s
        over = budget is not None and time.monotonic() - self.t_start > budget
        if not dist.any_rank(over or signals.reason is not None, self.device):
            return None
        return "interrupted" if signals.reason else "time_budget"

    def _end_epoch(self) -> dict:
        self.epoch += 1
        self.batch_in_epoch = 0
        if self.main:
            self.metrics = dict(self.task.validate(self.model, self.epoch) or {})
        elapsed = time.monotonic() - self.t_start
        row = epoch_row(
            self.epoch, self.step, self.scheduler.lr, self.epoch_stats, self.metrics, elapsed
        )
        if self.main:
            row.update(self.task.on_epoch_end(self.model, self.epoch, row) or {})
        self.wrapped.train()
        self.history.append(row)
        self.epoch_stats = {}
        self.log.append(row, self.history)
        self.save(CheckpointStore.epoch_name(self.epoch))
        return row

    def _epoch_batches(self):
        """This epoch's step groups of micro-batches, from where the run stands in it."""
        self.loader.set_epoch(self.epoch)
        if self.batch_in_epoch:
            self.loader.skip_batches(self.batch_in_epoch * self.accumulate)
        batches = grouped(iter(self.loader), self.accumulate)
        if self.rng_to_restore is not None:  # after skipping, before the first new batch
            restore_rng_state(self.rng_to_restore)
            self.rng_to_restore = None
        return batches

    def run(self, signals: dist.StopSignals) -> str:
        bar = progress_bar(total=self.total_steps, initial=self.step, unit="step",
                           disable=not self.progress, dynamic_ncols=True)  # fmt: skip
        try:
            while not self.finished:
                if dist.any_rank(signals.reason is not None, self.device):
                    return "interrupted"  # the epoch checkpoint was just written
                bar.set_description(f"epoch {self.epoch + 1}/{self.config.epochs}")
                batches = self._epoch_batches()
                self.wrapped.train()
                epoch_t0 = time.monotonic()
                stop = None
                for group in batches:
                    self._train_step(group)
                    bar.update(1)
                    if self.step % self.config.log_every == 0 or self.finished:
                        stats, seconds = self.epoch_stats, time.monotonic() - epoch_t0
                        bar.set_postfix(loss=f"{stats['loss_sum'] / stats['steps']:.4f}",
                                        lr=f"{self.scheduler.lr:.2e}",
                                        img_s=f"{stats['samples'] / max(seconds, 1e-9):.1f}")  # fmt: skip
                    if self.step >= self.total_steps or (stop := self._should_stop(signals)):
                        break
                seconds = time.monotonic() - epoch_t0
                self.epoch_stats["time_s"] = self.epoch_stats.get("time_s", 0.0) + seconds
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
    loader: Loader,
    config: TrainConfig,
    out_dir: str | Path | None = None,
    resume: bool = False,
    device: str | torch.device = "auto",
    progress: bool = True,
    *,
    overwrite: bool = False,
    run_config: Mapping | None = None,
) -> TrainResult:
    """Train ``model`` (in place) on ``task`` with the batches of ``loader`` and the job's
    settings ``config`` (a :class:`TrainConfig` or one that extends it, stored whole in
    ``meta.json`` with ``run_config``: profile, data path, ...).

    ``out_dir``: where ``checkpoints/``, ``log.jsonl`` and ``log.csv`` go (None: nothing is
    written); ``resume`` continues the run there (none → a fresh start, said so); a used
    ``out_dir`` without ``resume`` is refused unless ``overwrite``.
    """
    if not isinstance(task, Task):
        raise TypeError(f"task must subclass depthlib.train.Task, got {type(task).__name__}")
    if not isinstance(loader, Loader):
        raise ConfigError(f"fit needs a Loader (len, set_epoch, skip_batches; e.g. epoch_loader), "
                          f"got {type(loader).__name__}.")  # fmt: skip
    if config.micro_batch == "auto":
        raise ConfigError("Resolve micro_batch='auto' to a number before fit (finetune does).")
    run_dir = Path(out_dir).expanduser() if out_dir is not None else None
    if resume and run_dir is None:
        raise ConfigError("resume=True needs out_dir: the folder of the run to continue.")
    dist.init_distributed()  # joins torchrun's process group; else a no-op
    device = dist.resolve_device(device)
    if run_dir is not None and dist.is_main_process():
        ensure_writable_dir(run_dir)  # fail before any training time is spent
    check_sharded(loader, dist.world_size())
    wrapped = dist.prepare_model(model, device, sync_batchnorm=config.sync_batchnorm)
    run = TrainingRun(wrapped, task, loader, config, run_dir, device, progress, run_config)
    seed_everything(config.seed + dist.rank())
    run.start(resume, overwrite)
    if resume and run.last_ckpt is not None and run.finished:
        run.say(
            f"The run in {printable_path(run_dir)} is already complete (epoch {run.epoch}, step "
            f"{run.step}); nothing to do. Raise epochs or max_steps to continue it, or use a "
            "new out_dir."
        )
        return run.result("already_complete")
    if run.step:
        run.say(
            f"Resuming from {printable_path(run.last_ckpt)} at epoch {run.epoch + 1}, step {run.step}."
        )
    with dist.StopSignals() as signals:
        stop_reason = run.run(signals)
    if stop_reason in ("interrupted", "time_budget"):
        why = (
            f"Stopped by {signals.reason}"
            if signals.reason
            else f"Time budget of {config.time_budget_s:g} s used up"
        )
        run.say(
            f"{why} at step {run.step} of {run.total_steps}; checkpoint: "
            f"{printable_path(run.last_ckpt)}. Continue with resume=True (--resume)."
        )
    return run.result(stop_reason)
