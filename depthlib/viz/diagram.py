"""Drawing primitives of the architecture diagrams (a canvas in inches, arrows, boxes, cell grids,
thumbnails) and the forward pass that measures what they show, so the two architecture modules
only decide what goes where."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.colors import ListedColormap, to_rgba
from matplotlib.patches import FancyBboxPatch

EMPTY_COLOR = "#e6e6e6"
TOKEN_COLOR = "#DD8452"
DECODER_COLOR = "#55A868"
LOSS_COLOR = "#C44E52"
ENCODER_COLOR = "#4C72B0"
ARROW = {"arrowstyle": "-|>", "color": "#444444", "lw": 1.2, "shrinkA": 2, "shrinkB": 2}


def record_outputs(modules: Mapping[str, torch.nn.Module], run: Callable[[], object]) -> dict:
    """Call ``run()`` once with forward hooks on ``modules``: ``{name: output, "result": ...}``."""
    seen: dict = {}
    hooks = [
        module.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, o))
        for name, module in modules.items()
    ]
    try:
        seen["result"] = run()
    finally:
        for hook in hooks:
            hook.remove()
    return seen


def canvas(width: float, height: float):
    """A figure whose single axes is a ``width`` × ``height`` inch drawing board (data = inches)."""
    fig = plt.figure(figsize=(width, height))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_aspect("equal")
    ax.set_axis_off()
    return fig, ax


def arrow(ax, start, end, text=None, rad=0.0, color="#444444", style="-", offset=(0, 0.12), **kw):
    """An arrow from ``start`` to ``end`` (curved by ``rad``), with an optional label above it."""
    props = dict(ARROW, color=color, linestyle=style, connectionstyle=f"arc3,rad={rad}", **kw)
    ax.annotate("", xy=end, xytext=start, arrowprops=props)
    if text:
        mid = ((start[0] + end[0]) / 2 + offset[0], (start[1] + end[1]) / 2 + offset[1])
        ax.text(*mid, text, ha="center", va="bottom", fontsize=7.5, color=color)


def box(ax, center, size, text, color, alpha=0.18):
    """A rounded box (tinted ``color``, solid border) with centred text."""
    (x, y), (w, h) = center, size
    style = "round,pad=0.02,rounding_size=0.08"
    fill = to_rgba(color, alpha)
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, style, fc=fill, ec=color, lw=1.2))
    ax.text(x, y, text, ha="center", va="center", fontsize=8.0)


def shape_text(t: torch.Tensor) -> str:
    """``C×H×W`` of a feature map (batch dimension dropped)."""
    c, h, w = t.shape[-3:]
    return f"{c}×{h}×{w}"


def cell_grid(ax, codes: np.ndarray, center, width, colors):
    """Draw an (h, w) code map as cells centred at ``center``, ``width`` inches wide; returns
    its height. Cells get white borders unless the grid is finer than 32 cells."""
    h, w = codes.shape
    height = width * h / w
    x0, y0 = center[0] - width / 2, center[1] - height / 2
    ax.imshow(
        codes,
        cmap=ListedColormap(colors),
        vmin=0,
        vmax=len(colors) - 1,
        extent=(x0, x0 + width, y0, y0 + height),
        interpolation="nearest",
    )
    if max(h, w) <= 32:
        for i in range(h + 1):
            ax.plot([x0, x0 + width], [y0 + i * height / h] * 2, color="white", lw=0.5)
        for j in range(w + 1):
            ax.plot([x0 + j * width / w] * 2, [y0, y0 + height], color="white", lw=0.5)
    return height


def picture(ax, rgb: np.ndarray, center, width, hidden=None, patch=1):
    """An (H, W, 3) image ``width`` inches wide; ``hidden`` (patch grid, True = hidden) outlines
    the hidden patches in white. Returns its height."""
    h, w = rgb.shape[:2]
    height = width * h / w
    x0, y0 = center[0] - width / 2, center[1] - height / 2
    ax.imshow(rgb, extent=(x0, x0 + width, y0, y0 + height), interpolation="bilinear")
    if hidden is not None:
        ax.contour(
            np.linspace(x0, x0 + width, w),
            np.linspace(y0 + height, y0, h),
            np.kron(hidden, np.ones((patch, patch))),
            levels=[0.5],
            colors="white",
            linewidths=0.7,
        )
    return height


def placeholder(h: int, w: int, masked: np.ndarray | None = None, patch: int = 1) -> np.ndarray:
    """A neutral grey-blue (h, w, 3) stand-in image; ``masked`` patches dark, like a masked input."""
    rgb = np.full((h, w, 3), 0.82)
    rgb[..., 2] = 0.86
    if masked is not None:
        rgb[np.kron(masked, np.ones((patch, patch))).astype(bool)] = 0.15
    return rgb


def label(ax, xy, text, above=True, fontsize=8.5, **kw):
    """Text centred on ``xy[0]``, its bottom (``above``) or top edge at ``xy[1]``."""
    va = "bottom" if above else "top"
    ax.text(xy[0], xy[1], text, ha="center", va=va, fontsize=fontsize, **kw)
