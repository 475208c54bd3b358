"""Example images for notebooks 01-03, and the three ways a network can see a masked image
(notebook 01, Figure 1): zero-out (masked pixels overwritten, data to a dense network), drop
(masked patches removed, as MAE/ViT do with tokens) and sparse (only visible positions exist:
SparK). A mask is SparK's: bool ``(B, 1, h, w)`` over the patch grid, True = visible.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from depthlib.course.gallery import file_samples
from depthlib.data.pools import center_crop_to_aspect, fit_to_size
from depthlib.errors import ConfigError, DataError
from depthlib.spark.model import patchify, unpatchify
from depthlib.spark.sparse import upsample_mask

__all__ = [
    "DroppedPatches",
    "center_crop_to_aspect",
    "drop_patches",
    "gather_visible",
    "restore_patches",
    "room_images",
    "sparsify",
    "zero_out",
]


def room_images(
    path: str | os.PathLike, indices: Sequence[int], height: int = 224, width: int = 320
) -> torch.Tensor:
    """File images ``indices`` of a labeled-layout file (rooms or NYU) as float (B, 3, H, W) in
    [0, 1], centre-cropped to the aspect ratio and resized to ``height``×``width``."""
    if height < 1 or width < 1:
        raise ConfigError(f"height and width must be positive, got {height}x{width}.")
    out = []
    for sample in file_samples(path, indices):
        rgb = fit_to_size(sample["rgb"], (height, width))
        out.append(torch.from_numpy(rgb).permute(2, 0, 1))
    if not out:
        raise DataError("room_images needs at least one index.")
    return torch.stack(out).float() / 255.0


def _pixel_mask(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The patch mask at the resolution of ``images`` (B, C, H, W), one mask per image."""
    if mask.shape[0] != images.shape[0]:
        raise DataError(
            f"mask batch size {mask.shape[0]} does not match the batch size {images.shape[0]}; "
            "make one mask per image."
        )
    return upsample_mask(mask, images.shape[-2:]).to(images.device)


def zero_out(
    images: torch.Tensor, mask: torch.Tensor, value: float | torch.Tensor = 0.0
) -> torch.Tensor:
    """Strategy 1: overwrite masked pixels with ``value`` (a scalar or a per-channel (C,) tensor);
    a dense network cannot tell them from real ones, the problem SparK solves."""
    fill = torch.as_tensor(value, dtype=images.dtype, device=images.device)
    if fill.dim() == 1:
        fill = fill.view(1, -1, 1, 1)
    return torch.where(_pixel_mask(images, mask), images, fill)


@dataclass
class DroppedPatches:
    """Strategy 2's result: ``tokens`` (B, n_visible, patch·patch·C) of the visible patches,
    their row-major ``positions`` (B, n_visible) on the ``grid`` (h, w), and the ``patch`` side."""

    tokens: torch.Tensor
    positions: torch.Tensor
    grid: tuple[int, int]
    patch: int


def drop_patches(images: torch.Tensor, mask: torch.Tensor) -> DroppedPatches:
    """Strategy 2 (MAE/ViT): only the visible patches as tokens, plus their positions. Every
    image must keep as many patches (a batch is rectangular), as ``make_patch_mask`` ensures."""
    b, _, h, w = images.shape
    gh, gw = mask.shape[-2:]
    _pixel_mask(images, mask)  # checks the batch and the grid
    if h // gh != w // gw:
        raise DataError(f"image {h}x{w} is not square patches on the mask grid {gh}x{gw}.")
    flat = mask.reshape(b, gh * gw).to(images.device)
    counts = flat.sum(dim=1)
    if not bool((counts == counts[0]).all()):
        raise DataError(
            f"drop_patches needs the same number of visible patches in every image, got "
            f"{counts.tolist()}; use make_patch_mask, which keeps an exact count per image."
        )
    positions = flat.nonzero()[:, 1].view(b, int(counts[0]))
    all_tokens = patchify(images, h // gh)
    index = positions.unsqueeze(-1).expand(-1, -1, all_tokens.shape[-1])
    return DroppedPatches(all_tokens.gather(1, index), positions, (gh, gw), h // gh)


def restore_patches(dropped: DroppedPatches, fill: float = 0.0) -> torch.Tensor:
    """Back from tokens to an image (B, C, H, W); dropped patches are filled with ``fill``
    (``float('nan')`` shows them as holes in a figure)."""
    tokens, positions = dropped.tokens, dropped.positions
    b, _, d = tokens.shape
    full = tokens.new_full((b, dropped.grid[0] * dropped.grid[1], d), fill)
    full.scatter_(1, positions.unsqueeze(-1).expand(-1, -1, d), tokens)
    return unpatchify(full, dropped.patch, dropped.grid)


def sparsify(features: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Strategy 3 (SparK) in dense layout: ``(features * pixel_mask, pixel_mask)``. Sparse
    operators read the mask to know where features exist; the zeros are only storage."""
    pixel_mask = _pixel_mask(features, mask)
    return features * pixel_mask, pixel_mask


def gather_visible(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Strategy 3 as a list: the (N_visible, C) feature vectors, ordered by (batch, row, column)."""
    return features.permute(0, 2, 3, 1)[_pixel_mask(features, mask)[:, 0]]
