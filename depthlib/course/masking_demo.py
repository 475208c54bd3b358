"""Example images for the masking and SparK notebooks (01-03): rooms centre-cropped and resized
to a size the patch grid divides, as float tensors."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

from depthlib.data.transforms import resize_rgb
from depthlib.errors import ConfigError, DataError

__all__ = ["center_crop_to_aspect", "room_images"]


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
