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
    shape_text,
)

__all__ = ["plot_unetpp_architecture", "unetpp_nodes"]


def _unetpp_trace(model, image_size):
    """Encoder features (stride 2 …) and every decoder block's output, from one forward pass."""
    outputs: dict = {}
    hooks = [
        block.register_forward_hook(lambda m, i, o, n=name: outputs.__setitem__(n, o))
        for name, block in model.decoder.blocks.items()
    ]
    hooks.append(
        model.encoder.register_forward_hook(lambda m, i, o: outputs.__setitem__("encoder", o))
    )
    hooks.append(
        model.segmentation_head.register_forward_hook(
            lambda m, i, o: outputs.__setitem__("head", o)
        )
    )
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            depth = model(torch.zeros(1, 3, *image_size))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return outputs, depth


def unetpp_nodes(model, image_size: Sequence[int] = (64, 96)) -> dict[tuple[int, int], tuple]:
    """``{(i, j): (channels, height, width)}`` for UNet++'s nodes X^{i,j}, measured by a forward
    pass. ``i`` = level (0: stride 2, the shallowest feature smp's decoder uses), ``j`` = column
    (0: encoder). smp's block ``x_{d}_{l}`` is X^{D-2-l, l-d+1} (D = encoder depth)."""
    h, w = (int(s) for s in image_size)
    stride = 2 ** model.config["encoder_depth"]
    require_multiple(h, w, stride, "image_size", "the encoder stride")
    outputs, _ = _unetpp_trace(model, (h, w))
    depth = model.config["encoder_depth"]
    nodes = {(i, 0): tuple(f.shape[1:]) for i, f in enumerate(outputs["encoder"][1:])}
    for name, out in outputs.items():
        if name.startswith("x_"):
            d, level = (int(v) for v in name.split("_")[1:])
            if level <= depth - 2:
                nodes[(depth - 2 - level, level - d + 1)] = tuple(out.shape[1:])
    return nodes


def _stage_names(encoder, depth: int) -> list[str]:
    if all(hasattr(encoder, f"layer{k}") for k in range(1, depth)):
        return ["stem (conv1)"] + [f"layer{k}" for k in range(1, depth)]
    return [f"stage {k + 1}" for k in range(depth)]


def plot_unetpp_architecture(model, image_size: Sequence[int] = (64, 96)):
    """UNet++'s nested grid from ``model`` (a :class:`depthlib.depth.unetpp.DepthUNetPlusPlus`): nodes
    X^{i,j} with their channels and spatial size (measured on a dummy ``image_size`` input),
    encoder column j = 0, down-sampling, up-sampling (diagonal) and dense skip connections
    (every earlier node of a row is concatenated), the final up-sampling block and the depth head.
    """
    nodes = unetpp_nodes(model, image_size)
    outputs, depth_map = _unetpp_trace(model, tuple(image_size))
    depth = model.config["encoder_depth"]
    final = outputs[f"x_0_{depth - 1}"]
    names = _stage_names(model.encoder, depth)
    dx, dy, bw, bh = 2.0, 1.35, 1.5, 0.78
    width, height = dx * (depth + 3) + 0.3, dy * depth + 1.9
    fig, ax = canvas(width, height)

    def pos(i, j):
        return 0.95 + dx * (j + 1), height - 1.45 - dy * i

    def label(i, j):
        c, h, w = nodes[(i, j)]
        return f"$X^{{{i},{j}}}$\n{c} ch · {h}×{w}"

    h, w = image_size
    in_x, in_w = pos(0, -1)[0] - 0.25, 1.05
    box(ax, (in_x, pos(0, 0)[1]), (in_w, bh), f"input\n3 ch · {h}×{w}", "#8c8c8c")
    arrow(ax, (in_x + in_w / 2, pos(0, 0)[1]), (pos(0, 0)[0] - bw / 2, pos(0, 0)[1]))
    for i, j in sorted(nodes):
        color = ENCODER_COLOR if j == 0 else DECODER_COLOR
        main = j > 0 and i + j == depth - 1  # the last node of a row: decoder_channels widths
        box(ax, pos(i, j), (bw, bh), label(i, j), color, alpha=0.32 if main else 0.15)
        x, y = pos(i, j)
        if j == 0:
            ax.text(
                x - bw / 2 - 0.08,
                y + (0.06 if i == 0 else 0),
                names[i],
                ha="right",
                va="bottom" if i == 0 else "center",
                fontsize=7.5,
                color=ENCODER_COLOR,
            )
            if i + 1 < depth:
                arrow(ax, (x, y - bh / 2), (x, pos(i + 1, 0)[1] + bh / 2), color=ENCODER_COLOR)
        if j > 0:  # up-sampling from the level below, skip from every earlier node of the row
            below = pos(i + 1, j - 1)
            arrow(
                ax,
                (below[0] + bw / 2 - 0.1, below[1] + bh / 2),
                (x - bw / 2 + 0.1, y - bh / 2),
                color=DECODER_COLOR,
            )
            arrow(ax, (pos(i, j - 1)[0] + bw / 2, y), (x - bw / 2, y), color="#777777", style="--")
            for k in range(j - 1):  # arcs over the row, nested: longer skips arc higher
                start = (pos(i, k)[0] - 0.1 + 0.22 * (j - k - 2), y + bh / 2)
                end = (x - 0.55 + 0.2 * k, y + bh / 2)
                peak = 0.16 + 0.1 * (j - k - 2)
                arrow(
                    ax,
                    start,
                    end,
                    color="#999999",
                    style=":",
                    rad=-2 * peak / (end[0] - start[0]),
                    lw=1.0,
                )
    x_top, y_top = pos(0, depth - 1)
    f_pos, h_pos = pos(0, depth), pos(0, depth + 1)
    box(ax, f_pos, (bw, bh), f"final up ×2\n{shape_text(final[0])}", DECODER_COLOR, alpha=0.32)
    arrow(ax, (x_top + bw / 2, y_top), (f_pos[0] - bw / 2, f_pos[1]), color=DECODER_COLOR)
    lo, hi = model.config["min_depth"], model.config["max_depth"]
    box(ax, h_pos, (bw, bh), f"head: conv 3×3\n→ depth {shape_text(depth_map[0])}", LOSS_COLOR)
    ax.text(
        h_pos[0],
        h_pos[1] - bh / 2 - 0.12,
        f"{lo:g} + ({hi:g} − {lo:g})·σ(logit) m",
        ha="center",
        va="top",
        fontsize=7.5,
        color=LOSS_COLOR,
    )
    arrow(ax, (f_pos[0] + bw / 2, f_pos[1]), (h_pos[0] - bw / 2, h_pos[1]), color=LOSS_COLOR)

    legend_y = 0.35
    items = [
        (ENCODER_COLOR, "-", "down-sampling (encoder)"),
        (DECODER_COLOR, "-", "up-sampling ×2"),
        ("#777777", "--", "skip from the previous node"),
        ("#999999", ":", "dense skips (all earlier nodes, concatenated)"),
    ]
    x0 = 0.4
    for color, style, text in items:
        ax.plot([x0, x0 + 0.45], [legend_y] * 2, color=color, linestyle=style, lw=1.4)
        ax.text(x0 + 0.55, legend_y, text, va="center", fontsize=8)
        x0 += 0.75 + 0.075 * len(text)
    ax.add_patch(
        Rectangle(
            (x0, legend_y - 0.1),
            0.3,
            0.2,
            facecolor=DECODER_COLOR,
            alpha=0.32,
            edgecolor=DECODER_COLOR,
        )
    )
    ax.text(
        x0 + 0.4,
        legend_y,
        "last node of a level: width from decoder_channels",
        va="center",
        fontsize=8,
    )
    ax.text(
        0.3,
        height - 0.25,
        f"UNet++ of {model.config['encoder']}, encoder depth {depth}, "
        f"decoder {model.config['decoder_channels']}: nodes $X^{{i,j}}$ (level i, column j)",
        ha="left",
        va="top",
        fontsize=12,
        fontweight="bold",
    )
    return fig
