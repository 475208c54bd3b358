"""Small helpers behind notebook 01 (masking strategies): example images and mask count tables.

The notebook only narrates; what it shows is computed here, so the same numbers come out of the
tests, the notebook and ``depthlib reproduce``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

from depthlib.data.transforms import resize_rgb
from depthlib.errors import ConfigError, DataError
from depthlib.spark.masks import kept_patch_count, make_patch_mask

__all__ = ["center_crop_to_aspect", "mask_count_table", "masks_by_seed", "room_images"]


def center_crop_to_aspect(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """The largest centred crop of an (H, W, 3) image with the aspect ratio height:width.

    Cropping before resizing keeps rooms undistorted when the figure size (a multiple of the
    patch) has another aspect ratio than the dataset (240×320 cropped to 224×320 loses 16 rows).
    """
    h, w = rgb.shape[:2]
    if h * width > w * height:  # too tall: crop rows
        new_h = max(1, round(w * height / width))
        top = (h - new_h) // 2
        return rgb[top : top + new_h]
    new_w = max(1, round(h * width / height))
    left = (w - new_w) // 2
    return rgb[:, left : left + new_w]


def room_images(
    path: str | os.PathLike,
    indices: Sequence[int],
    height: int = 224,
    width: int = 320,
) -> torch.Tensor:
    """Images ``indices`` of a labeled-layout file (rooms or NYU) as float (B, 3, H, W) in [0, 1].

    Each image is centre-cropped to the aspect ratio and resized to ``height``×``width`` (pick
    multiples of the patch size so a patch mask fits exactly). Indices are file indices.
    """
    from depthlib.data.nyu import NYULabeled

    if height < 1 or width < 1:
        raise ConfigError(f"height and width must be positive, got {height}x{width}.")
    reader = NYULabeled(path, split="all")
    try:
        out = []
        for index in indices:
            if not 0 <= int(index) < len(reader):
                raise DataError(
                    f"image index {index} is out of range: {path} holds {len(reader)} images "
                    f"(use 0..{len(reader) - 1})."
                )
            rgb = center_crop_to_aspect(reader[int(index)]["rgb"], height, width)
            if rgb.shape[:2] != (height, width):
                rgb = resize_rgb(rgb, (height, width))
            out.append(torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1))
    finally:
        reader.close()
    if not out:
        raise DataError("room_images needs at least one index.")
    return torch.stack(out).float() / 255.0


def mask_count_table(
    height: int,
    width: int,
    ratios: Sequence[float] = (0.4, 0.6, 0.75, 0.9),
    patches: Sequence[int] = (16, 32),
    *,
    batch: int = 4,
    seed: int = 0,
) -> list[dict]:
    """For each (patch, ratio): the patch grid, the kept count SparK's rule promises, and the
    kept counts per image that :func:`make_patch_mask` actually produced for a batch.

    Rows: patch, grid (h, w), patches, ratio, expected (round(n·(1−ratio))), kept (list per
    image), exact (every image keeps exactly ``expected``).
    """
    rows = []
    for patch in patches:
        for ratio in ratios:
            mask = make_patch_mask(batch, height, width, patch, ratio, seed=seed)
            grid = tuple(mask.shape[-2:])
            expected = kept_patch_count(grid[0] * grid[1], ratio)
            kept = mask.flatten(1).sum(dim=1).tolist()
            rows.append(
                {
                    "patch": patch,
                    "grid": grid,
                    "patches": grid[0] * grid[1],
                    "ratio": ratio,
                    "expected": expected,
                    "kept": kept,
                    "exact": all(k == expected for k in kept),
                }
            )
    return rows


def masks_by_seed(
    height: int,
    width: int,
    patch: int,
    ratio: float,
    seeds: Sequence[int] = (0, 0, 1),
    *,
    steps_from_generator: int = 0,
    generator_seed: int = 0,
) -> list[tuple[str, torch.Tensor]]:
    """Labelled single-image masks: one per seed in ``seeds`` (a repeated seed gives the same
    mask), then ``steps_from_generator`` consecutive masks drawn from one seeded generator — what
    a training loop does: a fresh mask every step, the whole sequence reproducible."""
    out = [(f"seed={s}", make_patch_mask(1, height, width, patch, ratio, seed=s)[0]) for s in seeds]
    generator = torch.Generator().manual_seed(generator_seed)
    for step in range(steps_from_generator):
        mask = make_patch_mask(1, height, width, patch, ratio, generator=generator)[0]
        out.append((f"generator({generator_seed}) step {step}", mask))
    return out
