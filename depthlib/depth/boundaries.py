"""Sharpness as a number: iBims-1's depth boundary errors (Koch et al., ECCV Workshops 2018).

δ1 and AbsRel average over pixels, and a blurred "average room" can score well on them while no
chair or table edge is visible. The depth boundary error (DBE) asks where the prediction's edges
are: Canny edges of the prediction (normalised to [0, 1], σ = √2, hysteresis 0.15 / 0.3, as the
iBims-1 evaluation script) against the ground truth's depth edges, measured with distance
transforms and truncated at θ = 10 px at iBims-1's 640 px width (scaled with the width, as the
Eigen crop is, so θ = 5 px on the rooms set's 320 px):

- accuracy ``dbe_acc``: mean distance from predicted edges to the nearest true edge, over the
  predicted edges within θ of one (an edge far from any true edge does not count here);
- completeness ``dbe_comp``: the truncated distances in both directions, summed and divided by
  the number of edges on both sides: true edges the prediction misses cost up to θ each.

Both are in pixels of the ground truth, lower is better, θ when the prediction has no edge near
any true one. iBims-1 annotates its edges by hand; the rooms renderer knows its depth exactly, so
:func:`depth_edges` takes the occlusion boundaries from the true depth itself.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage
from skimage.feature import canny

__all__ = ["BOUNDARY_NAMES", "boundary_errors", "depth_edges"]

BOUNDARY_NAMES = ("dbe_acc", "dbe_comp")
MAX_DISTANCE_640 = 10.0  # θ in pixels at 640 px width
CANNY = {"sigma": math.sqrt(2), "low_threshold": 0.15, "high_threshold": 0.3}


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


def boundary_errors(
    pred: np.ndarray, true_edges: np.ndarray, max_distance: float | None = None
) -> dict[str, float]:
    """``{"dbe_acc", "dbe_comp"}`` of a predicted depth map (at the edges' size) against a boolean
    map of true edges; NaN for both when there is no true edge to compare with. ``max_distance``:
    θ in pixels (default 10 px scaled to the map's width from 640 px, at least 2)."""
    true_edges = np.asarray(true_edges, bool)
    if max_distance is None:
        max_distance = max(2.0, MAX_DISTANCE_640 * true_edges.shape[-1] / 640)
    if not true_edges.any():
        return {"dbe_acc": math.nan, "dbe_comp": math.nan}
    p = np.asarray(pred, np.float64)
    span = float(np.nanmax(p) - np.nanmin(p))
    normalised = (p - np.nanmin(p)) / span if span > 0 else np.zeros_like(p)
    found = canny(normalised, **CANNY)
    to_true = ndimage.distance_transform_edt(~true_edges)
    to_found = ndimage.distance_transform_edt(~found)
    near = found & (to_true < max_distance)
    if not near.any():
        return {"dbe_acc": max_distance, "dbe_comp": max_distance}
    accuracy = float(to_true[near].mean())
    both_ways = np.minimum(to_true[found], max_distance).sum()
    both_ways += np.minimum(to_found[true_edges], max_distance).sum()
    return {"dbe_acc": accuracy, "dbe_comp": float(both_ways / (found.sum() + true_edges.sum()))}
