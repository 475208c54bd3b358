"""What an RGB-D sensor makes of a rendered room: an 8-bit photo and a Kinect-like raw depth map.

The photo gets a camera's effects (exposure, white balance, tone curve, vignetting, blur, noise,
JPEG). The raw depth copies the exact depth but
quantises it in disparity (as a structured-light sensor measures it) and leaves holes (0) where a
Kinect v1 returns nothing: in the projector's shadow beside near objects, just beyond depth edges,
past its range, on grazing, very dark or glowing (window) surfaces, and in a few random blobs.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

KINECT_BASELINE = 0.075  # metres between IR projector and IR camera
KINECT_FX = 580.0  # the IR camera's focal length at 640 px; sets the disparity quantisation
DISPARITY_STEP = 1 / 8  # sub-pixel resolution of the disparity, in 640-px pixels


def photo(radiance: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    """Linear radiance (H, W, 3) -> uint8 sRGB-like photo, with what a real camera adds: an
    exposure error, a white-balance cast, its own tone curve, vignetting, focus or shake blur,
    sensor noise and JPEG compression. None of it touches the depth map."""
    h, w, _ = radiance.shape
    yy, xx = np.ogrid[-1 : 1 : complex(0, h), -1 : 1 : complex(0, w)]
    strength = np.float32(rng.uniform(0.0, 0.25))
    vignette = (1 - strength * (xx * xx + yy * yy) / 2).astype(np.float32)
    cast = np.exp(rng.normal(0.0, 0.08, 3))
    gain = (np.exp(rng.normal(0.0, 0.3)) * cast / cast.mean()).astype(np.float32)
    gamma = np.float32(rng.uniform(1.8, 2.6))
    rgb = np.clip(radiance * gain, 0, 1) ** (1 / gamma) * vignette[..., None]
    blur = rng.uniform(0.0, 1.2) * w / 320 if rng.random() < 0.5 else 0.0
    if blur > 0.2:
        rgb = gaussian_filter(rgb, (blur, blur, 0), mode="nearest")
    rgb += np.float32(noise) * rng.standard_normal(rgb.shape, dtype=np.float32)
    rgb = np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8)
    quality = int(rng.integers(30, 95)) if rng.random() < 0.7 else None
    if quality is None:
        return rgb
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality)
    return np.array(Image.open(buffer).convert("RGB"))


def kinect_raw(
    depth: np.ndarray,
    facing: np.ndarray,
    albedo: np.ndarray,
    glow: np.ndarray,
    rng: np.random.Generator,
    focal: float,
) -> np.ndarray:
    """Raw depth (H, W) float32, holes = 0, else ``depth`` quantised. ``facing``: |cos| between
    surface normal and viewing ray; ``focal``: the colour camera's fx (sets shadow widths)."""
    h, w = depth.shape
    holes = _projector_shadow(depth, focal)
    holes |= _far_side_of_edges(depth)
    holes |= (depth > rng.uniform(7.5, 10.0)) | (depth < 0.5)  # out of range
    holes |= facing < rng.uniform(0.06, 0.14)  # grazing
    holes |= (albedo.mean(axis=-1) < 0.012) | (glow > 0)  # black or glass
    yy, xx = np.ogrid[:h, :w]
    for _ in range(rng.poisson(0.7)):  # shiny or absorbing patches
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(0.01, 0.05, 2) * w
        holes |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
    fb = KINECT_FX * KINECT_BASELINE
    disparity = np.rint(fb / depth / DISPARITY_STEP) * DISPARITY_STEP
    raw = np.minimum(fb / np.maximum(disparity, DISPARITY_STEP), 10.0).astype(np.float32)
    raw[holes] = 0.0
    return raw


def _projector_shadow(depth: np.ndarray, focal: float) -> np.ndarray:
    """Pixels the projector cannot light because a nearer surface to their right blocks it.

    With the projector to the camera's right, a point at column u lands at projector column
    u - f·b/z; it is hidden if some pixel further right lands at or left of it.
    """
    w = depth.shape[1]
    q = np.arange(w, dtype=np.float32) - focal * KINECT_BASELINE / depth
    right_min = np.minimum.accumulate(q[:, ::-1], axis=1)[:, ::-1]
    hidden = np.zeros_like(depth, dtype=bool)
    hidden[:, :-1] = right_min[:, 1:] < q[:, :-1] - 0.5
    return hidden


def _far_side_of_edges(depth: np.ndarray, jump: float = 0.08) -> np.ndarray:
    """Pixels next to a neighbour more than ``jump`` (relative) nearer: mixed, unreliable returns."""
    near = np.full_like(depth, np.inf)
    near[1:] = np.minimum(near[1:], depth[:-1])
    near[:-1] = np.minimum(near[:-1], depth[1:])
    near[:, 1:] = np.minimum(near[:, 1:], depth[:, :-1])
    near[:, :-1] = np.minimum(near[:, :-1], depth[:, 1:])
    return near < (1 - jump) * depth
