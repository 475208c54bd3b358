"""Sharpness as a number: iBims-1's depth boundary errors (Koch et al., ECCV Workshops 2018).

δ1 and AbsRel average over pixels, and a blurred "average room" can score well on them while no
chair or table edge is visible. The depth boundary error (DBE) asks where the prediction's edges
are: Canny edges of the prediction (normalised to [0, 1], hysteresis 0.15 / 0.3) against the
ground truth's depth edges, by distance transforms truncated at θ. iBims-1 sets θ = 10 px and
σ = √2 on 640x480 maps; here DBE is scored at the ground truth's full resolution (the prediction
upsampled to it), θ and σ scaled to its width W: θ = 10·W/640 (5 px at the rooms' 240x320):

- accuracy ``dbe_acc``: mean distance from predicted edges to the nearest true edge, over the
  predicted edges within θ of one (an edge far from any true edge does not count here);
- completeness ``dbe_comp``: the truncated distances in both directions, summed and divided by
  the number of edges on both sides: true edges the prediction misses cost up to θ each.

Both are in pixels of the ground truth, lower is better, θ when the prediction has no edge near
any true one. iBims-1 annotates its edges by hand; :func:`depth_edges` takes the occlusion
boundaries from a dense true depth: the hole-filled ``depths`` (exact in the rooms file), even
when the other metrics score ``rawDepths``, whose holes would break the edges up.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage
from skimage.feature import canny

__all__ = ["BOUNDARY_NAMES", "boundary_errors", "dbe_settings", "depth_edges"]

BOUNDARY_NAMES = ("dbe_acc", "dbe_comp")
IBIMS_WIDTH, IBIMS_THETA = 640, 10.0  # iBims-1's map width and θ there, in pixels
CANNY = {"sigma": math.sqrt(2), "low_threshold": 0.15, "high_threshold": 0.3}  # at 640 px


def dbe_settings(shape) -> dict:
    """``{"size": [H, W], "theta_px", "canny_sigma"}`` at ground truth of ``shape``: iBims-1's
    θ and σ scaled from 640 px to W (the hysteresis thresholds, on the normalised map, stay)."""
    h, w, scale = int(shape[-2]), int(shape[-1]), shape[-1] / IBIMS_WIDTH
    return {"size": [h, w], "theta_px": IBIMS_THETA * scale, "canny_sigma": CANNY["sigma"] * scale}


def depth_edges(
    depth: np.ndarray, valid: np.ndarray | None = None, jump: float = 0.1
) -> np.ndarray:
    """Occlusion boundaries of a true depth map: pixels whose 4-neighbour lies more than ``jump``
    (relative) farther away. Only the near side of a jump is marked, so edges are one pixel wide;
    a pixel next to an invalid one is never an edge (a hole is not a boundary)."""
    d = np.asarray(depth, np.float64)
    ok = np.isfinite(d) & (d > 0) if valid is None else np.asarray(valid, bool) & (d > 0)
    edges = np.zeros(d.shape, bool)
    for a, b in ((np.s_[:-1, :], np.s_[1:, :]), (np.s_[:, :-1], np.s_[:, 1:])):  # neighbours
        both = ok[a] & ok[b]
        with np.errstate(invalid="ignore"):
            edges[a] |= both & (d[b] > d[a] * (1 + jump))  # a occludes b
            edges[b] |= both & (d[a] > d[b] * (1 + jump))
    return edges


def boundary_errors(pred: np.ndarray, true_edges: np.ndarray) -> dict[str, float]:
    """``{"dbe_acc", "dbe_comp"}`` of a predicted depth map against a boolean map of true edges,
    at the edges' size with its :func:`dbe_settings` (a smaller prediction is upsampled to it
    first, bilinearly, corners aligned); NaN for both when there is no true edge."""
    true_edges, p = np.asarray(true_edges, bool), np.asarray(pred, np.float64)
    if p.shape != true_edges.shape:  # ndimage.zoom keeps the corners, as align_corners=True
        p = ndimage.zoom(p, np.divide(true_edges.shape, p.shape), order=1, mode="nearest")
    settings = dbe_settings(true_edges.shape)
    theta = settings["theta_px"]
    if not true_edges.any():
        return {"dbe_acc": math.nan, "dbe_comp": math.nan}
    span = float(np.nanmax(p) - np.nanmin(p))
    normalised = (p - np.nanmin(p)) / span if span > 0 else np.zeros_like(p)
    found = canny(normalised, **(CANNY | {"sigma": settings["canny_sigma"]}))
    to_true = ndimage.distance_transform_edt(~true_edges)
    to_found = ndimage.distance_transform_edt(~found)
    near = found & (to_true < theta)
    if not near.any():
        return {"dbe_acc": theta, "dbe_comp": theta}
    accuracy = float(to_true[near].mean())
    both_ways = np.minimum(to_true[found], theta).sum()
    both_ways += np.minimum(to_found[true_edges], theta).sum()
    return {"dbe_acc": accuracy, "dbe_comp": float(both_ways / (found.sum() + true_edges.sum()))}
