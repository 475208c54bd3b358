"""Paired transforms: whatever moves pixels moves rgb, depth and valid together.

``resize`` works on a reader's numpy sample, ``Augment`` on a batch of tensors, every random
choice from the numpy ``Generator`` passed per sample. Depth is resized without mixing invalid
pixels into valid ones: ``"nearest"`` (default) copies real measurements, so object edges keep
their true depths; ``"area"`` averages each output cell's valid pixels (smoother, but it makes
in-between depths where a cell straddles an edge).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from depthlib.errors import ConfigError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Augment",
    "denormalize",
    "normalize",
    "random_resized_crop",
    "resize",
    "resize_depth",
    "resize_rgb",
]

# smp encoders (timm/torchvision ImageNet weights) expect RGB in [0, 1] normalised by these.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_GREY = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as torchvision's rgb_to_grayscale


def resize(sample: dict, size: Sequence[int], depth_mode: str = "nearest") -> dict:
    """Resize to (height, width): rgb by area (shrinking) or bilinear (enlarging), depth by
    ``depth_mode`` ("nearest" or "area", see the module docstring)."""
    if tuple(sample["depth"].shape) == tuple(size):
        return sample
    depth, valid = resize_depth(sample["depth"], sample["valid"], size, depth_mode)
    return dict(sample, rgb=resize_rgb(sample["rgb"], size), depth=depth, valid=valid)


def resize_rgb(rgb: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """uint8 (H, W, 3) to ``size``: box (area) filter when shrinking, bilinear otherwise."""
    (h, w), (oh, ow) = rgb.shape[:2], size
    method = Image.BOX if oh <= h and ow <= w else Image.BILINEAR
    return np.array(Image.fromarray(rgb).resize((ow, oh), method))  # writable copy


def resize_depth(
    depth: np.ndarray, valid: np.ndarray, size: Sequence[int], mode: str = "nearest"
) -> tuple[np.ndarray, np.ndarray]:
    """Resize depth and its validity so no invalid pixel's value reaches a valid output pixel.

    nearest: the input pixel under each output pixel's centre. area: the mean of the valid input
    pixels each output cell covers, valid where there is one. Invalid outputs are 0.
    """
    oh, ow = int(size[0]), int(size[1])
    if mode == "nearest":
        rows = _nearest_index(depth.shape[0], oh)
        cols = _nearest_index(depth.shape[1], ow)
        d, v = depth[rows][:, cols], valid[rows][:, cols]
        return np.where(v, d, 0).astype(np.float32), v.copy()
    if mode == "area":
        total = _box_resize(np.where(valid, depth, 0).astype(np.float32), oh, ow)
        count = _box_resize(valid.astype(np.float32), oh, ow)
        v = count > 0
        d = np.divide(total, count, out=np.zeros_like(total), where=v)
        return d.astype(np.float32), v
    raise ConfigError(f"depth resize mode must be 'nearest' or 'area', got {mode!r}.")


def _nearest_index(n_in: int, n_out: int) -> np.ndarray:
    centres = (np.arange(n_out) + 0.5) * (n_in / n_out)
    return np.minimum(np.floor(centres).astype(np.int64), n_in - 1)


def _box_resize(x: np.ndarray, oh: int, ow: int) -> np.ndarray:
    """PIL's area filter on a float32 image: the weights sum to 1 over each output cell, and a
    cell with no nonzero input stays exactly 0 (which is what makes ``count > 0`` exact)."""
    return np.array(Image.fromarray(x).resize((ow, oh), Image.BOX), dtype=np.float32)


@dataclass(frozen=True)
class Augment:
    """Training augmentation of a tensor batch: optional random crop (height, width), horizontal
    flip with probability ``flip``, and colour jitter of rgb only (brightness, contrast,
    saturation as torchvision orders and clips them; strength x: factor uniform in [1-x, 1+x])."""

    crop: tuple[int, int] | None = None
    flip: float = 0.5
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2

    def __call__(self, batch: dict, rngs: Sequence[np.random.Generator]) -> dict:
        """``batch``: ``rgb`` uint8 (B, 3, H, W), ``depth`` and ``valid`` (B, 1, H, W); one
        generator per sample, drawn in a fixed order (crop origin, flip, factors). Returns rgb
        as uint8 again."""
        rgb, depth, valid = batch["rgb"], batch["depth"], batch["valid"]
        (h, w), (ch, cw) = rgb.shape[-2:], self.crop or rgb.shape[-2:]
        if ch > h or cw > w:
            raise ConfigError(f"Crop size {ch}x{cw} is larger than the {h}x{w} image.")
        strengths = (self.brightness, self.contrast, self.saturation)
        origins, flips, factors = [], [], []
        for rng in rngs:
            if self.crop:
                origins.append((int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))))
            flips.append(bool(rng.random() < self.flip))
            factors.append([float(rng.uniform(max(0.0, 1 - x), 1 + x)) for x in strengths])
        if self.crop:
            rgb, depth, valid = (
                torch.stack(
                    [x[i, :, t : t + ch, left : left + cw] for i, (t, left) in enumerate(origins)]
                )
                for x in (rgb, depth, valid)
            )
        flipped = torch.tensor(flips).view(-1, 1, 1, 1)
        rgb, depth, valid = (torch.where(flipped, x.flip(-1), x) for x in (rgb, depth, valid))
        b, c, s = torch.tensor(factors, dtype=torch.float32).view(-1, 3, 1, 1, 1).unbind(1)
        weights = torch.tensor(_GREY).view(1, 3, 1, 1)
        x = (rgb.float() / 255.0 * b).clamp(0, 1)
        mean = (x * weights).sum(1, keepdim=True).mean((2, 3), keepdim=True)
        x = (mean + (x - mean) * c).clamp(0, 1)
        grey = (x * weights).sum(1, keepdim=True)
        x = (grey + (x - grey) * s).clamp(0, 1)
        return dict(batch, rgb=torch.round(x * 255).to(torch.uint8), depth=depth, valid=valid)


def normalize(rgb: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) rgb, uint8 0..255 or float 0..1, to float32 ImageNet-normalised."""
    x = rgb.float() / 255.0 if rgb.dtype == torch.uint8 else rgb.float()
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(3, 1, 1)
    return (x - mean) / std


def denormalize(image: torch.Tensor) -> torch.Tensor:
    """Undo ``normalize``: float rgb in [0, 1] (clipped), for display."""
    mean = torch.tensor(IMAGENET_MEAN, device=image.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=image.device).view(3, 1, 1)
    return (image * std + mean).clamp(0, 1)


def random_resized_crop(
    rgb: torch.Tensor,
    generator: torch.Generator,
    scale: tuple[float, float] = (0.67, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip: float = 0.5,
) -> torch.Tensor:
    """SparK's augmentation for a whole uint8 batch (B, 3, H, W) at once: per image a window of
    ``scale`` x the area and ``ratio`` x the aspect (clamped to the image), placed uniformly,
    mirrored with probability ``flip``, resampled bilinearly back to the input size by one
    ``affine_grid``/``grid_sample``. Returns float in [0, 1]; random numbers from ``generator``."""
    b = rgb.shape[0]
    u = torch.rand(b, 5, generator=generator, dtype=torch.float64)
    area = scale[0] + (scale[1] - scale[0]) * u[:, 0]
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[:, 1]
    aspect = torch.exp(log_r)  # crop aspect relative to the image's
    width = torch.sqrt(area * aspect).clamp(max=1.0)  # fractions of the image side
    height = torch.sqrt(area / aspect).clamp(max=1.0)
    cx = (1 - width) * (2 * u[:, 2] - 1)  # centre in [-1, 1] coordinates, window inside
    cy = (1 - height) * (2 * u[:, 3] - 1)
    mirror = torch.where(u[:, 4] < flip, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3, dtype=torch.float64)
    theta[:, 0, 0], theta[:, 0, 2] = width * mirror, cx
    theta[:, 1, 1], theta[:, 1, 2] = height, cy
    x = rgb.float() / 255.0
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
