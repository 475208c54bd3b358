"""SparK's pipeline (the paper's Figure 3) drawn from the real model: every shape is measured by a
forward pass with hooks, so the figure follows the encoder, its depth and the decoder widths
instead of a hard-coded picture (UNet++'s grid: :mod:`depthlib.viz.unetpp_architecture`)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Circle, Rectangle

from depthlib.data.transforms import normalize
from depthlib.errors import DataError, require_multiple
from depthlib.spark.model import normalize_patches, patchify, reconstruct
from depthlib.spark.sparse import upsample_mask
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
    record_outputs,
    shape_text,
)
from depthlib.viz.masking import VISIBLE_COLOR

__all__ = ["plot_spark_architecture"]

# The board, in inches: columns input, mask, masked input, then one per encoder stage (DX apart);
# rows encoder (TOP), densify (MID), decoder (BOTTOM).
DX, LEFT, THUMB = 2.35, 1.2, 1.65  # THUMB: width of the image thumbnails
TOP, MID, BOTTOM, HEIGHT = 6.7, 3.95, 1.75, 8.6


def _stage_width(k: int) -> float:
    return 1.55 * 0.86**k  # deeper stages drawn smaller


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
        mask = model.random_mask(1, h, w, generator=torch.Generator().manual_seed(0))
    return x, real, mask.reshape(-1, 1, *mask.shape[-2:])[:1].cpu()


def _spark_trace(model, x, mask) -> dict:
    """Run :func:`reconstruct` once and record what every stage produced, shallow first."""
    blocks = dict(enumerate(model.decoder.blocks))
    modules = {"features": model.encoder, "dense": model.densify, "prediction": model.decoder}
    seen = record_outputs({**modules, **blocks}, lambda: reconstruct(model, x, mask))
    seen["blocks"] = [seen.pop(k) for k in blocks]
    # the encoder's SparK scales (stride 4 … patch) and their densified maps
    seen["features"] = [seen["features"][k] for k in reversed(model.feature_indices)]
    seen["dense"] = list(reversed(seen["dense"]))
    goal, _, _ = normalize_patches(patchify(x, model.patch))
    error = (patchify(seen["prediction"], model.patch) - goal).square().mean(-1)
    seen["patch_loss"] = error.reshape(mask.shape[-2:]).numpy()
    return seen


def _draw_masking(ax, xs, recon, visible, patch, real) -> float:
    """Input → patch mask → masked input; returns the thumbnails' height."""
    size = tuple(recon["input"].shape[-2:])
    rgb = hwc(recon["input"][0]) if real else placeholder(*size)
    masked = hwc(recon["masked"][0]) if real else placeholder(*size, ~visible, patch)
    th = picture(ax, rgb, (xs[0], TOP), THUMB)
    what = "input image" if real else "input image (placeholder)"
    label(ax, (xs[0], TOP + th / 2 + 0.1), f"{what}\n3×{size[0]}×{size[1]}")
    gw = THUMB * 0.8
    gh = cell_grid(ax, visible.astype(int), (xs[1], TOP), gw, [LOSS_COLOR, VISIBLE_COLOR])
    label(
        ax,
        (xs[1], TOP + gh / 2 + 0.1),
        f"patch mask, patch {patch} px\n= encoder stride; "
        f"{int(visible.sum())} of {visible.size} visible",
    )
    picture(ax, masked, (xs[2], TOP), THUMB)
    label(ax, (xs[2], TOP + th / 2 + 0.1), "masked input\n(hidden patches removed)")
    arrow(ax, (xs[0] + THUMB / 2, TOP), (xs[1] - gw / 2, TOP))
    arrow(ax, (xs[1] + gw / 2, TOP), (xs[2] - THUMB / 2, TOP), "×")
    return th


def _draw_encoder_and_densify(ax, xs, x, seen, mask) -> list[float]:
    """One column per encoder stage: the sparse feature map's sites (measured: a masked site
    holding a non-zero feature would be drawn red), and below it the densified map. Returns the
    densified maps' heights."""
    heights, n_stages = [], len(seen["features"])
    for k, (feature, dense) in enumerate(zip(seen["features"], seen["dense"], strict=True)):
        c, width = 3 + k, _stage_width(k)
        sites = upsample_mask(mask, feature.shape[-2:])[0, 0].numpy()
        leaked = (feature[0].abs().amax(0) > 0).numpy() & ~sites
        codes = np.where(sites, 1, np.where(leaked, 2, 0))
        fh = cell_grid(ax, codes, (xs[c], TOP), width, [EMPTY_COLOR, ENCODER_COLOR, LOSS_COLOR])
        stride = x.shape[-1] // feature.shape[-1]
        title = f"stage {stride.bit_length() - 1} · stride {stride}"
        label(ax, (xs[c], TOP + fh / 2 + 0.1), title, fontweight="bold")
        label(ax, (xs[c], TOP - fh / 2 - 0.1), shape_text(feature), above=False)
        prev = xs[c - 1] + (THUMB if k == 0 else _stage_width(k - 1)) / 2
        arrow(
            ax, (prev, TOP), (xs[c] - width / 2, TOP), "sparse\nconvs" if k else "sparse\nencoder"
        )
        dh = cell_grid(ax, sites.astype(int), (xs[c], MID), width, [TOKEN_COLOR, ENCODER_COLOR])
        kernel = "1×1" if k == n_stages - 1 else "3×3"
        text = f"conv {kernel} → {shape_text(dense)}"
        label(ax, (xs[c], MID - dh / 2 - 0.1), text, above=False)
        start, end = (xs[c], TOP - fh / 2 - 0.35), (xs[c], MID + dh / 2 + 0.05)
        arrow(ax, start, end, "norm + [M]", offset=(0.08, -0.05))
        heights.append(dh)
    return heights


def _draw_decoder(ax, xs, blocks, dense_heights: list[float]) -> tuple[float, float]:
    """Blocks right to left, one between two columns; a "+" where a densified skip is added
    (every stage but the deepest). Returns where the last block's output leaves."""
    half = 0.74
    for k in range(len(dense_heights) - 1):  # block k's output + densified stage k from above
        plus = (xs[3 + k], BOTTOM)
        ax.add_patch(Circle(plus, 0.14, facecolor="white", edgecolor=DECODER_COLOR, lw=1.4))
        style = {"fontsize": 10, "color": DECODER_COLOR, "fontweight": "bold"}
        ax.text(*plus, "+", ha="center", va="center", **style)
        top = (plus[0], MID - dense_heights[k] / 2 - 0.35)
        arrow(ax, top, (plus[0], plus[1] + 0.15), color=DECODER_COLOR)
    for i, out in enumerate(blocks):
        c = len(xs) - 1 - i  # block i sits between columns c and c - 1
        centre = ((xs[c] + xs[c - 1]) / 2, BOTTOM)
        text = f"block {i + 1}: up ×2\n{shape_text(out)}"
        box(ax, centre, (2 * half - 0.03, 0.62), text, DECODER_COLOR)
        if i == 0:  # from the deepest densified map
            start = (xs[-1], MID - dense_heights[-1] / 2 - 0.35)
        elif c >= 3:  # from the "+" at column c
            start = (xs[c] - 0.14, BOTTOM)
        else:  # from the previous block's left edge
            start = (xs[c] + DX / 2 - half, BOTTOM)
        arrow(ax, start, (centre[0] + half, BOTTOM), color=DECODER_COLOR, rad=-0.25 * (i == 0))
        if c - 1 >= 3:
            end = (xs[c - 1] + 0.14, BOTTOM)
            arrow(ax, (centre[0] - half, BOTTOM), end, color=DECODER_COLOR)
    return (xs[1] + xs[2]) / 2 - half, BOTTOM


def _draw_loss(ax, xs, seen, visible, patch, real, th: float, decoder_out) -> None:
    """Reconstruction, and the loss per masked patch (grey: visible patches, not counted)."""
    recon = seen["result"]
    pred = hwc(recon["prediction"][0]) if real else placeholder(*recon["input"].shape[-2:])
    rh = picture(ax, pred, (xs[0], BOTTOM), THUMB, ~visible if real else None, patch)
    arrow(ax, decoder_out, (xs[0] + THUMB / 2, BOTTOM), "1×1 conv\n→ 3 ch", color=DECODER_COLOR)
    what = "(de-normalised per patch)" if real else "(placeholder)"
    label(ax, (xs[0], BOTTOM - rh / 2 - 0.1), f"reconstruction\n{what}", above=False)
    (gh, gw), lw = visible.shape, THUMB * 0.8
    lh = lw * gh / gw
    lx, ly = xs[1], MID
    if real:
        ax.imshow(
            np.ma.masked_array(seen["patch_loss"], mask=visible),
            cmap=plt.get_cmap("Reds").with_extremes(bad=EMPTY_COLOR),
            vmin=0,
            interpolation="nearest",
            extent=(lx - lw / 2, lx + lw / 2, ly - lh / 2, ly + lh / 2),
        )
        if visible.size <= 12:  # few patches: write each one's loss
            for y, x in zip(*np.nonzero(~visible), strict=True):
                cell = (lx - lw / 2 + (x + 0.5) * lw / gw, ly + lh / 2 - (y + 0.5) * lh / gh)
                text = f"{seen['patch_loss'][y, x]:.2f}"
                ax.text(*cell, text, ha="center", va="center", fontsize=7.5, color="white")
    else:
        cell_grid(ax, visible.astype(int), (lx, ly), lw, [LOSS_COLOR, EMPTY_COLOR])
    title = "loss: MSE to per-patch-\nnormalised pixels"
    label(ax, (lx, ly + lh / 2 + 0.1), title, color=LOSS_COLOR, fontweight="bold")
    value = f" = {float(recon['loss']):.3f}" if real else ""
    text = f"masked patches only{value}\n(grey: visible, ignored)"
    label(ax, (lx, ly - lh / 2 - 0.1), text, above=False, color=LOSS_COLOR)
    target = (xs[0] + 0.2, TOP - th / 2 - 0.05)
    arrow(ax, target, (lx - lw / 2, ly + lh / 4), "target", offset=(-0.55, -0.1))
    arrow(ax, (xs[0] + 0.2, BOTTOM + rh / 2 + 0.05), (lx - lw / 2, ly - lh / 4))


def _draw_notes(ax, xs, config) -> None:
    title = (
        "SparK pretraining, drawn from the model: "
        f"{config['encoder']}, encoder depth {config['encoder_depth']}, decoder width "
        f"{config['decoder_width']}"
    )
    ax.text(LEFT - 0.9, HEIGHT - 0.1, title, ha="left", va="top", fontsize=12, fontweight="bold")
    legend = (
        (ENCODER_COLOR, "visible site (features)"),
        (EMPTY_COLOR, "empty site (masked)"),
        (TOKEN_COLOR, "mask token [M]"),
        (LOSS_COLOR, "masked patch"),
    )
    lx = xs[3] - 0.9
    for color, text in legend:
        ax.add_patch(Rectangle((lx, HEIGHT - 0.6), 0.18, 0.18, fc=color, ec="#999999", lw=0.5))
        ax.text(lx + 0.26, HEIGHT - 0.51, text, va="center", fontsize=8.5)
        lx += 0.55 + 0.075 * len(text)
    notes = (
        "densify: sparse norm of the visible sites → the learned mask token [M] of that scale "
        "fills the empty sites (orange) → projection to the decoder width",
        "light decoder: ConvTranspose ×2 → conv3×3-BN-ReLU6-conv3×3-BN per block; densified "
        "skips are added (+), not concatenated",
    )
    style = {"fontsize": 8.5, "color": "#333333", "style": "italic"}
    for row, note in enumerate(notes):
        ax.text(xs[1] - 0.5, BOTTOM - 1.05 - 0.3 * row, note, ha="left", va="center", **style)


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
    visible = mask[0, 0].numpy()
    xs = [LEFT + DX * c for c in range(3 + len(seen["features"]))]
    fig, ax = canvas(LEFT + DX * len(xs), HEIGHT)
    th = _draw_masking(ax, xs, seen["result"], visible, model.patch, real)
    dense_heights = _draw_encoder_and_densify(ax, xs, x, seen, mask)
    decoder_out = _draw_decoder(ax, xs, seen["blocks"], dense_heights)
    _draw_loss(ax, xs, seen, visible, model.patch, real, th, decoder_out)
    _draw_notes(ax, xs, model.config)
    return fig
