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

__all__ = ["BASELINE", "plot_knob_sweep", "plot_predictions"]

BASELINE = "mean-depth baseline"  # its model name in notebook 05 and in results_rows
MODEL_COLORS = ("#4C72B0", "#DD8452", "#8c8c8c", "#55A868", "#C44E52", "#8172B3")


def plot_predictions(rows: Sequence[Mapping], *, baseline: str | None = BASELINE, figure=None):
    """Photo | ground truth | each model | mean-depth baseline, one row per test image (the report's
    Figures 5-6; ``prediction_rows`` output whose models include ``baseline``: the train mean depth
    map of ``fit_baselines``, the same for every image, so one sees if a model drew this room or
    the average room; None: no such column). A row's depth maps share one range, 0 m to its deepest
    value (truth or prediction), and one colour bar in metres: nothing is clipped, so a prediction
    beyond the truth shows a colour the truth lacks. Titles give each prediction's AbsRel on that
    image. ``figure``: draw into this (e.g. a widget's) instead of pyplot."""
    if not rows:
        raise DataError("No images to draw: pass prediction_rows(...) for some indices.")
    names = [m for m in rows[0]["predictions"] if m != baseline] + [baseline] * bool(baseline)
    if baseline and any(baseline not in r["predictions"] for r in rows):
        raise DataError(f"No {baseline!r} among the predictions: add it, or pass baseline=None.")
    n, cols = len(rows), 2 + len(names)
    fig = figure if figure is not None else plt.figure()
    fig.set_size_inches(2.8 * cols + 0.8, 2.4 * n + 0.3)
    fig.set_layout_engine("constrained")
    axes = fig.subplots(n, cols, squeeze=False)
    for k, (ax_row, r) in enumerate(zip(axes, rows, strict=True)):
        valid, gt = np.asarray(r["valid"], bool), np.asarray(r["depth"], float)
        preds = [np.asarray(r["predictions"][m][0], float) for m in names]
        top = max(d[np.isfinite(d)].max(initial=0.0) for d in [gt[valid], *preds]) or 1.0
        ax_row[0].imshow(r["rgb"])
        for ax, depth in zip(ax_row[1:], [np.ma.masked_where(~valid, gt), *preds], strict=True):
            image = ax.imshow(depth, cmap=DEPTH_CMAP, vmin=0.0, vmax=top)
        heads = ["photo", "ground truth", *(f"{m}\n" for m in names)] if k == 0 else [""] * cols
        scores = ["", ""] + [f"AbsRel {r['predictions'][m][1]:.3f}" for m in names]
        for ax, head, score in zip(ax_row, heads, scores, strict=True):
            ax.set_title(head + score, fontsize=9)
            bare(ax)
        ax_row[0].set_ylabel(f"image {chr(ord('A') + k)}" if n > 1 else "")
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
