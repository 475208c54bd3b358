"""Figures of training runs: learning curves averaged over seeds, and SparK reconstructions early
vs late in pretraining. Inputs are run folders (their ``log.jsonl``, see :mod:`depthlib.train.runlog`)
or rows already in memory, and the dicts :func:`depthlib.spark.model.reconstruct` returns."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from depthlib.course.statistics import pretraining_budget_points
from depthlib.depth.metrics import HIGHER_IS_BETTER, METRIC_NAMES
from depthlib.errors import ConfigError, DataError
from depthlib.train.runlog import Run, read_run_rows
from depthlib.viz import bare, hwc

__all__ = [
    "plot_learning_curves",
    "plot_pretraining_budgets",
    "plot_reconstruction_progress",
    "reconstruction_figure",
]

LOSS_KEY = "train_loss"


def _column(name: str, rows: Sequence[Mapping], key: str, x: str) -> dict[float, float]:
    """``{x: value}`` of one run for ``key`` (``abs_rel`` also finds ``val_abs_rel``)."""
    found = next((k for k in (key, f"val_{key}") if any(k in r for r in rows)), None)
    if found is None:
        known = sorted({k for r in rows for k in r})
        raise DataError(
            f"Run {name} has no {key!r} in its log (columns: {', '.join(known)}). Choose "
            "metrics= among those (val_ may be left out), or validate during training."
        )
    if not any(x in r for r in rows):
        raise DataError(f"Run {name} has no x column {x!r}; use x='epoch', 'step' or 'elapsed_s'.")
    out = {}
    for row in rows:
        value = row.get(found)
        if x in row and isinstance(value, (int, float)) and math.isfinite(value):
            out[float(row[x])] = float(value)  # a later duplicate (resume) wins
    return out


def _mean_std(curves: Sequence[Mapping[float, float]]) -> tuple[np.ndarray, ...]:
    """x, mean, std (ddof 1; 0 where one run only) over the runs that reached each x."""
    xs = np.array(sorted(set().union(*curves)), dtype=float)
    mean, std = np.empty_like(xs), np.zeros_like(xs)
    for i, x in enumerate(xs):
        values = np.array([c[x] for c in curves if x in c])
        mean[i] = values.mean()
        std[i] = values.std(ddof=1) if len(values) > 1 else 0.0
    return xs, mean, std


def _title(key: str) -> str:
    """``val delta1 ↑`` for validation metrics, the plain name for other logged values."""
    if key == LOSS_KEY:
        return "train loss ↓"
    name = key.removeprefix("val_")
    if name in METRIC_NAMES:
        return f"val {name} {'↑' if name in HIGHER_IS_BETTER else '↓'}"
    return key.replace("_", " ") + (" ↓" if "loss" in key else "")


def plot_learning_curves(
    groups: Mapping[str, Sequence[Run]],
    metrics: Sequence[str] = ("abs_rel", "delta1"),
    x: str = "epoch",
):
    """One panel for the train loss and one per validation metric; one line per group: the mean
    over its runs (e.g. seeds) with a ±1 std band (sample std, where two or more runs reached
    that x). ``groups`` maps a label to runs: run folders, ``log.jsonl`` paths or lists of rows."""
    if not groups:
        raise ConfigError("plot_learning_curves needs at least one group {label: [runs]}.")
    keys = [LOSS_KEY] + [m for m in metrics if m != LOSS_KEY]
    curves: dict[str, list[list[dict[float, float]]]] = {}
    for label, runs in groups.items():
        if isinstance(runs, (str, os.PathLike)) or not len(runs):
            raise ConfigError(
                f"Group {label!r} must be a non-empty list of runs, got {runs!r}; wrap a single "
                "run folder in a list: {'label': [folder]}."
            )
        loaded = [read_run_rows(run) for run in runs]
        curves[label] = [[_column(name, rows, k, x) for name, rows in loaded] for k in keys]

    size = (4.2 * len(keys), 3.4)
    fig, axes = plt.subplots(1, len(keys), figsize=size, squeeze=False, layout="constrained")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for g, (label, per_key) in enumerate(curves.items()):
        color = colors[g % len(colors)]
        n = len(per_key[0])
        text = f"{label} ({n} run{'s' if n > 1 else ''})"
        for ax, runs in zip(axes[0], per_key, strict=True):
            xs, mean, std = _mean_std(runs)
            marker = "o" if len(xs) < 15 else None
            ax.plot(xs, mean, color=color, lw=1.8, marker=marker, ms=3, label=text)
            if n > 1:
                ax.fill_between(xs, mean - std, mean + std, color=color, alpha=0.2, lw=0)
    for ax, key in zip(axes[0], keys, strict=True):
        ax.set_title(_title(key), fontsize=11)
        ax.set_xlabel(x.replace("_", " "))
        ax.grid(alpha=0.3)
        if key == LOSS_KEY:
            ax.set_ylabel("mean per epoch")
    # one legend for the figure, below the panels: inside one it would cover lines
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 4),
               fontsize=9, frameon=False)  # fmt: skip
    several = any(len(per_key[0]) > 1 for per_key in curves.values())
    fig.suptitle("Learning curves" + (": mean over runs, band = ±1 std" if several else ""),
                 fontsize=12)  # fmt: skip
    return fig


def plot_reconstruction_progress(stages: Mapping[str, Mapping[str, torch.Tensor]]):
    """Reconstructions early vs late: rows = images; columns = input, masked input, then the
    composite (visible patches from the input, hidden ones predicted) of each stage, in the
    mapping's order. White outlines mark the predicted patches; titles give each stage's loss."""
    if not stages:
        raise DataError("plot_reconstruction_progress needs at least one {label: reconstruction}.")
    first = next(iter(stages.values()))
    for label, recon in stages.items():
        missing = [k for k in ("input", "masked", "composite", "mask") if k not in recon]
        if missing:
            raise DataError(
                f"Stage {label!r} lacks {missing}; pass the dict reconstruct(model, images, mask) "
                "returns."
            )
        same = recon["input"].shape == first["input"].shape and torch.equal(
            recon["mask"].cpu(), first["mask"].cpu()
        )
        if not same or not torch.allclose(recon["input"].cpu(), first["input"].cpu(), atol=1e-4):
            raise DataError(
                f"Stage {label!r} shows other images or another mask than the first stage; "
                "reconstruct the same images under the same mask at every stage (a fixed mask "
                "seed, as pretrain.Reconstructions does), or the comparison is meaningless."
            )
    n, _, height, width = first["input"].shape
    columns = [("input", first["input"]), ("masked input", first["masked"])]
    for label, recon in stages.items():
        loss = recon.get("loss")
        title = label if loss is None else f"{label}\nloss {float(loss):.3f}"
        columns.append((title, recon["composite"]))
    size = (2.3 * len(columns), 2.3 * height / width * n + 0.9)
    fig, axes = plt.subplots(n, len(columns), figsize=size, squeeze=False, layout="constrained")
    hidden = (~first["mask"].bool().cpu()).numpy().astype(float)
    for r in range(n):
        for c, (title, images) in enumerate(columns):
            ax = axes[r, c]
            ax.imshow(hwc(images[r].detach().float().cpu()))
            if c >= 2 and hidden[r, 0].any():
                ax.contour(hidden[r, 0], levels=[0.5], colors="white", linewidths=0.8)
            bare(ax)
            if r == 0:
                ax.set_title(title, fontsize=10)
    title = "SparK reconstructions: hidden patches predicted (outlined), visible copied"
    fig.suptitle(title, fontsize=11)
    return fig


def reconstruction_figure(recon: Mapping[str, torch.Tensor], title: str | None = None):
    """One epoch's reconstructions: rows = images; columns = input, masked input, prediction,
    composite (the paper's layout). Built without pyplot, so a training job's figures never
    accumulate in a notebook."""
    from matplotlib.figure import Figure

    columns = ("input", "masked", "prediction", "composite")
    n = recon["input"].shape[0]
    fig = Figure(figsize=(2.2 * len(columns), 1.8 * n * recon["input"].shape[-2] / 128 + 0.4))
    axes = fig.subplots(n, len(columns), squeeze=False)
    for r in range(n):
        for c, key in enumerate(columns):
            axes[r, c].imshow(hwc(recon[key][r].float().cpu()))
            axes[r, c].set_axis_off()
            if r == 0:
                axes[r, c].set_title(key, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_pretraining_budgets(record: Mapping, runs: Sequence, metric: str = "delta1"):
    """Does pretraining buy more than its compute? One panel per label fraction of
    :func:`~depthlib.course.statistics.pretraining_budget_points`: each arm's paired gain over
    scratch (95% CI) against the median step time of its pretraining; SparK's budgets make one
    line, compute-matched scratch sits at the cost it matches, ImageNet at 0 (done elsewhere)."""
    points, colors = pretraining_budget_points(record, runs, metric), {}
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, axes = plt.subplots(1, len(points), figsize=(5.2 * len(points), 3.8), squeeze=False,
                             sharey=True, layout="constrained")  # fmt: skip
    for ax, (fraction, lines) in zip(axes[0], points.items(), strict=True):
        span = max((p[0] for ps in lines.values() for p in ps), default=0.0) or 1.0
        for label, pts in lines.items():
            x, gain, low, high, budget = (np.array(v, float) for v in zip(*pts, strict=True))
            color = colors.setdefault(label, cycle[len(colors) % len(cycle)])
            x = x + 0.015 * span * (list(colors).index(label) - 2)  # arms at one cost side by side
            ax.errorbar(x, gain, yerr=[gain - low, high - gain], marker="o", capsize=3, label=label,
                        color=color, ls="--" if "matched" in label else "-")  # fmt: skip
            for xi, gi, b in zip(x, gain, budget, strict=True):
                if len(pts) > 1:
                    ax.annotate(f"×{b:g}", (xi, gi), xytext=(4, 4), textcoords="offset points",
                                fontsize=8, color=color)  # fmt: skip
        ax.axhline(0.0, color="k", lw=0.8)
        ax.set_title(f"{100 * fraction:g}% labels, {record['study']['epochs']} fine-tune epochs",
                     fontsize=10)  # fmt: skip
        ax.set_xlabel("pretraining step time (min; median over runs)")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel(f"test {_title(metric).removeprefix('val ')} gain over scratch\n"
                          "(paired, 95% CI)")  # fmt: skip
    handles = {h.get_label(): h for ax in axes[0] for h in ax.get_legend_handles_labels()[0]}
    fig.legend(list(handles.values()), list(handles), loc="outside lower center",
               ncols=min(len(handles), 5), fontsize=8, frameon=False)  # fmt: skip
    return fig
