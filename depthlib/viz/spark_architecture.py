"""SparK's pipeline (the paper's Figure 3) drawn from the real model: every shape is measured by a
forward pass with hooks, so the figure follows the encoder, its depth and the decoder widths
instead of a hard-coded picture (UNet++'s grid: :mod:`depthlib.viz.unetpp_architecture`)."""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Circle, Rectangle

from depthlib.data.transforms import normalize
from depthlib.errors import DataError, require_multiple
from depthlib.spark.masks import patchify, upsample_mask
from depthlib.spark.model import normalize_patches
from depthlib.viz import hwc
from depthlib.viz.diagram import (
    DECODER_COLOR,
    EMPTY_COLOR,
    ENCODER_COLOR,
    LOSS_COLOR,
    TOKEN_COLOR,
    arrow,
    box,
    canvas,
    cell_grid,
    label,
    picture,
    placeholder,
    shape_text,
)
from depthlib.viz.masking import VISIBLE_COLOR

__all__ = ["plot_spark_architecture"]


# ---------------------------------------------------------------- SparK
def _spark_input(model, image, mask, normalized: bool):
    """(normalised (1, 3, H, W) input, whether it is a real image, (1, 1, h, w) mask)."""
    real = image is not None
    if real:
        if image.dim() == 3:
            image = image[None]
        if image.dim() != 4 or image.shape[1] != 3:
            raise DataError(
                f"image must be one RGB image (3, H, W) or a batch (B, 3, H, W) (the first is "
                f"drawn), got {tuple(image.shape)}."
            )
        image = image[:1].detach().cpu()
        if image.is_floating_point() and not normalized and float(image.max()) > 1.5:
            raise DataError(
                "Float RGB must lie in [0, 1] but its maximum is above 1.5. Pass uint8, divide "
                "by 255, or set normalized=True for ImageNet-normalised input."
            )
        x = image.float() if normalized else normalize(image)
    else:
        generator = torch.Generator().manual_seed(0)  # noise: every stage has non-zero features
        x = torch.randn(1, 3, 2 * model.patch, 3 * model.patch, generator=generator)
    h, w = x.shape[-2:]
    require_multiple(h, w, model.patch, "Image size", "the patch size")
    if mask is None:
        generator = torch.Generator().manual_seed(0)
        mask = model.random_mask(1, x.shape[-2], x.shape[-1], generator=generator)
    elif mask.dim() in (2, 3):
        mask = mask.reshape(1, 1, *mask.shape[-2:])
    return x, real, mask[:1].cpu()


def _spark_trace(model, x, mask) -> dict:
    """Run ``model.reconstruct`` once and record what every stage produced."""
    seen: dict = {}
    hooks = [
        model.encoder.register_forward_hook(lambda m, i, o: seen.__setitem__("features", o)),
        model.densify.register_forward_hook(lambda m, i, o: seen.__setitem__("dense", o)),
        model.decoder.register_forward_hook(lambda m, i, o: seen.__setitem__("prediction", o)),
    ]
    for k, block in enumerate(model.decoder.blocks):
        hooks.append(block.register_forward_hook(lambda m, i, o, k=k: seen.__setitem__(k, o)))
    try:
        seen["recon"] = model.reconstruct(x, mask)
    finally:
        for hook in hooks:
            hook.remove()
    seen["blocks"] = [seen.pop(k) for k in range(len(model.decoder.blocks))]
    # shallow first: the encoder's SparK scales (stride 4 … patch) and their densified maps
    seen["features"] = [seen["features"][k] for k in reversed(model.feature_indices)]
    seen["dense"] = list(reversed(seen["dense"]))
    seen["patch"] = model.patch
    goal, _, _ = normalize_patches(patchify(x, model.patch))
    error = (patchify(seen["prediction"], model.patch) - goal).square().mean(-1)
    seen["patch_loss"] = error.reshape(mask.shape[-2:]).numpy()
    return seen


@dataclass
class _Board:
    """Where the SparK diagram's pieces go (inches): columns input, mask, masked input, then one
    per encoder stage; rows encoder (top), densify (middle), decoder (bottom)."""

    n_stages: int
    dx: float = 2.35
    left: float = 1.2
    thumb: float = 1.65  # width of the image thumbnails
    top: float = 6.7
    mid: float = 3.95
    bottom: float = 1.75
    height: float = 8.6

    @property
    def xs(self) -> list[float]:
        return [self.left + self.dx * c for c in range(3 + self.n_stages)]

    @property
    def width(self) -> float:
        return self.left + self.dx * (3 + self.n_stages)

    def stage_width(self, k: int) -> float:
        return 1.55 * 0.86**k  # deeper stages drawn smaller


def _draw_masking(ax, b: _Board, x, seen, mask, real) -> float:
    """Input → patch mask → masked input; returns the thumbnails' height."""
    recon, patch, xs = seen["recon"], seen["patch"], b.xs
    visible = mask[0, 0].numpy()
    size = tuple(x.shape[-2:])
    rgb = hwc(recon["input"][0]) if real else placeholder(*size)
    masked = hwc(recon["masked"][0]) if real else placeholder(*size, ~visible, patch)
    th = picture(ax, rgb, (xs[0], b.top), b.thumb)
    what = "input image" if real else "input image (placeholder)"
    label(ax, (xs[0], b.top + th / 2 + 0.1), f"{what}\n3×{size[0]}×{size[1]}")
    gw = b.thumb * 0.8
    gh = cell_grid(ax, visible.astype(int), (xs[1], b.top), gw, [LOSS_COLOR, VISIBLE_COLOR])
    label(
        ax,
        (xs[1], b.top + gh / 2 + 0.1),
        f"patch mask, patch {patch} px\n= encoder stride; "
        f"{int(visible.sum())} of {visible.size} visible",
    )
    picture(ax, masked, (xs[2], b.top), b.thumb)
    label(ax, (xs[2], b.top + th / 2 + 0.1), "masked input\n(hidden patches removed)")
    arrow(ax, (xs[0] + b.thumb / 2, b.top), (xs[1] - gw / 2, b.top))
    arrow(ax, (xs[1] + gw / 2, b.top), (xs[2] - b.thumb / 2, b.top), "×")
    return th


def _draw_encoder_and_densify(ax, b: _Board, x, seen, mask) -> list[float]:
    """One column per encoder stage: the sparse feature map's sites (measured: a masked site
    holding a non-zero feature would be drawn red), and below it the densified map. Returns the
    densified maps' heights."""
    xs, heights = b.xs, []
    for k, (feature, dense) in enumerate(zip(seen["features"], seen["dense"], strict=True)):
        c, width = 3 + k, b.stage_width(k)
        sites = upsample_mask(mask, feature.shape[-2:])[0, 0].numpy()
        leaked = (feature[0].abs().amax(0) > 0).numpy() & ~sites
        codes = np.where(sites, 1, np.where(leaked, 2, 0))
        colors = [EMPTY_COLOR, ENCODER_COLOR, LOSS_COLOR]
        fh = cell_grid(ax, codes, (xs[c], b.top), width, colors)
        stride = x.shape[-1] // feature.shape[-1]
        label(
            ax,
            (xs[c], b.top + fh / 2 + 0.1),
            f"stage {stride.bit_length() - 1} · stride {stride}",
            fontweight="bold",
        )
        label(ax, (xs[c], b.top - fh / 2 - 0.1), shape_text(feature), above=False)
        prev = xs[c - 1] + (b.thumb if k == 0 else b.stage_width(k - 1)) / 2
        what = "sparse\nconvs" if k else "sparse\nencoder"
        arrow(ax, (prev, b.top), (xs[c] - width / 2, b.top), what)
        dh = cell_grid(ax, sites.astype(int), (xs[c], b.mid), width, [TOKEN_COLOR, ENCODER_COLOR])
        kernel = "1×1" if k == b.n_stages - 1 else "3×3"
        label(
            ax, (xs[c], b.mid - dh / 2 - 0.1), f"conv {kernel} → {shape_text(dense)}", above=False
        )
        arrow(
            ax,
            (xs[c], b.top - fh / 2 - 0.35),
            (xs[c], b.mid + dh / 2 + 0.05),
            "norm + [M]",
            offset=(0.08, -0.05),
        )
        heights.append(dh)
    return heights


def _draw_decoder(ax, b: _Board, seen, dense_heights: list[float]) -> tuple[float, float]:
    """Blocks right to left, one between two columns; a "+" where a densified skip is added
    (every stage but the deepest). Returns where the last block's output leaves."""
    xs, half = b.xs, 0.74
    for k in range(b.n_stages - 1):  # the skips: block k's output + densified stage k from above
        plus = (xs[3 + k], b.bottom)
        ax.add_patch(Circle(plus, 0.14, facecolor="white", edgecolor=DECODER_COLOR, lw=1.4))
        ax.text(
            *plus,
            "+",
            ha="center",
            va="center",
            fontsize=10,
            color=DECODER_COLOR,
            fontweight="bold",
        )
        top = (plus[0], b.mid - dense_heights[k] / 2 - 0.35)
        arrow(ax, top, (plus[0], plus[1] + 0.15), color=DECODER_COLOR)
    deepest = (xs[-1], b.mid - dense_heights[-1] / 2 - 0.35)
    for i, out in enumerate(seen["blocks"]):
        c = len(xs) - 1 - i  # block i sits between columns c and c - 1
        centre = ((xs[c] + xs[c - 1]) / 2, b.bottom)
        box(
            ax,
            centre,
            (2 * half - 0.03, 0.62),
            f"block {i + 1}: up ×2\n{shape_text(out)}",
            DECODER_COLOR,
        )
        if i == 0:
            start = deepest
        elif c >= 3:  # from the "+" at column c
            start = (xs[c] - 0.14, b.bottom)
        else:  # from the previous block's left edge
            start = (xs[c] + b.dx / 2 - half, b.bottom)
        arrow(ax, start, (centre[0] + half, b.bottom), color=DECODER_COLOR, rad=-0.25 * (i == 0))
        if c - 1 >= 3:
            arrow(
                ax, (centre[0] - half, b.bottom), (xs[c - 1] + 0.14, b.bottom), color=DECODER_COLOR
            )
    return (xs[1] + xs[2]) / 2 - half, b.bottom


def _draw_loss(ax, b: _Board, seen, mask, real, th: float, decoder_out) -> None:
    """Reconstruction, and the loss per masked patch (grey: visible patches, not counted)."""
    recon, patch, xs = seen["recon"], seen["patch"], b.xs
    visible = mask[0, 0].numpy()
    pred = hwc(recon["prediction"][0]) if real else placeholder(*recon["input"].shape[-2:])
    rh = picture(ax, pred, (xs[0], b.bottom), b.thumb, ~visible if real else None, patch)
    arrow(ax, decoder_out, (xs[0] + b.thumb / 2, b.bottom), "1×1 conv\n→ 3 ch", color=DECODER_COLOR)
    what = "(de-normalised per patch)" if real else "(placeholder)"
    label(ax, (xs[0], b.bottom - rh / 2 - 0.1), f"reconstruction\n{what}", above=False)
    lw = b.thumb * 0.8
    lh = lw * visible.shape[0] / visible.shape[1]
    lc = (xs[1], b.mid)
    if real:
        loss_map = np.ma.masked_array(seen["patch_loss"], mask=visible)
        ax.imshow(
            loss_map,
            cmap=plt.get_cmap("Reds").with_extremes(bad=EMPTY_COLOR),
            vmin=0,
            interpolation="nearest",
            extent=(lc[0] - lw / 2, lc[0] + lw / 2, lc[1] - lh / 2, lc[1] + lh / 2),
        )
        if visible.size <= 12:  # few patches: write each one's loss
            for y, x in zip(*np.nonzero(~visible), strict=True):
                ax.text(
                    lc[0] - lw / 2 + (x + 0.5) * lw / visible.shape[1],
                    lc[1] + lh / 2 - (y + 0.5) * lh / visible.shape[0],
                    f"{seen['patch_loss'][y, x]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=7.5,
                    color="white",
                )
    else:
        cell_grid(ax, visible.astype(int), lc, lw, [LOSS_COLOR, EMPTY_COLOR])
    label(
        ax,
        (lc[0], lc[1] + lh / 2 + 0.1),
        "loss: MSE to per-patch-\nnormalised pixels",
        color=LOSS_COLOR,
        fontweight="bold",
    )
    value = f" = {float(recon['loss']):.3f}" if real else ""
    label(
        ax,
        (lc[0], lc[1] - lh / 2 - 0.1),
        f"masked patches only{value}\n(grey: visible, ignored)",
        above=False,
        color=LOSS_COLOR,
    )
    arrow(
        ax,
        (xs[0] + 0.2, b.top - th / 2 - 0.05),
        (lc[0] - lw / 2, lc[1] + lh / 4),
        "target",
        offset=(-0.55, -0.1),
    )
    arrow(ax, (xs[0] + 0.2, b.bottom + rh / 2 + 0.05), (lc[0] - lw / 2, lc[1] - lh / 4))


def _draw_notes(ax, b: _Board, model) -> None:
    xs = b.xs
    config = model.config
    ax.text(
        b.left - 0.9,
        b.height - 0.1,
        "SparK pretraining, drawn from the model: "
        f"{config['encoder']}, encoder depth {config['encoder_depth']}, decoder width "
        f"{config['decoder_width']}",
        ha="left",
        va="top",
        fontsize=12,
        fontweight="bold",
    )
    legend = (
        (ENCODER_COLOR, "visible site (features)"),
        (EMPTY_COLOR, "empty site (masked)"),
        (TOKEN_COLOR, "mask token [M]"),
        (LOSS_COLOR, "masked patch"),
    )
    lx = xs[3] - 0.9
    for color, text in legend:
        ax.add_patch(
            Rectangle(
                (lx, b.height - 0.6), 0.18, 0.18, facecolor=color, edgecolor="#999999", lw=0.5
            )
        )
        ax.text(lx + 0.26, b.height - 0.51, text, va="center", fontsize=8.5)
        lx += 0.55 + 0.075 * len(text)
    notes = (
        "densify: sparse norm of the visible sites → the learned mask token [M] of that scale "
        "fills the empty sites (orange) → projection to the decoder width",
        "light decoder: ConvTranspose ×2 → conv3×3-BN-ReLU6-conv3×3-BN per block; densified "
        "skips are added (+), not concatenated",
    )
    for row, note in enumerate(notes):
        ax.text(
            xs[1] - 0.5,
            b.bottom - 1.05 - 0.3 * row,
            note,
            ha="left",
            va="center",
            fontsize=8.5,
            color="#333333",
            style="italic",
        )


def plot_spark_architecture(
    model,
    image: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    *,
    normalized: bool = False,
):
    """SparK's Figure 3 drawn from ``model``: input → patch mask → masked input → sparse encoder
    stages (masked sites empty) → densify (mask tokens fill the holes, projection) → light decoder
    (upsampling blocks, skip-add) → reconstruction → loss on the masked patches only.

    ``image``: one image (3, H, W) or a batch (first image drawn), RGB uint8 or float in [0, 1]
    (ImageNet-normalised float if ``normalized``); None draws neutral placeholders on a 2×3-patch
    input. ``mask``: its patch mask, True = visible (None: a seeded random SparK mask). Every
    C×H×W is measured by one forward pass of ``model``.
    """
    x, real, mask = _spark_input(model, image, mask, normalized)
    with torch.no_grad():
        seen = _spark_trace(model, x, mask)
    b = _Board(n_stages=len(seen["features"]))
    fig, ax = canvas(b.width, b.height)
    th = _draw_masking(ax, b, x, seen, mask, real)
    dense_heights = _draw_encoder_and_densify(ax, b, x, seen, mask)
    decoder_out = _draw_decoder(ax, b, seen, dense_heights)
    _draw_loss(ax, b, seen, mask, real, th, decoder_out)
    _draw_notes(ax, b, model)
    return fig
