"""Paired transforms: whatever moves pixels moves rgb, depth and valid together.

Sample-dict functions work on numpy samples (``rgb`` uint8 (H, W, 3), ``depth`` float32 (H, W),
``valid`` bool (H, W)); every random choice comes from a numpy ``Generator`` the caller passes,
so a seed fixes the augmentation. ``Augment`` applies the same random choices either to a numpy
sample or, for data preloaded into tensors, to a whole batch at once (the cheap CPU path).

Depth is resized without ever mixing invalid pixels into valid ones:
``"nearest"`` (default) copies real measurements, so object edges keep their true depths;
``"area"`` averages the valid pixels of each output cell only (valid = at least one valid pixel
in the cell); it is smoother but makes in-between depths where a cell straddles an edge.
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
    "color_jitter",
    "crop",
    "denormalize",
    "hflip",
    "normalize",
    "normalize_hwc",
    "random_crop",
    "random_resized_crop",
    "resize",
    "resize_depth",
    "resize_rgb",
]

# smp encoders (timm/torchvision ImageNet weights) expect RGB in [0, 1] normalised by these.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_GREY = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as torchvision's rgb_to_grayscale

Sample = dict


# ------------------------------------------------------------------ geometry on numpy samples


def hflip(sample: Sample) -> Sample:
    """Mirror left-right: rgb, depth and valid together."""
    out = dict(sample)
    for key in ("rgb", "depth", "valid"):
        out[key] = np.ascontiguousarray(sample[key][:, ::-1])
    return out


def crop(sample: Sample, top: int, left: int, height: int, width: int) -> Sample:
    """The window [top:top+height, left:left+width] of rgb, depth and valid."""
    h, w = sample["depth"].shape
    if not (0 <= top and 0 <= left and top + height <= h and left + width <= w):
        raise ConfigError(
            f"Crop {height}x{width} at ({top}, {left}) does not fit a {h}x{w} image; "
            "choose a smaller crop or resize first."
        )
    out = dict(sample)
    for key in ("rgb", "depth", "valid"):
        out[key] = np.ascontiguousarray(sample[key][top : top + height, left : left + width])
    return out


def random_crop(sample: Sample, size: Sequence[int], rng: np.random.Generator) -> Sample:
    """A uniformly placed (height, width) window of the sample."""
    h, w = sample["depth"].shape
    top, left = _crop_origin((h, w), size, rng)
    return crop(sample, top, left, size[0], size[1])


def _crop_origin(image_size, size, rng) -> tuple[int, int]:
    (h, w), (ch, cw) = image_size, size
    if ch > h or cw > w:
        raise ConfigError(f"Crop size {ch}x{cw} is larger than the {h}x{w} image.")
    return int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))


def resize(sample: Sample, size: Sequence[int], depth_mode: str = "nearest") -> Sample:
    """Resize to (height, width): rgb by area (shrinking) or bilinear (enlarging), depth by
    ``depth_mode`` ("nearest" or "area", see the module docstring)."""
    if tuple(sample["depth"].shape) == tuple(size):
        return sample
    out = dict(sample)
    out["rgb"] = resize_rgb(sample["rgb"], size)
    out["depth"], out["valid"] = resize_depth(sample["depth"], sample["valid"], size, depth_mode)
    return out


def resize_rgb(rgb: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """uint8 (H, W, 3) to ``size``: box (area) filter when shrinking, bilinear otherwise."""
    (h, w), (oh, ow) = rgb.shape[:2], size
    method = Image.BOX if oh <= h and ow <= w else Image.BILINEAR
    return np.array(Image.fromarray(rgb).resize((ow, oh), method))  # writable copy


def resize_depth(
    depth: np.ndarray, valid: np.ndarray, size: Sequence[int], mode: str = "nearest"
) -> tuple[np.ndarray, np.ndarray]:
    """Resize depth and its validity so no invalid pixel's value reaches a valid output pixel.

    nearest: each output pixel copies the input pixel under its centre (same pixel-centre
    convention as the rgb resize). area: the mean of the valid input pixels the output cell
    covers, valid where at least one is; invalid outputs are 0.
    """
    oh, ow = int(size[0]), int(size[1])
    if mode == "nearest":
        rows = _nearest_index(depth.shape[0], oh)
        cols = _nearest_index(depth.shape[1], ow)
        d, v = depth[rows][:, cols], valid[rows][:, cols]
        return np.where(v, d, 0).astype(np.float32), v.copy()
    if mode == "area":
        weight = valid.astype(np.float32)
        total = _box_resize(np.where(valid, depth, 0).astype(np.float32), oh, ow)
        count = _box_resize(weight, oh, ow)
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


# ------------------------------------------------------------------------------- photometric


def color_jitter(sample: Sample, factors: Sequence[float]) -> Sample:
    """Scale brightness, contrast and saturation of rgb only (depth is geometry, untouched).

    factors = (brightness, contrast, saturation) multipliers, 1 = unchanged; ``Augment`` draws
    them at random. Same order and clipping as torchvision's ColorJitter with a fixed order.
    """
    out = dict(sample)
    x = sample["rgb"].astype(np.float32) / 255.0
    b, c, s = factors
    x = np.clip(x * b, 0, 1)
    grey = x @ np.asarray(_GREY, np.float32)
    x = np.clip(grey.mean() + (x - grey.mean()) * c, 0, 1)
    grey = (x @ np.asarray(_GREY, np.float32))[..., None]
    x = np.clip(grey + (x - grey) * s, 0, 1)
    out["rgb"] = np.rint(x * 255).astype(np.uint8)
    return out


# ------------------------------------------------------------------------------ augmentation


@dataclass(frozen=True)
class Augment:
    """Training augmentation: optional random crop, horizontal flip, colour jitter.

    The same random draws (``draw``) drive both paths, so a numpy sample and the same sample
    preloaded into tensors get the same augmentation from the same generator state.
    crop: (height, width) window or None; flip: probability; brightness/contrast/saturation:
    jitter strength x, the factor is uniform in [1 - x, 1 + x].
    """

    crop: tuple[int, int] | None = None
    flip: float = 0.5
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2

    def draw(self, rng: np.random.Generator, image_size: Sequence[int]) -> dict:
        """All random choices for one sample, in a fixed order."""
        origin = _crop_origin(image_size, self.crop, rng) if self.crop else (0, 0)
        flip = bool(rng.random() < self.flip)
        factors = [
            float(rng.uniform(max(0.0, 1 - x), 1 + x))
            for x in (self.brightness, self.contrast, self.saturation)
        ]
        return {"origin": origin, "flip": flip, "factors": factors}

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        d = self.draw(rng, sample["depth"].shape)
        if self.crop:
            sample = crop(sample, *d["origin"], *self.crop)
        if d["flip"]:
            sample = hflip(sample)
        return color_jitter(sample, d["factors"])

    def apply_batch(self, batch: dict, rngs: Sequence[np.random.Generator]) -> dict:
        """Augment a tensor batch: ``rgb`` uint8 (B, 3, H, W), ``depth`` (B, 1, H, W),
        ``valid`` (B, 1, H, W); one generator per sample. Returns rgb as uint8 again."""
        rgb, depth, valid = batch["rgb"], batch["depth"], batch["valid"]
        draws = [self.draw(rng, rgb.shape[-2:]) for rng in rngs]
        if self.crop:
            ch, cw = self.crop
            windows = [
                (slice(top, top + ch), slice(left, left + cw))
                for top, left in (d["origin"] for d in draws)
            ]
            rgb, depth, valid = (
                torch.stack([x[i, :, r, c] for i, (r, c) in enumerate(windows)])
                for x in (rgb, depth, valid)
            )
        flips = torch.tensor([d["flip"] for d in draws]).view(-1, 1, 1, 1)
        rgb, depth, valid = (torch.where(flips, x.flip(-1), x) for x in (rgb, depth, valid))
        factors = torch.tensor([d["factors"] for d in draws], dtype=torch.float32)
        out = dict(batch)
        out.update(rgb=_jitter_tensor(rgb, factors), depth=depth, valid=valid)
        return out


def _jitter_tensor(rgb: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """``color_jitter``'s arithmetic on a uint8 (B, 3, H, W) batch, per-sample factors (B, 3)."""
    b, c, s = (factors[:, k].view(-1, 1, 1, 1) for k in range(3))
    weights = torch.tensor(_GREY).view(1, 3, 1, 1)
    x = (rgb.float() / 255.0 * b).clamp(0, 1)
    mean = (x * weights).sum(1, keepdim=True).mean((2, 3), keepdim=True)
    x = (mean + (x - mean) * c).clamp(0, 1)
    grey = (x * weights).sum(1, keepdim=True)
    x = (grey + (x - grey) * s).clamp(0, 1)
    return torch.round(x * 255).to(torch.uint8)


# -------------------------------------------------------------------------- network input


def normalize(rgb: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) rgb, uint8 0..255 or float 0..1, to float32 ImageNet-normalised."""
    x = rgb.float() / 255.0 if rgb.dtype == torch.uint8 else rgb.float()
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(3, 1, 1)
    return (x - mean) / std


def normalize_hwc(rgb: np.ndarray) -> np.ndarray:
    """``normalize`` for one numpy uint8 (H, W, 3) image, giving float32 (3, H, W).

    Per-sample work stays in numpy: tiny torch ops go through the intra-op thread pool, and on a
    busy 2-core machine each such op measured ~50 ms with 2 threads against ~0.1 ms with 1.
    """
    mean = np.asarray(IMAGENET_MEAN, np.float32)
    std = np.asarray(IMAGENET_STD, np.float32)
    x = (rgb.astype(np.float32) / np.float32(255.0) - mean) / std
    return np.ascontiguousarray(x.transpose(2, 0, 1))


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
