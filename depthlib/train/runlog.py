"""The per-epoch log of a training run: ``log.jsonl`` and ``log.csv``, one row per epoch.

``log.jsonl`` is appended one line per epoch (a single write + fsync, so a kill leaves whole
lines); ``log.csv`` is rewritten atomically from the full history each epoch, because its columns
can grow (a metric that appears later). On resume both are rewritten from the history stored in
the checkpoint, dropping rows that a killed run wrote after its last checkpoint, so the logs
always agree with the checkpoint a run continues from.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from depthlib.atomic import atomic_write_text
from depthlib.errors import ConfigError, DataError

__all__ = ["RunLog", "accumulate", "epoch_row", "read_run_rows", "summary_line"]

LOG_NAME = "log.jsonl"
Run = str | os.PathLike | Sequence[Mapping]


class RunLog:
    """Writes ``<run>/log.jsonl`` and ``<run>/log.csv``; does nothing when ``run_dir`` is None."""

    def __init__(self, run_dir: Path | None):
        self.jsonl = run_dir / LOG_NAME if run_dir else None
        self.csv = run_dir / "log.csv" if run_dir else None

    def append(self, row: Mapping, history: list[Mapping]) -> None:
        if self.jsonl is None:
            return
        with open(self.jsonl, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, default=float) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self._write_csv(history)

    def rewrite(self, history: list[Mapping]) -> None:
        """Make both files hold exactly ``history`` (an empty history removes them)."""
        if self.jsonl is None:
            return
        if not history:
            for path in (self.jsonl, self.csv):
                path.unlink(missing_ok=True)
            return
        atomic_write_text(self.jsonl, "".join(json.dumps(r, default=float) + "\n" for r in history))
        self._write_csv(history)

    def _write_csv(self, history: list[Mapping]) -> None:
        columns: list[str] = []
        for row in history:
            columns += [k for k in row if k not in columns]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(history)
        atomic_write_text(self.csv, buffer.getvalue())


def accumulate(stats: dict, loss: float, logs: Mapping[str, Any], n_samples: int | None) -> None:
    """Add one step to the running sums of an epoch (kept in checkpoints for exact resume)."""
    stats["steps"] = stats.get("steps", 0) + 1
    stats["loss_sum"] = stats.get("loss_sum", 0.0) + loss
    stats["samples"] = stats.get("samples", 0) + (n_samples or 0)
    sums = stats.setdefault("log_sums", {})
    for key, value in logs.items():
        value = value.detach() if hasattr(value, "detach") else value
        sums[key] = sums.get(key, 0.0) + float(value)


def epoch_row(
    epoch: int, step: int, lr: float, stats: Mapping, metrics: Mapping, elapsed_s: float
) -> dict:
    """One log row: epoch (from 1), step, lr, mean train loss and logged scalars, val metrics."""
    steps = max(1, stats.get("steps", 0))
    seconds = stats.get("time_s", 0.0)
    row: dict[str, Any] = {
        "epoch": epoch,
        "step": step,
        "lr": lr,
        "train_loss": stats.get("loss_sum", math.nan) / steps,
    }
    row.update({f"train_{k}": v / steps for k, v in stats.get("log_sums", {}).items()})
    row.update({f"val_{k}": float(v) for k, v in metrics.items()})
    row["epoch_time_s"] = round(seconds, 3)
    if stats.get("samples") and seconds > 0:
        row["samples_per_s"] = round(stats["samples"] / seconds, 2)
    row["elapsed_s"] = round(elapsed_s, 3)
    row["time"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    return row


def summary_line(row: Mapping, epochs: int) -> str:
    """``epoch 2/10  step 40  train_loss 0.1234  val_abs_rel 0.1000  12.3 s``."""
    parts = [f"epoch {row['epoch']}/{epochs}", f"step {row['step']}"]
    for key, value in row.items():
        if key.startswith(("train_", "val_")) and isinstance(value, float):
            parts.append(f"{key} {value:.4g}")
    parts.append(f"{row.get('epoch_time_s', 0):.1f} s")
    return "  ".join(parts)


def read_run_rows(run: Run) -> tuple[str, list[Mapping]]:
    """``(name, rows)`` of one run: a run folder holding ``log.jsonl`` (one JSON row per epoch,
    written by :class:`RunLog`), the ``log.jsonl`` file itself, or rows already
    loaded (e.g. ``finetune(...).train.history``)."""
    if not isinstance(run, (str, os.PathLike)):
        rows = list(run)
        if not rows or not all(isinstance(r, Mapping) for r in rows):
            raise DataError(
                "A run given as rows must be a non-empty list of per-epoch dicts (e.g. "
                "finetune(...).train.history); got "
                + ("an empty list." if not rows else f"items of type {type(rows[0]).__name__}.")
            )
        return "rows", rows
    path = Path(run)
    log = path if path.is_file() else path / LOG_NAME
    if not log.is_file():
        raise ConfigError(
            f"No {LOG_NAME} in {path}. Pass the folder a training run wrote (the out= of "
            "finetune/pretrain, e.g. runs/<name>), or the rows of a run (result.train.history)."
        )
    rows = []
    for number, line in enumerate(log.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError as err:
            raise DataError(
                f"{log} line {number} is not JSON ({err}). Was the file edited by hand? "
                "Re-run the training or delete that line."
            ) from err
    if not rows:
        raise DataError(f"{log} is empty: the run ended before its first epoch. Train longer.")
    return str(path), rows
