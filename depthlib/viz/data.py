"""Figures of notebook 00, from what ``depthlib.course.gallery`` and the notebook compute: a gallery
of RGB-D samples, knob sweeps, split depth statistics. Depth is drawn with one colour scale per
figure (near = yellow, far = dark blue) so maps can be compared; raw-depth holes are white, as no
depth colour is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib import colormaps

from depthlib.errors import ConfigError, DataError
from depthlib.viz import bare

__all__ = [
    "depth_vmax",
    "plot_depth_statistics",
    "plot_rooms_gallery",
    "plot_rooms_knobs",
    "show_depth",
]

DEPTH_CMAP = "plasma_r"
SPLIT_COLORS = {"train": "#4C72B0", "test": "#DD8452"}
KNOB_MEANINGS = {
    "light": "overall light level (ambient and lamp together; 1 = normal)",
    "size_scale": "multiplies every furniture piece's dimensions (1 = real sizes, as in the set)",
    "contrast": "object colours: 0 = the mean colour of walls and floor, 1 = free colours",
    "object_albedo": "multiplies the furniture's colours (1 = as drawn, 0.2 = dark objects)",
    "n_objects": "number of furniture pieces",
    "noise": "RGB sensor noise (standard deviation on the 0..1 scale)",
    "camera_height": "camera height above the floor (m)",
    "pitch_deg": "camera pitch, degrees (> 0 looks down)",
    "roll_deg": "camera roll, degrees (> 0 clockwise)",
}


def show_depth(ax, depth: np.ndarray, vmax: float, holes: bool = False, vmin: float = 0.0):
    """Draw a depth map in metres in the course's depth colours; with ``holes`` the zeros
    (invalid pixels) are white."""
    data = np.ma.masked_less_equal(depth, 0.0) if holes else depth
    cmap = colormaps[DEPTH_CMAP].with_extremes(bad="white")
    return ax.imshow(data, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")


def depth_vmax(maps) -> float:
    """A round upper end for a shared depth scale: the largest depth shown, up to whole metres."""
    top = max((float(np.max(m)) for m in maps), default=1.0)
    return float(max(1.0, math.ceil(top)))


def plot_rooms_gallery(samples: Sequence[Mapping], rooms_per_row: int = 2):
    """RGB | filled depth | raw depth (holes white) for each sample of ``gallery_samples``.

    ``rooms_per_row`` triplets side by side; one depth colour scale for the whole figure.
    """
    if not samples:
        raise DataError("plot_rooms_gallery needs at least one sample.")
    if rooms_per_row < 1:
        raise ConfigError(f"rooms_per_row must be at least 1, got {rooms_per_row}.")
    per_row = min(rooms_per_row, len(samples))
    rows = math.ceil(len(samples) / per_row)
    height, width = samples[0]["depth"].shape
    panel_w, gap = 2.6, 0.12  # gap: a narrow empty column between rooms, so triplets read as units
    panel_h = panel_w * height / width + 0.45  # room for a two-line title
    ratios = ([1, 1, 1, gap] * per_row)[:-1]
    fig, grid = plt.subplots(
        rows,
        len(ratios),
        figsize=((3 + gap) * per_row * panel_w + 0.9, rows * panel_h + 0.3),
        layout="constrained",
        squeeze=False,
        gridspec_kw={"width_ratios": ratios},
    )
    for ax in grid[:, 3::4].flat:
        ax.set_axis_off()
    axes = np.delete(grid, np.s_[3::4], axis=1).reshape(-1, 3)  # one row per room
    for ax in axes.flat:
        bare(ax)
    for ax in axes[len(samples) :].flat:
        ax.set_axis_off()
    vmax = depth_vmax(s["depth"] for s in samples)
    for s, (rgb_ax, depth_ax, raw_ax) in zip(samples, axes, strict=False):
        rgb_ax.imshow(s["rgb"])
        knobs = s.get("knobs") or {}
        extra = f" · light {knobs['light']:.2f}" if "light" in knobs else ""
        rgb_ax.set_title(f"image {s['index']}\nRGB{extra}", fontsize=9)
        image = show_depth(depth_ax, s["depth"], vmax)
        d = s["depth"][s["depth"] > 0]
        span = f"{d.min():.1f}–{d.max():.1f} m" if d.size else "no valid pixel"
        depth_ax.set_title(f"filled depth\n{span}", fontsize=9)
        show_depth(raw_ax, s["raw_depth"], vmax, holes=True)
        raw_ax.set_title(f"raw depth\n{100 * s['hole_fraction']:.1f}% holes (white)", fontsize=9)
    bar = fig.colorbar(image, ax=grid, shrink=0.8, pad=0.01, aspect=30)
    bar.set_label("depth (m)", fontsize=10)
    return fig


def _format_value(knob: str, value, digits: int = 3) -> str:
    return f"{int(value)}" if knob == "n_objects" else f"{round(float(value), digits):g}"


def plot_rooms_knobs(sweeps: Sequence[Mapping]):
    """One block per ``render_knob_sweep`` result: its RGB images and, where the knob moves geometry,
    the depth maps below them. Each block's title says what the knob means and whether the depth
    map changed, which the sweep measured rather than assumed.

    Laid out in inches by hand (not constrained layout) so every block's panels line up in
    columns whether or not the block has a colour bar.
    """
    if not sweeps:
        raise DataError("plot_rooms_knobs needs at least one sweep (from render_knob_sweep).")
    cols = max(len(s["values"]) for s in sweeps)
    height, width = sweeps[0]["rgb"][0].shape[:2]
    pw, gap = 2.7, 0.08  # panel width and the gap between panels (inches)
    ph = pw * height / width
    left, right, top, bottom = 0.4, 0.75, 0.1, 0.45
    block_title, panel_title, block_gap = 0.3, 0.24, 0.2
    block_rows = [2 if s["depth_changes"] else 1 for s in sweeps]
    fig_w = left + cols * pw + (cols - 1) * gap + right
    blocks_h = sum(block_title + panel_title + r * ph + (r - 1) * gap for r in block_rows)
    fig_h = top + bottom + blocks_h + block_gap * (len(sweeps) - 1)
    fig = plt.figure(figsize=(fig_w, fig_h))

    def axes_at(x: float, y_top: float, w: float, h: float):
        """Axes from inches measured from the figure's top-left corner."""
        return fig.add_axes((x / fig_w, 1 - (y_top + h) / fig_h, w / fig_w, h / fig_h))

    vmax = depth_vmax(d for s in sweeps for d in s["depth"])
    y = top
    for sweep, n_rows in zip(sweeps, block_rows, strict=True):
        knob = sweep["knob"]
        verdict = "depth map identical for every value"
        if sweep["depth_changes"]:
            verdict = "geometry changes: depth maps differ"
        title = f"{knob}: {KNOB_MEANINGS.get(knob, '')} — {verdict}"
        y_mid = 1 - (y + block_title / 2) / fig_h
        fig.text(0.5, y_mid, title, ha="center", va="center", fontsize=10.5, fontweight="bold")
        y += block_title + panel_title
        image = None
        for r in range(n_rows):
            for j, value in enumerate(sweep["values"]):
                ax = axes_at(left + j * (pw + gap), y, pw, ph)
                bare(ax)
                if r == 0:
                    applied = sweep["applied"][j]
                    label = f"{knob} = {_format_value(knob, applied)}"
                    if not np.isclose(float(value), float(applied)):
                        label += f" (asked {_format_value(knob, value)})"
                    ax.imshow(sweep["rgb"][j])
                    ax.set_title(label, fontsize=9)
                else:
                    image = show_depth(ax, sweep["depth"][j], vmax)
                if j == 0:
                    ax.set_ylabel("RGB" if r == 0 else "depth", fontsize=10)
            y += ph + (gap if r + 1 < n_rows else 0)
        if image is not None:
            cax = axes_at(fig_w - right + 0.1, y - ph, 0.14, ph)
            fig.colorbar(image, cax=cax).set_label("m", fontsize=9)
        y += block_gap
    own = ", ".join(f"{s['knob']} {_format_value(s['knob'], s['own_value'], 2)}" for s in sweeps)
    room = f"room {sweeps[0]['index']} of seed {sweeps[0]['seed']}; its own draws: {own}"
    fig.text(0.5, bottom / 2 / fig_h, room, ha="center", va="center", fontsize=9)
    return fig


def plot_depth_statistics(
    histograms: Mapping[str, Mapping],
    mean_map: np.ndarray | None = None,
    baseline: Mapping[str, float] | None = None,
):
    """Left: the depth histogram of each split (share of valid pixels per bin, medians dashed).
    Right (with ``mean_map``): the train split's per-pixel mean depth map, the baseline every
    results table compares against; ``baseline`` (its test metrics) goes into the title.

    ``histograms``: ``{split: {"counts", "bins" (edges, m), "n_images", "median", "mean"}}``.
    """
    if not histograms:
        raise DataError("plot_depth_statistics needs at least one split's histogram.")
    ncols = 1 if mean_map is None else 2
    fig, axes = plt.subplots(
        1,
        ncols,
        figsize=(6.2 * ncols, 4.0),
        layout="constrained",
        squeeze=False,
        gridspec_kw={"width_ratios": [1.15, 1][:ncols]},
    )
    ax = axes[0, 0]
    for split, h in histograms.items():
        counts, bins = np.asarray(h["counts"]), np.asarray(h["bins"])
        share = counts / max(1, counts.sum()) * 100
        color = SPLIT_COLORS.get(split)
        ax.stairs(share, bins, label=None, color=color, lw=1.8)
        ax.axvline(h["median"], color=color, ls="--", lw=1.2)
        label = (
            f"{split}: {h['n_images']} images, median {h['median']:.2f} m, mean {h['mean']:.2f} m"
        )
        ax.plot([], [], color=color, lw=1.8, label=label)  # a line in the legend, not a patch
    ax.set_xlabel("depth of valid pixels (m)")
    width = float(np.diff(next(iter(histograms.values()))["bins"]).mean())
    ax.set_ylabel(f"% of pixels per {100 * width:.0f} cm bin")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8.5, loc="upper right", frameon=False)
    ax.set_title("depth per split (dashed: medians)", fontsize=11)
    ax.grid(alpha=0.25)
    if mean_map is not None:
        ax = axes[0, 1]
        # its own half-metre-rounded range: on a 0..10 m scale a mean map looks uniform
        lo = math.floor(2 * float(np.min(mean_map))) / 2
        hi = max(lo + 0.5, math.ceil(2 * float(np.max(mean_map))) / 2)
        image = show_depth(ax, mean_map, hi, vmin=lo)
        bare(ax)
        title = "train mean depth map (the baseline)"
        if baseline:
            title += (
                f"\non test: δ1 {baseline['delta1']:.3f} · AbsRel {baseline['abs_rel']:.3f}"
                f" · RMSE {baseline['rmse']:.3f} m"
            )
        ax.set_title(title, fontsize=11)
        fig.colorbar(image, ax=ax, shrink=0.9, pad=0.02).set_label("depth (m)")
    return fig
