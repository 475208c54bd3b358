"""Figures of notebook 05: predictions beside ground truth (the report's Figures 5-6) and knob
sweeps (error against one scene factor, one line per model).

Each function takes what :mod:`depthlib.course.failure_modes` computes and returns a matplotlib Figure.
Depth uses the course's colour map (near = yellow, far = dark blue), one scale per row, so the
ground truth and the prediction of an image can be compared pixel by pixel.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np

from depthlib.course.failure_modes import CLAIMS, MEASURE_LABELS, sweep_summary
from depthlib.errors import DataError
from depthlib.viz import bare
from depthlib.viz.data import DEPTH_CMAP  # the course's depth colours

__all__ = ["plot_knob_sweep", "plot_predictions"]

MODEL_COLORS = ("#4C72B0", "#DD8452", "#8c8c8c", "#55A868", "#C44E52", "#8172B3")


def plot_predictions(rows: Sequence[Mapping], title: str | None = None, *, figure=None):
    """Input | ground truth | each model's prediction, one row per test image (the report's
    Figures 5-6; ``prediction_rows`` output).

    All depth maps of a row share one colour scale, taken from that image's valid ground truth
    (2nd-98th percentile), and one colour bar: a prediction that looks like its ground truth is
    right in metres, not only in shape. Each prediction's title gives the image's AbsRel.
    ``figure``: draw into this (e.g. a widget's ``matplotlib.figure.Figure``) instead of pyplot.
    """
    if not rows:
        raise DataError("No images to draw: pass prediction_rows(...) for some indices.")
    names = list(rows[0]["predictions"])
    n, cols = len(rows), 2 + len(names)
    size = (3.1 * cols + 0.6, 2.5 * n)
    fig = figure if figure is not None else plt.figure(figsize=size, layout="constrained")
    if figure is not None:
        fig.set_size_inches(*size)
        fig.set_layout_engine("constrained")
    axes = fig.subplots(n, cols, squeeze=False)
    for ax_row, r in zip(axes, rows, strict=True):
        valid = np.asarray(r["valid"], bool)
        gt = np.asarray(r["depth"], float)
        lo, hi = np.percentile(gt[valid] if valid.any() else gt.ravel(), (2, 98))
        ax_row[0].imshow(r["rgb"])
        ax_row[0].set_title(f"input (test image {r['index']})", fontsize=9)
        image = ax_row[1].imshow(np.ma.masked_where(~valid, gt), cmap=DEPTH_CMAP, vmin=lo, vmax=hi)
        ax_row[1].set_title("ground truth", fontsize=9)
        for ax, name in zip(ax_row[2:], names, strict=True):
            pred, abs_rel = r["predictions"][name]
            ax.imshow(pred, cmap=DEPTH_CMAP, vmin=lo, vmax=hi)
            ax.set_title(f"{name} — AbsRel {abs_rel:.3f}", fontsize=9)
        for ax in ax_row:
            bare(ax)
        fig.colorbar(image, ax=ax_row[1:], shrink=0.9, pad=0.01, aspect=20, label="depth (m)")
    if title:
        fig.suptitle(title)
    return fig


def plot_knob_sweep(
    rows_by_model: Mapping[str, Sequence[Mapping]],
    knob: str,
    *,
    metric: str = "abs_rel",
    measure: str | None = None,
    stress: float | None = None,
    reference: float | None = None,
    title: str | None = None,
):
    """Error against the knob's value, one line per model (mean over the paired rooms, bars =
    standard error over rooms): ``metric`` over the whole image on the left, the claim's
    region-specific ``measure`` on the right (default: the claim that uses this knob).
    ``stress`` / ``reference`` values (default: the claim's) are marked by dotted lines.
    """
    claim = next((c for c in CLAIMS.values() if c.knob == knob), None)
    measure = measure or (claim.measure if claim else "objects_abs_rel")
    stress = stress if stress is not None else (claim.stress if claim else None)
    reference = reference if reference is not None else (claim.reference if claim else None)
    if not rows_by_model:
        raise DataError("No sweep rows to plot: pass {model name: knob_sweep(...) rows}.")
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
    for k, (name, rows) in enumerate(rows_by_model.items()):
        rows = [r for r in rows if r["knob"] == knob]
        if not rows:
            raise DataError(f"Model {name!r} has no rows for knob {knob!r}.")
        summary = sorted(sweep_summary(rows, (metric, measure)), key=lambda r: r["value"])
        x = [r["value"] for r in summary]
        for ax, key in zip(axes, (metric, measure), strict=True):
            y = [r[key] for r in summary]
            err = [0.0 if math.isnan(r[key + "_se"]) else r[key + "_se"] for r in summary]
            color = MODEL_COLORS[k % len(MODEL_COLORS)]
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, color=color, label=name)
    for ax, key in zip(axes, (metric, measure), strict=True):
        for value, style in ((stress, "stress"), (reference, "reference")):
            if value is not None:
                ax.axvline(value, color="k", ls=":", lw=0.8)
                ax.annotate(style, (value, 1.0), xycoords=("data", "axes fraction"),
                            ha="center", va="bottom", fontsize=8)  # fmt: skip
        ax.set_xlabel(knob)
        ax.set_ylabel(MEASURE_LABELS.get(key, key))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    n = max(r["n_rooms"] for r in summary)
    fig.suptitle(title or f"{knob} sweep: the same {n} rooms at every value")
    return fig
