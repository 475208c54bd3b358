"""NYU Depth V2 evaluation exactly as BTS, AdaBins, GLPDepth and ZoeDepth compute it, plus baselines.

Protocol: valid = min_depth < gt < max_depth (1e-3 and 10 m); optionally the Eigen crop (rows
45:471, cols 41:601 of 480x640, scaled for other sizes); the prediction is resized to the GT size
(bilinear, align_corners=True as AdaBins/ZoeDepth), NaN → min_depth, inf → max_depth, clipped;
no median scaling. Metrics are per image, then averaged over images. All arithmetic is float64.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from depthlib.depth.boundaries import BOUNDARY_NAMES, boundary_errors, depth_edges
from depthlib.errors import ConfigError, DataError
from depthlib.progress import progress_bar

__all__ = [
    "EvalSet",
    "HIGHER_IS_BETTER",
    "METRIC_NAMES",
    "MeanDepthBaseline",
    "MedianDepthBaseline",
    "MetricAccumulator",
    "compute_metrics",
    "depth_errors",
    "eigen_crop_mask",
    "format_table",
    "depth_in_batches",
    "score_model",
]

METRIC_NAMES = tuple("delta1 delta2 delta3 abs_rel sq_rel rmse rmse_log log10 silog".split())
HIGHER_IS_BETTER = frozenset({"delta1", "delta2", "delta3"})
EIGEN_CROP_480x640 = (45, 471, 41, 601)  # rows 45:471, cols 41:601 (0-based Python slices)


def _as_map(x, what: str) -> np.ndarray:
    """One depth map (H, W) as float64 numpy; leading singleton axes (1, 1, H, W) are dropped."""
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    x = np.asarray(x, dtype=np.float64)
    while x.ndim > 2 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 2:
        raise DataError(f"{what} must be one depth map (H, W), got shape {x.shape}.")
    return x


def eigen_crop_mask(height: int, width: int) -> np.ndarray:
    """True inside the Eigen crop, scaled from 480x640 (exact rows 45:471, cols 41:601 there)."""
    top, bottom, left, right = EIGEN_CROP_480x640
    r0, r1 = (int(math.floor(v * height / 480 + 0.5)) for v in (top, bottom))
    c0, c1 = (int(math.floor(v * width / 640 + 0.5)) for v in (left, right))
    mask = np.zeros((height, width), dtype=bool)
    mask[r0:r1, c0:c1] = True
    return mask


def _resize(pred: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if pred.shape == shape:
        return pred
    t = torch.from_numpy(pred)[None, None]
    return F.interpolate(t, size=shape, mode="bilinear", align_corners=True)[0, 0].numpy()


def _valid_pixels(g: np.ndarray, valid, min_depth: float, max_depth: float) -> np.ndarray:
    """The protocol's rule: finite depth strictly inside (min_depth, max_depth), and ``valid``."""
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(g) & (g > min_depth) & (g < max_depth)
    if valid is not None:
        v = _as_map(valid, "valid")
        if v.shape != g.shape:
            raise DataError(f"valid mask {v.shape} must have the GT's shape {g.shape}.")
        ok &= v.astype(bool)
    return ok


def _evaluated_maps(pred, gt, valid, min_depth, max_depth, eigen_crop):
    """(p, g, ok): the prediction resized and clipped to the GT's size, the GT, and the pixels the
    metrics average over (float64 maps, bool mask)."""
    if not 0 < min_depth < max_depth:
        raise ConfigError(f"Need 0 < min_depth < max_depth, got {min_depth}, {max_depth}.")
    g = _as_map(gt, "gt")
    # NaN/inf replaced before resizing so they cannot bleed into neighbours; then clip.
    p = np.nan_to_num(_as_map(pred, "pred"), nan=min_depth, posinf=max_depth, neginf=min_depth)
    p = np.clip(_resize(np.clip(p, min_depth, max_depth), g.shape), min_depth, max_depth)
    ok = _valid_pixels(g, valid, min_depth, max_depth)
    if eigen_crop:
        ok &= eigen_crop_mask(*g.shape)
    return p, g, ok


def depth_errors(p: np.ndarray, g: np.ndarray) -> dict[str, float]:
    """The nine standard metrics on matching 1-D arrays of positive depths (float64)."""
    p, g = np.asarray(p, dtype=np.float64), np.asarray(g, dtype=np.float64)
    thresh = np.maximum(g / p, p / g)
    e = np.log(p) - np.log(g)
    return {
        "delta1": float(np.mean(thresh < 1.25)),
        "delta2": float(np.mean(thresh < 1.25**2)),
        "delta3": float(np.mean(thresh < 1.25**3)),
        "abs_rel": float(np.mean(np.abs(g - p) / g)),
        "sq_rel": float(np.mean((g - p) ** 2 / g)),
        "rmse": float(np.sqrt(np.mean((g - p) ** 2))),
        "rmse_log": float(np.sqrt(np.mean(e**2))),
        "log10": float(np.mean(np.abs(np.log10(g) - np.log10(p)))),
        "silog": float(100.0 * np.sqrt(max(np.mean(e**2) - np.mean(e) ** 2, 0.0))),
    }


def compute_metrics(pred, gt, valid=None, *, min_depth=1e-3, max_depth=10.0, eigen_crop=False):
    """Metrics of one image (numpy or torch maps, (H, W) or with leading singleton axes)."""
    p, g, ok = _evaluated_maps(pred, gt, valid, min_depth, max_depth, eigen_crop)
    if not ok.any():
        raise DataError(
            f"The ground truth has no valid pixel in ({min_depth}, {max_depth}) m"
            f"{' inside the Eigen crop' if eigen_crop else ''}. Is the depth in metres "
            "(not millimetres) and the valid mask right?"
        )
    return depth_errors(p[ok], g[ok])


def _unbatch(batch) -> list:
    """A batch (B, 1, H, W) / (B, H, W), a single (H, W) map, or a list of maps → list of maps."""
    if isinstance(batch, (np.ndarray, torch.Tensor)):
        if batch.ndim == 2:
            return [batch]
        if batch.ndim == 4 and batch.shape[1] == 1:
            batch = batch[:, 0]
        if batch.ndim != 3:
            raise DataError(
                f"Expected depth maps (B, 1, H, W) or (B, H, W), got {tuple(batch.shape)}."
            )
    return list(batch)


class MetricAccumulator:
    """Averages per-image metrics over a whole split; images with no valid pixel are counted apart.

    ``compute()`` returns each metric's mean plus ``n_images`` and ``n_skipped``; ``per_image``
    keeps every image's metrics (None if skipped). ``boundaries`` adds the depth boundary errors
    at the GT's size (averaged over the images that have edges) against ``update``'s true edges,
    by default the GT's own depth edges.
    ``median_scaling`` multiplies each prediction by median(GT) / median(prediction) over the
    evaluated pixels (then clips): the scale-free score, for models whose metric scale cannot
    transfer (e.g. trained on rendered rooms, scored on real photos). Not the NYU protocol.
    """

    def __init__(
        self, min_depth=1e-3, max_depth=10.0, eigen_crop=False, boundaries=False,
        median_scaling=False,
    ):  # fmt: skip
        if not 0 < min_depth < max_depth:
            raise ConfigError(f"Need 0 < min_depth < max_depth, got {min_depth}, {max_depth}.")
        self.min_depth, self.max_depth, self.eigen_crop = min_depth, max_depth, eigen_crop
        self.boundaries, self.median_scaling = boundaries, median_scaling
        self.per_image: list[dict[str, float] | None] = []

    def update(self, pred_batch, gt_batch, valid_batch=None, edge_batch=None) -> None:
        """``edge_batch``: DBE's true edges (bool, GT size); None: the GT's own depth edges."""
        preds, gts = _unbatch(pred_batch), _unbatch(gt_batch)
        valids = [None] * len(gts) if valid_batch is None else _unbatch(valid_batch)
        edge_maps = [None] * len(gts) if edge_batch is None else _unbatch(edge_batch)
        if not len(preds) == len(gts) == len(valids) == len(edge_maps):
            raise DataError(
                f"Batch sizes differ: {len(preds)} predictions, {len(gts)} GT maps, "
                f"{len(valids)} masks, {len(edge_maps)} edge maps."
            )
        for pred, gt, valid, edges in zip(preds, gts, valids, edge_maps, strict=True):
            p, g, ok = _evaluated_maps(
                pred, gt, valid, self.min_depth, self.max_depth, self.eigen_crop
            )
            if not ok.any():
                self.per_image.append(None)
                continue
            if self.median_scaling:
                p = np.clip(p * np.median(g[ok]) / np.median(p[ok]), self.min_depth, self.max_depth)
            row = depth_errors(p[ok], g[ok])
            if self.boundaries:  # p is at the GT's size: DBE is scored there
                crop = eigen_crop_mask(*g.shape) if self.eigen_crop else True
                edges = depth_edges(g, ok) if edges is None else np.asarray(edges, bool) & crop
                row |= boundary_errors(p, edges)
            self.per_image.append(row)

    def compute(self) -> dict[str, float]:
        done = [m for m in self.per_image if m is not None]
        skipped = len(self.per_image) - len(done)
        if not done:
            raise DataError(
                f"No image had a valid pixel ({skipped} skipped, range "
                f"({self.min_depth}, {self.max_depth}) m). Check depth units and valid masks."
            )
        result: dict[str, float] = {k: float(np.mean([m[k] for m in done])) for k in METRIC_NAMES}
        for key in BOUNDARY_NAMES if self.boundaries else ():
            values = [m[key] for m in done if math.isfinite(m[key])]
            result[key] = float(np.mean(values)) if values else math.nan
        return result | {"n_images": len(done), "n_skipped": skipped}


@dataclass
class EvalSet:
    """Images at the network's input size (uint8 (N, 3, h, w)) and ground truth at its own size,
    with the true depth edges DBE compares with and what both were read from."""

    images: torch.Tensor
    depths: list[np.ndarray]  # float32 (H, W) metres, 0 = invalid
    valids: list[np.ndarray]  # bool (H, W)
    indices: list[int]
    edges: list[np.ndarray]  # bool (H, W)
    ground_truth: str  # e.g. "rawDepths (holes invalid)"
    edges_from: str

    def __len__(self) -> int:
        return len(self.depths)


def depth_in_batches(model: nn.Module, images: torch.Tensor, batch_size: int = 16):
    """Yield ``(start, depth (B, 1, h, w) float32 CPU)`` for uint8 images (``model.predict`` pads
    to the stride and normalises, so any input size works)."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}.")
    for start in range(0, len(images), batch_size):
        yield start, model.predict(images[start : start + batch_size]).float().cpu()


def score_model(
    model: nn.Module, eval_set: EvalSet, *, batch_size: int = 16, eigen_crop: bool = False,
    progress: bool = False, boundaries: bool = False, median_scaling: bool = False,
) -> dict[str, float]:  # fmt: skip
    """Protocol metrics of ``model`` on ``eval_set`` (with the depth boundary errors when asked)
    plus ``seconds`` and ``images_per_s`` of inference alone (prediction, not scoring)."""
    acc = MetricAccumulator(
        eigen_crop=eigen_crop, boundaries=boundaries, median_scaling=median_scaling
    )
    bar = progress_bar(total=len(eval_set), desc="evaluating", unit="img", disable=not progress)
    seconds, t0 = 0.0, time.perf_counter()
    for start, depth in depth_in_batches(model, eval_set.images, batch_size):
        seconds += time.perf_counter() - t0
        part = slice(start, start + len(depth))
        acc.update(depth, eval_set.depths[part], eval_set.valids[part], eval_set.edges[part])
        bar.update(len(depth))
        t0 = time.perf_counter()
    bar.close()
    rate = len(eval_set) / seconds if seconds > 0 else math.nan
    return acc.compute() | {"seconds": seconds, "images_per_s": rate}


def _training_maps(depths, valids, min_depth, max_depth):
    """(depth float64, valid bool) pairs with the evaluation's validity rule applied."""
    pairs = ((d, None) for d in depths) if valids is None else zip(depths, valids, strict=True)
    for depth, valid in pairs:
        d = _as_map(depth, "depth map")
        ok = _valid_pixels(d, valid, min_depth, max_depth)
        yield np.where(ok, d, 0.0), ok


class MeanDepthBaseline:
    """The training set's per-pixel mean depth map: what a network knows without looking.

    Each map and its valid mask are resized bilinearly to ``size`` (default: the first map's);
    each pixel's mean is sum(depth * valid) / sum(valid); pixels never valid get the global mean.
    ``name`` is its row in results tables.
    """

    name = "train mean depth map"

    def __init__(
        self, size: tuple[int, int] | None = None, min_depth: float = 1e-3, max_depth: float = 10.0
    ):
        self.size, self.min_depth, self.max_depth = size, min_depth, max_depth
        self.mean_map: np.ndarray | None = None
        self.global_mean: float | None = None

    def fit(self, depths: Iterable, valids: Iterable | None = None) -> MeanDepthBaseline:
        total = count = None
        all_sum, all_count = 0.0, 0
        for d, ok in _training_maps(depths, valids, self.min_depth, self.max_depth):
            all_sum, all_count = all_sum + float(d.sum()), all_count + int(ok.sum())
            self.size = tuple(self.size or d.shape)
            pair = np.stack([d, ok.astype(np.float64)])  # resized together: depth x valid, valid
            if pair.shape[1:] != self.size:
                t = torch.from_numpy(pair)[None]
                pair = F.interpolate(t, self.size, mode="bilinear", align_corners=False)[0].numpy()
            total = pair[0] if total is None else total + pair[0]
            count = pair[1] if count is None else count + pair[1]
        if not all_count:
            raise DataError(
                "No valid training depth to average (empty set, or depths outside "
                f"({self.min_depth}, {self.max_depth}) m; are they in metres?)."
            )
        self.global_mean = all_sum / all_count
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = total / count
        self.mean_map = np.where(count > 1e-9, mean, self.global_mean)
        return self

    def predict(self, size: tuple[int, int]) -> np.ndarray:
        if self.mean_map is None:
            raise ConfigError("MeanDepthBaseline.predict() needs fit() on training depths first.")
        return _resize(self.mean_map, tuple(size)).astype(np.float32)


class MedianDepthBaseline:
    """One number for every pixel: the median of all valid training depths, within ``bin_width``
    (from a streamed histogram: NYU's 795 maps are 244 M pixels)."""

    name = "train median depth"

    def __init__(self, min_depth: float = 1e-3, max_depth: float = 10.0, bin_width: float = 1e-3):
        self.min_depth, self.max_depth, self.bin_width = min_depth, max_depth, bin_width
        self.median: float | None = None

    def fit(self, depths: Iterable, valids: Iterable | None = None) -> MedianDepthBaseline:
        n_bins = int(math.ceil((self.max_depth - self.min_depth) / self.bin_width))
        hist = np.zeros(n_bins, dtype=np.int64)
        for d, ok in _training_maps(depths, valids, self.min_depth, self.max_depth):
            idx = ((d[ok] - self.min_depth) / self.bin_width).astype(np.int64)
            hist += np.bincount(np.clip(idx, 0, n_bins - 1), minlength=n_bins)
        n = int(hist.sum())
        if not n:
            raise DataError(
                "No valid training depth for the median (empty set, or depths outside "
                f"({self.min_depth}, {self.max_depth}) m; are they in metres?)."
            )
        cum = np.cumsum(hist)
        k = int(np.searchsorted(cum, n / 2))  # first bin where half the pixels are reached
        below = cum[k - 1] if k else 0
        self.median = self.min_depth + self.bin_width * (k + (n / 2 - below) / hist[k])
        return self

    def predict(self, size: tuple[int, int]) -> np.ndarray:
        if self.median is None:
            raise ConfigError("MedianDepthBaseline.predict() needs fit() on training depths first.")
        return np.full(tuple(size), self.median, dtype=np.float32)


_TITLES = "δ1 ↑|δ2 ↑|δ3 ↑|AbsRel ↓|SqRel ↓|RMSE ↓|RMSElog ↓|log10 ↓|SILog ↓|DBE acc ↓|DBE comp ↓"
_COLUMNS = tuple(zip((*METRIC_NAMES, *BOUNDARY_NAMES), _TITLES.split("|"), strict=True))


def format_table(rows: Mapping[str, Mapping[str, float]], digits: int = 3) -> str:
    """A markdown table of results, one row per model or baseline, with a legend line."""
    with_counts = any("n_images" in m for m in rows.values())
    columns = [(k, title) for k, title in _COLUMNS if any(k in m for m in rows.values())]
    header = ["model"] + [title for _, title in columns] + (["images"] if with_counts else [])
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join([":--"] + ["--:"] * (len(header) - 1)) + "|",
    ]
    for name, m in rows.items():
        cells = [str(name)]
        for key, _ in columns:
            v = m.get(key)
            cells.append("–" if v is None or not math.isfinite(v) else f"{v:.{digits}f}")
        if with_counts:
            n, skipped = m.get("n_images"), m.get("n_skipped", 0)
            skipped = f" ({int(skipped)} skipped)" if skipped else ""
            cells.append("–" if n is None else f"{int(n)}{skipped}")
        lines.append("| " + " | ".join(cells) + " |")
    legend = (
        "↑ higher is better (δk: share of pixels with max(p/g, g/p) < 1.25^k); ↓ lower is better "
        "(errors; SILog ×100). Per-image metrics averaged over images."
    )
    if any(k.startswith("dbe") for k, _ in columns):
        legend += (
            " DBE: iBims-1's depth boundary errors in GT pixels (edge accuracy, completeness)."
        )
    return "\n".join(lines) + "\n\n" + legend
