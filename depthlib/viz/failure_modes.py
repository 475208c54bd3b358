"""Figures of notebook 05, from what :mod:`depthlib.course.failure_modes` computes: predictions
beside ground truth (the report's Figures 5-6) and knob sweeps (the paired change of the error
against one scene factor, one line per model)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np

from depthlib.course.failure_modes import CLAIMS, MEASURE_LABELS, paired_change
from depthlib.data.rooms.scene import DRAW_RANGES
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
    """Change of the error from the reference value, room by room, against the knob's value: one
    line per model, bars = 95% bootstrap CI of the paired mean change (the rooms are the same at
    every value, so the pairing removes their spread; unpaired bars would overlap where the paired
    verdict is clear). AbsRel over the whole image on the left, the claim's own measure on the
    right. The stress value is marked; values outside the training draws are shaded."""
    if not rows_by_model:
        raise DataError("No sweep rows to plot: pass {model name: knob_sweep(...) rows}.")
    claim = next((c for c in CLAIMS.values() if c.knob == knob), None)
    keys = ("abs_rel", claim.measure if claim else "objects_abs_rel")
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
    n = 0
    for k, (name, rows) in enumerate(rows_by_model.items()):
        rows = [r for r in rows if r["knob"] == knob]
        if not rows:
            raise DataError(f"Model {name!r} has no rows for knob {knob!r}.")
        values = sorted({r["value"] for r in rows})
        reference = claim.reference if claim and claim.reference in values else values[-1]
        n = max(n, len({r["room"] for r in rows}))
        for ax, key in zip(axes, keys, strict=True):
            got = np.array([paired_change(rows, None, knob, key, v, reference) for v in values])
            shift = (k - (len(rows_by_model) - 1) / 2) * 0.006 * (values[-1] - values[0])
            ax.errorbar(np.array(values) + shift, got[:, 0], yerr=[got[:, 0] - got[:, 1],
                        got[:, 2] - got[:, 0]], marker="o", capsize=3, label=name,
                        color=MODEL_COLORS[k % len(MODEL_COLORS)])  # fmt: skip
    for ax, key in zip(axes, keys, strict=True):
        (left, right), r = ax.get_xlim(), DRAW_RANGES.get(knob)
        lo, hi = (max(left, min(r)), min(right, max(r))) if r else (left, right)
        for a, b in ((left, lo), (hi, right)):
            if b > a:
                ax.axvspan(a, b, color="0.9", zorder=0, lw=0)
        ax.set_xlim(left, right)
        ax.axhline(0.0, color="k", lw=0.8)
        if claim:
            ax.axvline(claim.stress, color="k", ls=":", lw=0.8)
            where = ("data", "axes fraction")
            ax.annotate(
                "stress", (claim.stress, 1.0), xycoords=where, ha="center", va="bottom", fontsize=8
            )
        ax.set_xlabel(knob + " (grey: outside the training draws)")
        ax.set_ylabel(
            f"change in {MEASURE_LABELS.get(key, key)}\nfrom {knob}={reference:g}, paired"
        )
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(
        f"{knob} sweep: the same {n} rooms at every value; bars: 95% CI of the paired change"
    )
    return fig
