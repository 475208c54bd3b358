"""Figures of notebook 01: the three masking strategies (the report's Figure 1), masks by ratio,
patch size and seed. Every function takes tensors and returns a matplotlib Figure."""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.colors import ListedColormap
from matplotlib.patches import Rectangle

from depthlib.course.masking_demo import drop_patches, zero_out
from depthlib.errors import DataError
from depthlib.spark.model import kept_patch_count, make_patch_mask, unpatchify
from depthlib.spark.sparse import upsample_mask
from depthlib.viz import bare, hwc, patch_lines

__all__ = ["plot_mask_grid", "plot_mask_seeds", "plot_masking_strategies", "show_masked"]

VISIBLE_COLOR = "#4C72B0"
MASKED_COLOR = "#262626"
ABSENT_COLOR = "#f2f2f2"


def _image(image: torch.Tensor) -> torch.Tensor:
    if image.dim() == 4 and image.shape[0] == 1:
        image = image[0]
    if image.dim() != 3 or image.shape[0] != 3:
        raise DataError(f"expected one RGB image (3, H, W) in [0, 1], got {tuple(image.shape)}.")
    return image.detach().float().cpu()


def _one_mask(mask: torch.Tensor) -> torch.Tensor:
    """A single (1, 1, h, w) patch mask from (h, w), (1, h, w) or (1, 1, h, w)."""
    if mask.dtype != torch.bool:
        raise DataError(f"a mask is a bool tensor (True = visible), got {mask.dtype}.")
    mask = mask.reshape(-1, 1, *mask.shape[-2:])
    if mask.shape[0] != 1:
        raise DataError(f"expected the mask of one image, got a batch of {mask.shape[0]}.")
    return mask.cpu()


def show_masked(ax, image: torch.Tensor, mask: torch.Tensor, patch: int) -> int:
    """Draw one (3, H, W) image with its masked patches dark and faint patch borders; return
    the number of visible patches. Shared by the mask grid figure and the mask explorer."""
    image, mask = _image(image), _one_mask(mask)
    ax.imshow(hwc(zero_out(image[None], mask, 0.12)[0]))
    patch_lines(ax, image.shape[-2:], patch, color="white", alpha=0.25, lw=0.4)
    bare(ax)
    return int(mask.sum())


def _cell_map(ax, values: np.ndarray, colors: Sequence[str]) -> None:
    """Draw an (h, w) integer map as coloured cells with thin white borders."""
    ax.imshow(values, cmap=ListedColormap(list(colors)), vmin=0, vmax=len(colors) - 1)
    patch_lines(ax, values.shape, 1, color="white", alpha=1.0, lw=1.0)
    bare(ax)


def plot_masking_strategies(image: torch.Tensor, mask: torch.Tensor):
    """The report's Figure 1 from our code: one row per strategy (zero-out, drop, sparse),
    columns = the input, what the network sees, the data structure it computes on.

    ``image`` (3, H, W) float in [0, 1]; ``mask`` the patch mask of that image, True = visible.
    """
    image, mask = _image(image), _one_mask(mask)
    _, height, width = image.shape
    gh, gw = mask.shape[-2:]
    if height % gh or width % gw or height // gh != width // gw:
        raise DataError(
            f"image {height}x{width} is not a whole number of square patches of {gh}x{gw}."
        )
    patch, font = height // gh, 7  # font: of the labels inside cells
    visible = mask[0, 0].numpy()
    n_all, n_vis = gh * gw, int(visible.sum())
    batch = image[None]

    fig = plt.figure(figsize=(13.5, 10.6), layout="constrained")
    headers = ("input + patch grid", "what the network sees", "the data structure it computes on")
    columns = []
    for subfig, header in zip(fig.subfigures(1, 3, wspace=0.02), headers, strict=True):
        subfig.suptitle(header, fontsize=13, fontweight="bold")
        columns.append(subfig.subplots(3, 1))
    axes = np.stack(columns, axis=1)
    rows = ("1 · zero-out\n(dense CNN)", "2 · drop\n(MAE / ViT tokens)", "3 · sparse\n(SparK)")
    for ax, label in zip(axes[:, 0], rows, strict=True):
        ax.set_ylabel(label, fontsize=12, fontweight="bold", labelpad=10)
        ax.imshow(hwc(image))
        patch_lines(ax, (height, width), patch, color="white", alpha=0.5, lw=0.6)

    # 1 · zero-out: a full image with black squares; every position is computed.
    axes[0, 1].imshow(hwc(zero_out(batch, mask)[0]))
    ax = axes[0, 2]
    _cell_map(ax, np.where(visible, 1, 0), [MASKED_COLOR, VISIBLE_COLOR])
    for y, x in zip(*np.nonzero(~visible), strict=True):
        ax.text(x, y, "0", ha="center", va="center", color="white", fontsize=font)

    # 2 · drop: only the visible patches, as a sequence of tokens with their positions.
    dropped = drop_patches(batch, mask)
    cols = min(gw, math.ceil(math.sqrt(n_vis * 1.6)))
    rows_ = math.ceil(n_vis / cols)
    tokens = dropped.tokens.new_full((1, rows_ * cols, dropped.tokens.shape[-1]), float("nan"))
    tokens[:, :n_vis] = dropped.tokens
    tiles = unpatchify(tokens, patch, (rows_, cols))[0]
    ax = axes[1, 1]
    ax.set_facecolor("white")
    ax.imshow(np.nan_to_num(hwc(tiles), nan=1.0))
    patch_lines(ax, tiles.shape[-2:], patch, color="white", alpha=1.0, lw=2.0)
    white = {"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.8}
    tag = {"ha": "left", "va": "top", "fontsize": font, "color": "black", "bbox": white}
    for k, pos in enumerate(dropped.positions[0].tolist()):
        r, c = divmod(k, cols)
        ax.text(c * patch + 2, r * patch + 2, str(pos), **tag)
    ax = axes[1, 2]
    _cell_map(ax, np.where(visible, 1, 0), [ABSENT_COLOR, VISIBLE_COLOR])
    for y, x in zip(*np.nonzero(visible), strict=True):
        ax.text(x, y, str(y * gw + x), ha="center", va="center", color="white", fontsize=font)

    # 3 · sparse: visible pixels only; a set of active sites that is the same at every scale.
    pixel = upsample_mask(mask, (height, width))[0, 0].numpy()
    rgba = np.concatenate([hwc(image), pixel[..., None].astype(np.float32)], axis=-1)
    hatched = {"facecolor": ABSENT_COLOR, "edgecolor": "#bbbbbb", "hatch": "///", "zorder": 0}
    axes[2, 1].add_patch(Rectangle((-0.5, -0.5), width, height, **hatched))
    axes[2, 1].imshow(rgba, zorder=1)
    ax = axes[2, 2]
    _cell_map(ax, np.zeros_like(visible, dtype=int), [ABSENT_COLOR])
    ys, xs = np.nonzero(visible)
    ax.scatter(xs, ys, s=70, color=VISIBLE_COLOR, zorder=3)
    for y, x in zip(ys, xs, strict=True):
        ax.text(x, y + 0.42, f"{y},{x}", ha="center", va="center", fontsize=font - 1.5)

    titles = (
        f"{height}×{width} image,\n{gh}×{gw} patches of {patch}×{patch} pixels",
        "masked pixels set to 0: they look like data",
        f"dense tensor 3×{height}×{width}: all {n_all} patches computed,\n"
        f"{n_all - n_vis} of them hold fake zeros",
        f"mask ratio {1 - n_vis / n_all:.2f}:\n{n_vis} of {n_all} patches stay visible",
        f"a sequence of {n_vis} tokens (visible patches only),\nread row by row; label = position",
        f"{n_vis} tokens + their positions on the {gh}×{gw} grid:\n"
        f"the {n_all - n_vis} masked patches do not exist",
        "the same image and mask\nin every row",
        "only visible pixels exist; masked ones are\nnot zero, they are absent",
        f"a set of {n_vis} active sites (y, x) with C features each;\n"
        "the same sites at every stride (sparse conv keeps them)",
    )
    for ax, title in zip(axes.flat, titles, strict=True):
        ax.set_title(title, fontsize=10)
        bare(ax)
    return fig


def plot_mask_grid(
    image: torch.Tensor,
    ratios: Sequence[float] = (0.4, 0.6, 0.75, 0.9),
    patches: Sequence[int] = (16, 32),
    *,
    seed: int = 0,
):
    """One masked copy of ``image`` per (patch size, mask ratio): rows = patches, columns = ratios.

    Each title gives the exact number of kept patches; masked pixels are shown dark.
    """
    image = _image(image)
    _, height, width = image.shape
    fig, axes = plt.subplots(
        len(patches),
        len(ratios),
        figsize=(3.3 * len(ratios), 2.75 * len(patches) + 0.4),
        squeeze=False,
        constrained_layout=True,
    )
    for row, patch in enumerate(patches):
        for col, ratio in enumerate(ratios):
            mask = make_patch_mask(1, height, width, patch, ratio, seed=seed)
            gh, gw = mask.shape[-2:]
            ax = axes[row, col]
            kept = show_masked(ax, image, mask, patch)
            promised = kept_patch_count(gh * gw, ratio)
            ax.set_title(
                f"patch {patch} · ratio {ratio:g}\nkeeps {kept} of {gh}×{gw} = {gh * gw}"
                + ("" if kept == promised else f" (expected {promised}!)"),
                fontsize=10,
            )
    fig.suptitle(f"SparK patch masks on a {height}×{width} image (seed {seed})", fontsize=12)
    return fig


def plot_mask_seeds(masks: Sequence[tuple[str, torch.Tensor]]):
    """Masks side by side, one axes each, titled by their labels: ``[(label, mask (1, h, w) or
    (h, w)), ...]`` (notebook 01 builds the list from seeds and one generator's steps)."""
    if not masks:
        raise DataError("plot_mask_seeds needs at least one (label, mask) pair.")
    fig, axes = plt.subplots(
        1, len(masks), figsize=(2.9 * len(masks), 2.6), squeeze=False, constrained_layout=True
    )
    for ax, (label, mask) in zip(axes[0], masks, strict=True):
        grid = _one_mask(mask)[0, 0].numpy()
        _cell_map(ax, grid.astype(int), [MASKED_COLOR, VISIBLE_COLOR])
        ax.set_title(f"{label}\nkeeps {int(grid.sum())} of {grid.size}", fontsize=10)
    fig.supxlabel("blue = visible patch, black = masked", fontsize=10)
    return fig
