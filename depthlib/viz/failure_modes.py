"""Figures of notebook 05, from what :mod:`depthlib.course.failure_modes` computes: predictions
beside ground truth (the report's Figures 5-6) and knob sweeps (error against one scene factor,
one line per model)."""

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


def plot_predictions(rows: Sequence[Mapping], *, figure=None):
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
    fig = figure if figure is not None else plt.figure()
    fig.set_size_inches(3.1 * cols + 0.6, 2.5 * n)
    fig.set_layout_engine("constrained")
    axes = fig.subplots(n, cols, squeeze=False)
    for ax_row, r in zip(axes, rows, strict=True):
        valid = np.asarray(r["valid"], bool)
        gt = np.asarray(r["depth"], float)
        lo, hi = np.percentile(gt[valid] if valid.any() else gt.ravel(), (2, 98))
        ax_row[0].imshow(r["rgb"])
        image = ax_row[1].imshow(np.ma.masked_where(~valid, gt), cmap=DEPTH_CMAP, vmin=lo, vmax=hi)
        titles = [f"input (test image {r['index']})", "ground truth"]
        for ax, name in zip(ax_row[2:], names, strict=True):
            pred, abs_rel = r["predictions"][name]
            ax.imshow(pred, cmap=DEPTH_CMAP, vmin=lo, vmax=hi)
            titles.append(f"{name} — AbsRel {abs_rel:.3f}")
        for ax, title in zip(ax_row, titles, strict=True):
            ax.set_title(title, fontsize=9)
            bare(ax)
        fig.colorbar(image, ax=ax_row[1:], shrink=0.9, pad=0.01, aspect=20, label="depth (m)")
    return fig


def plot_knob_sweep(rows_by_model: Mapping[str, Sequence[Mapping]], knob: str):
    """Error against the knob's value, one line per model (mean over the paired rooms, bars =
    standard error over rooms): AbsRel over the whole image on the left, the region-specific
    measure of the claim that uses this knob on the right; its stress and reference values are
    marked by dotted lines."""
    if not rows_by_model:
        raise DataError("No sweep rows to plot: pass {model name: knob_sweep(...) rows}.")
    claim = next((c for c in CLAIMS.values() if c.knob == knob), None)
    keys = ("abs_rel", claim.measure if claim else "objects_abs_rel")
    marks = {"stress": claim.stress, "reference": claim.reference} if claim else {}
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
    for k, (name, rows) in enumerate(rows_by_model.items()):
        rows = [r for r in rows if r["knob"] == knob]
        if not rows:
            raise DataError(f"Model {name!r} has no rows for knob {knob!r}.")
        summary = sorted(sweep_summary(rows, keys), key=lambda r: r["value"])
        x = [r["value"] for r in summary]
        for ax, key in zip(axes, keys, strict=True):
            y = [r[key] for r in summary]
            err = [0.0 if math.isnan(r[key + "_se"]) else r[key + "_se"] for r in summary]
            color = MODEL_COLORS[k % len(MODEL_COLORS)]
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, color=color, label=name)
    for ax, key in zip(axes, keys, strict=True):
        for text, value in marks.items():
            ax.axvline(value, color="k", ls=":", lw=0.8)
            where = ("data", "axes fraction")
            ax.annotate(text, (value, 1.0), xycoords=where, ha="center", va="bottom", fontsize=8)
        ax.set_xlabel(knob)
        ax.set_ylabel(MEASURE_LABELS.get(key, key))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    n = max(r["n_rooms"] for r in summary)
    fig.suptitle(f"{knob} sweep: the same {n} rooms at every value")
    return fig
