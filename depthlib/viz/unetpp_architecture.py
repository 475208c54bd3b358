"""UNet++'s nested grid (the course report's Figure 4) drawn from the real model: every node's
channels and size are measured by a forward pass with hooks."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from matplotlib.patches import Rectangle

from depthlib.errors import require_multiple
from depthlib.viz.diagram import (
    DECODER_COLOR,
    ENCODER_COLOR,
    LOSS_COLOR,
    arrow,
    box,
    canvas,
    label,
    record_outputs,
    shape_text,
)

__all__ = ["plot_unetpp_architecture", "unetpp_nodes"]


def _trace(model, image_size) -> tuple[dict, dict]:
    """(nodes as :func:`unetpp_nodes` returns them, every block's output and the depth map)."""
    h, w = (int(s) for s in image_size)
    depth = model.config["encoder_depth"]
    require_multiple(h, w, 2**depth, "image_size", "the encoder stride")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            modules = {"encoder": model.encoder, **model.decoder.blocks}
            seen = record_outputs(modules, lambda: model(torch.zeros(1, 3, h, w)))
    finally:
        model.train(was_training)
    nodes = {(i, 0): tuple(f.shape[1:]) for i, f in enumerate(seen["encoder"][1:])}
    for name, out in seen.items():
        if name.startswith("x_"):  # smp's block x_{d}_{l} is X^{D-2-l, l-d+1}
            d, level = (int(v) for v in name.split("_")[1:])
            if level <= depth - 2:
                nodes[(depth - 2 - level, level - d + 1)] = tuple(out.shape[1:])
    return nodes, seen


def unetpp_nodes(model, image_size: Sequence[int] = (64, 96)) -> dict[tuple[int, int], tuple]:
    """``{(i, j): (channels, height, width)}`` for UNet++'s nodes X^{i,j}, measured by a forward
    pass. ``i`` = level (0: stride 2, the shallowest feature smp's decoder uses), ``j`` = column
    (0: encoder)."""
    return _trace(model, image_size)[0]


def plot_unetpp_architecture(model, image_size: Sequence[int] = (64, 96)):
    """UNet++'s nested grid from ``model`` (a :class:`depthlib.depth.unetpp.DepthUNetPlusPlus`): nodes
    X^{i,j} with their channels and spatial size (measured on a dummy ``image_size`` input),
    encoder column j = 0, down-sampling, up-sampling (diagonal) and dense skip connections
    (every earlier node of a row is concatenated), the final up-sampling block and the depth head.
    """
    nodes, seen = _trace(model, image_size)
    depth = model.config["encoder_depth"]
    if all(hasattr(model.encoder, f"layer{k}") for k in range(1, depth)):
        names = ["stem (conv1)"] + [f"layer{k}" for k in range(1, depth)]
    else:
        names = [f"stage {k + 1}" for k in range(depth)]
    dx, dy, bw, bh = 2.0, 1.35, 1.5, 0.78
    width, height = dx * (depth + 3) + 0.3, dy * depth + 1.9
    fig, ax = canvas(width, height)

    def pos(i, j):
        return 0.95 + dx * (j + 1), height - 1.45 - dy * i

    h, w = image_size
    in_x, in_w = pos(0, -1)[0] - 0.25, 1.05
    box(ax, (in_x, pos(0, 0)[1]), (in_w, bh), f"input\n3 ch · {h}×{w}", "#8c8c8c")
    arrow(ax, (in_x + in_w / 2, pos(0, 0)[1]), (pos(0, 0)[0] - bw / 2, pos(0, 0)[1]))
    for (i, j), (c, nh, nw) in sorted(nodes.items()):
        color = ENCODER_COLOR if j == 0 else DECODER_COLOR
        main = j > 0 and i + j == depth - 1  # the last node of a row: decoder_channels widths
        x, y = pos(i, j)
        text = f"$X^{{{i},{j}}}$\n{c} ch · {nh}×{nw}"
        box(ax, (x, y), (bw, bh), text, color, alpha=0.32 if main else 0.15)
        if j == 0:
            va = "bottom" if i == 0 else "center"
            name_xy = (x - bw / 2 - 0.08, y + (0.06 if i == 0 else 0))
            ax.text(*name_xy, names[i], ha="right", va=va, fontsize=7.5, color=ENCODER_COLOR)
            if i + 1 < depth:
                arrow(ax, (x, y - bh / 2), (x, pos(i + 1, 0)[1] + bh / 2), color=ENCODER_COLOR)
            continue
        # up-sampling from the level below, skip from every earlier node of the row
        below = pos(i + 1, j - 1)
        start = (below[0] + bw / 2 - 0.1, below[1] + bh / 2)
        arrow(ax, start, (x - bw / 2 + 0.1, y - bh / 2), color=DECODER_COLOR)
        arrow(ax, (pos(i, j - 1)[0] + bw / 2, y), (x - bw / 2, y), color="#777777", style="--")
        for k in range(j - 1):  # arcs over the row, nested: longer skips arc higher
            start = (pos(i, k)[0] - 0.1 + 0.22 * (j - k - 2), y + bh / 2)
            end = (x - 0.55 + 0.2 * k, y + bh / 2)
            rad = -2 * (0.16 + 0.1 * (j - k - 2)) / (end[0] - start[0])
            arrow(ax, start, end, color="#999999", style=":", rad=rad, lw=1.0)
    x_top, y_top = pos(0, depth - 1)
    f_pos, h_pos = pos(0, depth), pos(0, depth + 1)
    final = shape_text(seen[f"x_0_{depth - 1}"][0])
    box(ax, f_pos, (bw, bh), f"final up ×2\n{final}", DECODER_COLOR, alpha=0.32)
    arrow(ax, (x_top + bw / 2, y_top), (f_pos[0] - bw / 2, f_pos[1]), color=DECODER_COLOR)
    lo, hi = model.config["min_depth"], model.config["max_depth"]
    head = f"head: conv 3×3\n→ depth {shape_text(seen['result'][0])}"
    box(ax, h_pos, (bw, bh), head, LOSS_COLOR)
    formula = f"{lo:g} + ({hi:g} − {lo:g})·σ(logit) m"
    formula_xy = (h_pos[0], h_pos[1] - bh / 2 - 0.12)
    label(ax, formula_xy, formula, above=False, fontsize=7.5, color=LOSS_COLOR)
    arrow(ax, (f_pos[0] + bw / 2, f_pos[1]), (h_pos[0] - bw / 2, h_pos[1]), color=LOSS_COLOR)

    legend_y, x0 = 0.35, 0.4
    items = [
        (ENCODER_COLOR, "-", "down-sampling (encoder)"),
        (DECODER_COLOR, "-", "up-sampling ×2"),
        ("#777777", "--", "skip from the previous node"),
        ("#999999", ":", "dense skips (all earlier nodes, concatenated)"),
    ]
    for color, style, text in items:
        ax.plot([x0, x0 + 0.45], [legend_y] * 2, color=color, linestyle=style, lw=1.4)
        ax.text(x0 + 0.55, legend_y, text, va="center", fontsize=8)
        x0 += 0.75 + 0.075 * len(text)
    swatch = Rectangle(
        (x0, legend_y - 0.1), 0.3, 0.2, fc=DECODER_COLOR, alpha=0.32, ec=DECODER_COLOR
    )
    ax.add_patch(swatch)
    text = "last node of a level: width from decoder_channels"
    ax.text(x0 + 0.4, legend_y, text, va="center", fontsize=8)
    title = (
        f"UNet++ of {model.config['encoder']}, encoder depth {depth}, "
        f"decoder {model.config['decoder_channels']}: nodes $X^{{i,j}}$ (level i, column j)"
    )
    ax.text(0.3, height - 0.25, title, ha="left", va="top", fontsize=12, fontweight="bold")
    return fig
