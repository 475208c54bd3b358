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

__all__ = ["plot_knob_sweep", "plot_prediction_triptychs"]

MODEL_COLORS = ("#4C72B0", "#DD8452", "#8c8c8c", "#55A868", "#C44E52", "#8172B3")


def plot_prediction_triptychs(triptychs: Sequence[Mapping], title: str | None = None):
    """Input | ground truth | prediction, one row per image (``prediction_triptychs`` output).

    Both depth maps of a row share one colour scale (the 2nd-98th percentile of the valid
    ground truth, widened to include the prediction's range there) and one colour bar; the row
    title gives the image's AbsRel.
    """
    if not triptychs:
        raise DataError("No images to draw: pass prediction_triptychs(...) for some indices.")
    n = len(triptychs)
    fig, axes = plt.subplots(n, 3, figsize=(10, 2.6 * n), squeeze=False, layout="constrained")
    for row, t in zip(axes, triptychs, strict=True):
        valid = np.asarray(t["valid"], bool)
        gt, pred = np.asarray(t["depth"], float), np.asarray(t["pred"], float)
        shown = gt[valid] if valid.any() else gt.ravel()
        lo, hi = np.percentile(shown, (2, 98))
        lo, hi = min(lo, np.percentile(pred, 2)), max(hi, np.percentile(pred, 98))
        row[0].imshow(t["rgb"])
        who = f"{t['label']}: " if t.get("label") else ""
        row[0].set_title(f"{who}input (test image {t['index']})", fontsize=9)
        row[1].imshow(np.ma.masked_where(~valid, gt), cmap=DEPTH_CMAP, vmin=lo, vmax=hi)
        row[1].set_title("ground truth", fontsize=9)
        image = row[2].imshow(pred, cmap=DEPTH_CMAP, vmin=lo, vmax=hi)
        row[2].set_title(f"prediction — AbsRel {t['abs_rel']:.3f}", fontsize=9)
        for ax in row:
            bare(ax)
        fig.colorbar(image, ax=row[1:], shrink=0.9, pad=0.01, aspect=20, label="depth (m)")
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
