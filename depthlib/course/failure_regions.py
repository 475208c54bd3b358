"""Which pixels a failure-mode claim is about: furniture ids, object outlines, object relief.

``render_labelled_room`` is a room with its per-pixel furniture id map beside the image and
depth. On that map, ``boundary_band`` marks object outlines and ``relief_detection`` asks whether
a predicted depth map shows each object standing out from what lies behind it.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from depthlib.data.rooms.generate import render_room

__all__ = ["boundary_band", "relief_detection", "render_labelled_room"]


def render_labelled_room(seed: int, index: int, height: int, width: int, knobs=None) -> dict:
    """``render_room(..., raw=False)``'s ``rgb``, ``depth`` and ``knobs`` plus ``objects``: the
    per-pixel furniture id (int32; -1 = walls, floor, ceiling and flat decor)."""
    room = render_room(seed, index, height, width, knobs, raw=False, objects=True)
    return {k: room[k] for k in ("rgb", "depth", "objects", "knobs")}


def boundary_band(objects: np.ndarray, width: int) -> np.ndarray:
    """Pixels within ``width`` of an edge between an object and anything else (bool map)."""
    # A 4-neighbour with another id: a higher one (for walls, only an object is higher), or a
    # lower one next to an object.
    cross = ndimage.generate_binary_structure(2, 1)
    higher = ndimage.maximum_filter(objects, footprint=cross, mode="nearest") != objects
    lower = ndimage.minimum_filter(objects, footprint=cross, mode="nearest") != objects
    edge = higher | (lower & (objects >= 0))
    return ndimage.binary_dilation(edge, iterations=max(int(width), 1)) if edge.any() else edge


def relief_detection(
    pred: np.ndarray,
    gt: np.ndarray,
    objects: np.ndarray,
    *,
    band: int = 1,
    min_pixels: int = 4,
    min_relief: float = 0.15,
    recovered: float = 0.5,
) -> tuple[int, int]:
    """(detected, counted) objects: does the prediction show each object standing out?

    An object's backdrop is the ring ``band``..``3 * band`` pixels around it (the inner band is
    skipped: any network upsampled from a coarser grid blurs it) where the true depth lies at
    least ``min_relief`` m behind the object's median depth. An object with ``min_pixels`` and
    a backdrop of ``min_pixels`` counts; it is detected if the predicted relief (backdrop median
    minus object median) is at least ``recovered`` times the true one. The ratio ignores a
    global scale error; an object painted flat into the wall behind it is not detected.
    """
    band = max(int(band), 1)
    detected = counted = 0
    boxes = ndimage.find_objects(objects + 1)  # boxes[g]: bounding slices of label g + 1
    for g, box in enumerate(boxes):
        if box is None:
            continue
        grown = tuple(
            slice(max(b.start - 3 * band, 0), min(b.stop + 3 * band, n))
            for b, n in zip(box, objects.shape, strict=True)
        )
        mask, d, p = objects[grown] == g, gt[grown], pred[grown]
        if mask.sum() < min_pixels:
            continue
        inner = ndimage.binary_dilation(mask, iterations=band)
        ring = ndimage.binary_dilation(mask, iterations=3 * band) & ~inner
        depth = float(np.median(d[mask]))
        back = ring & (d > depth + min_relief)
        if back.sum() < min_pixels:
            continue
        counted += 1
        relief = float(np.median(d[back])) - depth
        detected += float(np.median(p[back]) - np.median(p[mask])) >= recovered * relief
    return detected, counted
