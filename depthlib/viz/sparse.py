"""Figures of notebook 02: dense vs sparse convolution (the report's Figure 2), the zero-out problem
in numbers, the sparse encoder's stages and the sparse-vs-dense timing, each from the dicts the
notebook computes. Stage s is the feature map at stride 2**s (smp's encoder output s)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import FuncFormatter

from depthlib.errors import DataError
from depthlib.viz import bare, patch_lines

__all__ = [
    "plot_conv_vs_sparse_conv",
    "plot_encoder_stages",
    "plot_sparse_timing",
    "plot_zero_out_problem",
]

DENSE_COLOR = "#C44E52"
SPARSE_COLOR = "#4C72B0"
TRUTH_COLOR = "#8c8c8c"
# cell codes: 0 masked and empty, 1 visible site, 2 masked site that received an output
_SITES = ListedColormap(["#eeeeee", SPARSE_COLOR, DENSE_COLOR])


def _sites(ax, codes: np.ndarray, patch: int | None) -> None:
    ax.imshow(codes, cmap=_SITES, vmin=0, vmax=2, interpolation="nearest")
    if patch:
        patch_lines(ax, codes.shape, patch, color="white", lw=0.8)
    bare(ax)


def plot_conv_vs_sparse_conv(footprints: dict, patch: int | None = None, stage: int | None = None):
    """The report's Figure 2 from our code: where outputs appear after 1, 2, … stacked convs.

    ``footprints``: ``{"input": (H, W) bool visible sites, "dense": [(H, W) bool, ...],
    "sparse": [...]}``, where each conv layer has written. Top row: dense conv on the zero-filled
    map, whose outputs spread into masked positions (red); bottom row: sparse (submanifold) conv,
    whose outputs stay on the visible sites (blue). ``patch``: the mask patch side on this map, to
    draw patch borders; ``stage``: named in the title. The black square is one 3×3 window.
    """
    visible = np.asarray(footprints["input"], dtype=bool)
    dense = [np.asarray(d, dtype=bool) for d in footprints["dense"]]
    sparse = [np.asarray(s, dtype=bool) for s in footprints["sparse"]]
    if not dense or len(dense) != len(sparse):
        raise DataError("footprints need as many dense as sparse layers, at least one.")
    n, n_masked = len(dense) + 1, int((~visible).sum())
    fig, axes = plt.subplots(2, n, figsize=(3.3 * n, 5.6), squeeze=False, layout="constrained")
    labels = ("dense conv\n(zero-filled input)", "sparse conv\n(SparK, submanifold)")
    # one window centred on a masked site that touches a visible one, to show why it gets a value
    ring = np.argwhere(dense[0] & ~visible)
    window = ring[len(ring) // 2] if len(ring) else None
    for r, (label, maps) in enumerate(zip(labels, (dense, sparse), strict=True)):
        ax = axes[r, 0]
        _sites(ax, np.where(visible, 1, 0), patch)
        ax.set_title(f"input: {int(visible.sum())} visible sites", fontsize=10)
        ax.set_ylabel(label, fontsize=11, fontweight="bold")
        for k, out in enumerate(maps, start=1):
            ax = axes[r, k]
            _sites(ax, np.where(visible & out, 1, np.where(out, 2, 0)), patch)
            written = int((out & ~visible).sum())
            ax.set_title(
                f"after {k} conv{'s' if k > 1 else ''}: {written} masked sites\n"
                f"written ({100 * written / max(n_masked, 1):.0f}% of {n_masked})",
                fontsize=10,
            )
            if k == 1 and window is not None:
                y, x = window
                ax.add_patch(Rectangle((x - 1.5, y - 1.5), 3, 3, fill=False, ec="black", lw=1.6))
    handles = [
        Patch(color=SPARSE_COLOR, label="visible site (has features)"),
        Patch(color=DENSE_COLOR, label="masked site the conv wrote into"),
        Patch(color="#eeeeee", label="masked site, empty"),
        Patch(fill=False, ec="black", lw=1.6, label="one 3×3 window centred on a masked site"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncol=4, frameon=False)
    where = f" (stage {stage}, stride {2**stage})" if stage is not None else ""
    h, w = visible.shape
    fig.suptitle(f"3×3 convolutions on a masked {h}×{w} feature map{where}", fontsize=12)
    return fig


def plot_zero_out_problem(
    smearing: Sequence[dict],
    bn: dict,
    *,
    layer_label: str = "3×3 conv layer",
    conv_bn: dict | None = None,
    conv_label: str = "conv features",
):
    """The zero-out problem: (a) per conv layer, the shares ``dense_masked_nonzero``,
    ``visible_changed`` and ``sparse_masked_nonzero`` (rows with a ``layer`` number); (b, c) the
    BatchNorm mean and variance per channel of ``bn`` (``channels``, ``visible_fraction`` and
    ``{visible,dense,sparse}_{mean,var}``): the truth (visible only), dense BN, sparse BN.

    ``conv_bn`` (same keys, many channels) adds (d): dense variance / true variance per channel,
    sorted, against 1 (the truth) and v (the limit v·σ² of zero-mean features)."""
    if not smearing:
        raise DataError("plot_zero_out_problem needs at least one smearing row.")
    panels = 3 if conv_bn is None else 4
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4.3), layout="constrained")
    ax = axes[0]
    layers = [r["layer"] for r in smearing]
    for key, style, alpha, color, label in (
        ("dense_masked_nonzero", "o-", 1.0, DENSE_COLOR, "dense: masked positions ≠ 0"),
        ("visible_changed", "s--", 0.7, DENSE_COLOR, "dense: visible features changed"),
        ("sparse_masked_nonzero", "o-", 1.0, SPARSE_COLOR, "sparse: masked positions ≠ 0"),
    ):
        values = [100 * r[key] for r in smearing]
        ax.plot(layers, values, style, color=color, alpha=alpha, label=label)
    ax.set_xticks(layers)
    ax.set_ylim(-3, 103)
    ax.set_xlabel(layer_label)
    ax.set_ylabel("% of positions")
    ax.set_title("(a) dense convs smear the mask away", fontsize=11)
    ax.legend(fontsize=9, loc="upper left")
    ax.grid(alpha=0.3)

    n = bn["channels"]
    names = ["R", "G", "B"] if n == 3 else [f"c{i}" for i in range(n)]
    x, width = np.arange(n), 0.27
    for ax, stat, title in (
        (axes[1], "mean", "(b) BatchNorm mean"),
        (axes[2], "var", "(c) BatchNorm variance"),
    ):
        for offset, key, color, label in (
            (-width, "visible", TRUTH_COLOR, "truth: visible positions only"),
            (0.0, "dense", DENSE_COLOR, "dense BN (counts masked zeros)"),
            (width, "sparse", SPARSE_COLOR, "sparse BN"),
        ):
            values = np.asarray(bn[f"{key}_{stat}"], dtype=float)
            ax.bar(x + offset, values, width, color=color, label=label)
        ax.set_xticks(x, names)
        ax.set_xlabel("channel")
        ax.set_title(f"{title}, {100 * bn['visible_fraction']:.0f}% visible", fontsize=11)
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower right", ncol=3, fontsize=9, frameon=False)
    if conv_bn is not None:
        _variance_ratio_panel(axes[3], conv_bn, conv_label)
    return fig


def _variance_ratio_panel(ax, bn: dict, label: str) -> None:
    dense = np.asarray(bn["dense_var"], dtype=float)
    ratio = np.sort(dense / np.asarray(bn["visible_var"], dtype=float))
    v = bn["visible_fraction"]
    channels = np.arange(1, len(ratio) + 1)
    ax.bar(channels, ratio, 0.8, color=DENSE_COLOR, label="dense BN variance / truth")
    ax.axhline(1.0, color=TRUTH_COLOR, lw=2, label="truth (= sparse BN)")
    ax.axhline(v, color="black", ls="--", lw=1.2, label=f"v = {v:.2f} (zero-mean limit v·σ²)")
    ax.set_ylim(0, max(1.5, float(ratio.max()) * 1.5))  # room for the legend above the lines
    ax.set_xlabel("channel, sorted by the ratio")
    ax.set_ylabel("variance / true variance")
    ax.set_title(f"(d) BatchNorm variance, {label} ({len(ratio)} channels)", fontsize=11)
    ax.legend(fontsize=9, loc="upper left")
    ax.grid(axis="y", alpha=0.3)


def plot_encoder_stages(rows: Sequence[dict]):
    """Mean |feature| per stage of the first image: dense encoder on the zero-filled input (top)
    vs the sparse encoder (bottom). One row per stage: ``stage``, ``stride``, ``shape`` (C, H, W),
    ``dense_map`` / ``sparse_map`` (H, W), ``dense_masked_nonzero`` / ``sparse_masked_nonzero``
    and optionally ``name`` (the network's module for the stage, shown in the title)."""
    if not rows:
        raise DataError("plot_encoder_stages needs at least one stage.")
    fig, axes = plt.subplots(
        2, len(rows), figsize=(3.1 * len(rows), 5.0), squeeze=False, layout="constrained"
    )
    for col, r in enumerate(rows):
        dense = r["dense_map"].detach().cpu().numpy()
        sparse = r["sparse_map"].detach().cpu().numpy()
        vmax = float(max(dense.max(), sparse.max())) or 1.0
        c, h, w = r["shape"]
        for row, (values, share) in enumerate(
            ((dense, r["dense_masked_nonzero"]), (sparse, r["sparse_masked_nonzero"]))
        ):
            ax = axes[row, col]
            ax.imshow(values, cmap="magma", vmin=0, vmax=vmax, interpolation="nearest")
            bare(ax)
            ax.set_xlabel(f"masked positions ≠ 0: {100 * share:.0f}%", fontsize=9)
        name = f" · {r['name']}" if r.get("name") else ""
        axes[0, col].set_title(
            f"stage {r['stage']} · stride {r['stride']}\n{c}×{h}×{w}{name}", fontsize=10
        )
    axes[0, 0].set_ylabel("dense encoder\n(zero-filled input)", fontsize=10, fontweight="bold")
    axes[1, 0].set_ylabel("sparse encoder\n(SparK)", fontsize=10, fontweight="bold")
    title = "mean |feature| over channels, first image (random ResNet, training mode)"
    fig.suptitle(title, fontsize=11)
    return fig


def plot_sparse_timing(rows: Sequence[dict]):
    """Reference sparse conv vs masked-dense, from :func:`measure_sparse_vs_dense` rows: (a) time
    ratio and MAC fraction vs mask ratio, (b) milliseconds per call."""
    if not rows:
        raise DataError("plot_sparse_timing needs at least one measurement row.")
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.3), layout="constrained")
    channels = sorted({r["channels"] for r in rows})
    for c, marker in zip(channels, itertools.cycle("osD^v")):
        mine = sorted((r for r in rows if r["channels"] == c), key=lambda r: r["ratio"])
        ratio, time, sparse_ms, dense_ms = (
            [r[k] for r in mine] for k in ("ratio", "sparse_over_dense", "sparse_ms", "dense_ms")
        )
        axes[0].plot(ratio, time, marker + "-", label=f"time, {c} channels")
        (line,) = axes[1].plot(ratio, sparse_ms, marker + "-", label=f"sparse, {c} ch")
        style = {"color": line.get_color(), "alpha": 0.7, "label": f"masked-dense, {c} ch"}
        axes[1].plot(ratio, dense_ms, marker + "--", **style)
    first = sorted((r for r in rows if r["channels"] == channels[0]), key=lambda r: r["ratio"])
    ratio, macs = [r["ratio"] for r in first], [r["macs_fraction"] for r in first]
    axes[0].plot(ratio, macs, "k:", lw=2, label="multiply-adds (= visible fraction)")
    axes[0].axhline(1.0, color="gray", lw=1)
    axes[0].text(ratio[0], 1.02, "masked-dense", color="gray", fontsize=9, va="bottom")
    axes[0].set(xlabel="mask ratio", ylabel="sparse / masked-dense")
    axes[0].set_title("(a) cost of the reference sparse conv, relative", fontsize=11)
    axes[0].legend(fontsize=9)
    axes[0].grid(alpha=0.3)
    axes[0].set_ylim(bottom=0)
    axes[1].set(xlabel="mask ratio", ylabel="ms per call (median)", yscale="log")
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    axes[1].yaxis.set_major_formatter(plain)
    axes[1].yaxis.set_minor_formatter(plain)
    axes[1].tick_params(axis="y", which="minor", labelsize=8)
    axes[1].set_title("(b) wall time", fontsize=11)
    axes[1].legend(fontsize=9)
    axes[1].grid(alpha=0.3, which="both")
    r0 = rows[0]
    fig.suptitle(f"3×3 conv C→C on a {r0['size']} map, batch {r0['batch']} (CPU)", fontsize=12)
    return fig
