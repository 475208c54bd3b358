"""NYU Depth V2 evaluation exactly as BTS, AdaBins, GLPDepth and ZoeDepth compute it, plus baselines.

Protocol, as those repositories' evaluation scripts implement it: valid = min_depth < gt < max_depth (1e-3 and 10 m); on NYU the
Eigen crop rows 45:471, cols 41:601 of 480x640 (scaled for other sizes; off unless asked, since
it is meaningless for other data); the prediction is resized to the GT size (bilinear,
align_corners=True as AdaBins/ZoeDepth), NaN → min_depth, inf → max_depth, clipped to
[min_depth, max_depth]; no median scaling. Metrics are computed per image, then averaged over
images, so a small image weighs as much as a large one. All arithmetic is float64.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from depthlib.depth.boundaries import BOUNDARY_NAMES, boundary_errors, depth_edges
from depthlib.errors import ConfigError, DataError

__all__ = [
    "HIGHER_IS_BETTER",
    "METRIC_NAMES",
    "MeanDepthBaseline",
    "MedianDepthBaseline",
    "MetricAccumulator",
    "compute_metrics",
    "depth_errors",
    "eigen_crop_mask",
    "format_table",
]

METRIC_NAMES = (
    "delta1",
    "delta2",
    "delta3",
    "abs_rel",
    "sq_rel",
    "rmse",
    "rmse_log",
    "log10",
    "silog",
)
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


def _evaluated_maps(pred, gt, valid, min_depth, max_depth, eigen_crop):
    """(p, g, ok): the prediction resized and clipped to the GT's size, the GT, and the pixels the
    metrics average over, after the protocol's steps (float64 maps, bool mask)."""
    if not 0 < min_depth < max_depth:
        raise ConfigError(f"Need 0 < min_depth < max_depth, got {min_depth}, {max_depth}.")
    g = _as_map(gt, "gt")
    # NaN/inf replaced before resizing so they cannot bleed into neighbours; then clip.
    p = np.nan_to_num(_as_map(pred, "pred"), nan=min_depth, posinf=max_depth, neginf=min_depth)
    p = np.clip(_resize(np.clip(p, min_depth, max_depth), g.shape), min_depth, max_depth)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(g) & (g > min_depth) & (g < max_depth)
    if valid is not None:
        v = _as_map(valid, "valid")
        if v.shape != g.shape:
            raise DataError(f"valid mask {v.shape} must have the GT's shape {g.shape}.")
        ok &= v.astype(bool)
    if eigen_crop:
        ok &= eigen_crop_mask(*g.shape)
    return p, g, ok


def _evaluated_pixels(pred, gt, valid, min_depth, max_depth, eigen_crop):
    """The (p, g) float64 vectors the metrics average over."""
    p, g, ok = _evaluated_maps(pred, gt, valid, min_depth, max_depth, eigen_crop)
    return p[ok], g[ok]


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


def compute_metrics(
    pred,
    gt,
    valid=None,
    *,
    min_depth: float = 1e-3,
    max_depth: float = 10.0,
    eigen_crop: bool = False,
) -> dict[str, float]:
    """Metrics of one image (numpy or torch maps, (H, W) or with leading singleton axes)."""
    p, g = _evaluated_pixels(pred, gt, valid, min_depth, max_depth, eigen_crop)
    if g.size == 0:
        raise DataError(
            f"The ground truth has no valid pixel in ({min_depth}, {max_depth}) m"
            f"{' inside the Eigen crop' if eigen_crop else ''}. Is the depth in metres "
            "(not millimetres) and the valid mask right?"
        )
    return depth_errors(p, g)


def _unbatch(batch) -> list:
    """A batch (B, 1, H, W) / (B, H, W), a single (H, W) map, or a list of maps → list of maps."""
    if isinstance(batch, (np.ndarray, torch.Tensor)):
        if batch.ndim == 2:
            return [batch]
        if batch.ndim == 4:
            batch = batch[:, 0] if batch.shape[1] == 1 else batch
        if batch.ndim != 3:
            raise DataError(
                f"Expected depth maps (B, 1, H, W) or (B, H, W), got {tuple(batch.shape)}."
            )
    return list(batch)


class MetricAccumulator:
    """Averages per-image metrics over a whole split; images with no valid pixel are counted apart.

    ``compute()`` returns the mean of each metric over ``n_images`` evaluated images, plus
    ``n_images`` and ``n_skipped``. ``per_image`` keeps every image's metrics (None if skipped).
    With ``boundaries`` each image also gets the depth boundary errors of
    :mod:`depthlib.depth.boundaries` against the GT's own depth edges (averaged over the images
    that have edges).
    """

    def __init__(
        self,
        min_depth: float = 1e-3,
        max_depth: float = 10.0,
        eigen_crop: bool = False,
        boundaries: bool = False,
    ):
        if not 0 < min_depth < max_depth:
            raise ConfigError(f"Need 0 < min_depth < max_depth, got {min_depth}, {max_depth}.")
        self.min_depth, self.max_depth, self.eigen_crop = min_depth, max_depth, eigen_crop
        self.boundaries = boundaries
        self.per_image: list[dict[str, float] | None] = []

    def update(self, pred_batch, gt_batch, valid_batch=None) -> None:
        preds, gts = _unbatch(pred_batch), _unbatch(gt_batch)
        valids = [None] * len(gts) if valid_batch is None else _unbatch(valid_batch)
        if not len(preds) == len(gts) == len(valids):
            raise DataError(
                f"Batch sizes differ: {len(preds)} predictions, {len(gts)} GT maps, "
                f"{len(valids)} masks."
            )
        for pred, gt, valid in zip(preds, gts, valids, strict=True):
            p, g, ok = _evaluated_maps(
                pred, gt, valid, self.min_depth, self.max_depth, self.eigen_crop
            )
            if not ok.any():
                self.per_image.append(None)
                continue
            row = depth_errors(p[ok], g[ok])
            if self.boundaries:
                row |= boundary_errors(p, depth_edges(g, ok))
            self.per_image.append(row)

    @property
    def n_images(self) -> int:
        return sum(m is not None for m in self.per_image)

    @property
    def n_skipped(self) -> int:
        return sum(m is None for m in self.per_image)

    def compute(self) -> dict[str, float]:
        done = [m for m in self.per_image if m is not None]
        if not done:
            raise DataError(
                f"No image had a valid pixel ({self.n_skipped} skipped, range "
                f"({self.min_depth}, {self.max_depth}) m). Check depth units and valid masks."
            )
        result: dict[str, float] = {k: float(np.mean([m[k] for m in done])) for k in METRIC_NAMES}
        for key in BOUNDARY_NAMES if self.boundaries else ():
            values = [m[key] for m in done if math.isfinite(m[key])]
            result[key] = float(np.mean(values)) if values else math.nan
        result["n_images"] = len(done)
        result["n_skipped"] = self.n_skipped
        return result

    def reset(self) -> None:
        self.per_image.clear()


def _training_maps(depths, valids, min_depth, max_depth):
    """(depth float64, valid bool) pairs with the evaluation's validity rule applied."""
    pairs = ((d, None) for d in depths) if valids is None else zip(depths, valids, strict=True)
    for depth, valid in pairs:
        d = _as_map(depth, "depth map")
        with np.errstate(invalid="ignore"):
            ok = np.isfinite(d) & (d > min_depth) & (d < max_depth)
        if valid is not None:
            ok &= _as_map(valid, "valid mask").astype(bool)
        yield np.where(ok, d, 0.0), ok


class MeanDepthBaseline:
    """The training set's per-pixel mean depth map: what a network knows without looking.

    ``name`` is the row every results table shows it under.

    Each map (and its valid mask) is resized bilinearly to ``size`` (default: the first map's
    size), and the mean at each pixel is sum(depth * valid) / sum(valid), i.e. over the images
    where that pixel was valid. Pixels never valid get the global mean of all valid pixels.
    """

    name = "train mean depth map"

    def __init__(
        self,
        size: tuple[int, int] | None = None,
        min_depth: float = 1e-3,
        max_depth: float = 10.0,
    ):
        self.size, self.min_depth, self.max_depth = size, min_depth, max_depth
        self.mean_map: np.ndarray | None = None
        self.global_mean: float | None = None

    def fit(self, depths: Iterable, valids: Iterable | None = None) -> MeanDepthBaseline:
        total = count = None
        all_sum, all_count = 0.0, 0
        for d, ok in _training_maps(depths, valids, self.min_depth, self.max_depth):
            all_sum, all_count = all_sum + float(d.sum()), all_count + int(ok.sum())
            size = self.size = self.size or d.shape
            d_r, ok_r = _resize_pair(d, ok.astype(np.float64), size)
            total = d_r if total is None else total + d_r
            count = ok_r if count is None else count + ok_r
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


def _resize_pair(depth_times_valid, valid, size):
    if depth_times_valid.shape == tuple(size):
        return depth_times_valid, valid
    t = torch.from_numpy(np.stack([depth_times_valid, valid]))[None]
    out = F.interpolate(t, size=tuple(size), mode="bilinear", align_corners=False)[0].numpy()
    return out[0], out[1]


class MedianDepthBaseline:
    """One number for every pixel: the median of all valid training depths.

    Streams a histogram with ``bin_width`` bins (1 mm by default) instead of holding every pixel
    (NYU's 795 maps are 244 M pixels) and interpolates inside the median bin, so the result is
    within ``bin_width`` of the exact median.
    """

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


_COLUMNS = (
    ("delta1", "δ1 ↑"),
    ("delta2", "δ2 ↑"),
    ("delta3", "δ3 ↑"),
    ("abs_rel", "AbsRel ↓"),
    ("sq_rel", "SqRel ↓"),
    ("rmse", "RMSE ↓"),
    ("rmse_log", "RMSElog ↓"),
    ("log10", "log10 ↓"),
    ("silog", "SILog ↓"),
    ("dbe_acc", "DBE acc ↓"),
    ("dbe_comp", "DBE comp ↓"),
)


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
            cells.append(
                "–"
                if n is None
                else f"{int(n)}" + (f" ({int(skipped)} skipped)" if skipped else "")
            )
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
