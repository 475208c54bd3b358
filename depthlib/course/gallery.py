"""The data behind notebook 00's figures: sample galleries, knob sweeps and split depth statistics.

Figures only draw; what they show is computed here, so the tests can check the facts a figure
claims (e.g. that forcing ``light`` leaves the depth map untouched) on the very arrays it draws.

    room_arrays(n, height, width, seed)          stacked rooms, ready for ``write_labeled``
    gallery_samples(path, indices)               RGB, filled and raw depth of file images
    render_knob_sweep(knob, values, seed, index, ...)   one room rendered with one knob forced per value
    split_depth_histograms(path, bins)           histogram of valid depths per split
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from depthlib.data.rooms.generate import render_room, render_rooms, sample_scene
from depthlib.data.rooms.scene import RoomKnobs
from depthlib.errors import ConfigError, DataError

__all__ = ["gallery_samples", "render_knob_sweep", "room_arrays", "split_depth_histograms"]

DEPTH_BINS = np.linspace(0.0, 10.0, 101)  # 10 cm bins over NYU's range (filled depth ends < 10 m)


def room_arrays(
    n: int, height: int, width: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rooms ``0..n-1`` of a seed as ``(images uint8 (n, H, W, 3), depths, raw_depths)``, float32
    (n, H, W) metres: exactly what ``write_labeled`` takes, for small demo and fixture files."""
    if n < 1:
        raise ConfigError(f"n must be at least 1 room, got {n}.")
    rooms = list(render_rooms(n, height, width, seed))
    return (
        np.stack([r["rgb"] for r in rooms]),
        np.stack([r["depth"] for r in rooms]).astype(np.float32),
        np.stack([r["raw_depth"] for r in rooms]).astype(np.float32),
    )


def gallery_samples(path: str | os.PathLike, indices: Sequence[int]) -> list[dict]:
    """File images ``indices`` of a labeled-layout file (rooms or NYU) for a gallery.

    Each entry: ``rgb`` uint8 (H, W, 3), ``depth`` (filled) and ``raw_depth`` float32 metres with
    0 where invalid, ``hole_fraction`` of the raw map, ``index``, and ``knobs`` (the rooms set's
    per-image knobs; empty for real NYU).
    """
    from depthlib.data.nyu import NYULabeled, read_extras

    if len(indices) == 0:
        raise ConfigError("gallery_samples needs at least one image index.")
    filled = NYULabeled(path, split="all")
    raw = NYULabeled(path, split="all", depth="raw")
    extras, _ = read_extras(path)
    try:
        out = []
        for index in indices:
            index = int(index)
            if not 0 <= index < len(filled):
                raise DataError(
                    f"image index {index} is out of range: {path} holds {len(filled)} images "
                    f"(use 0..{len(filled) - 1})."
                )
            f, r = filled[index], raw[index]
            out.append(
                {
                    "index": index,
                    "rgb": f["rgb"],
                    "depth": f["depth"],
                    "raw_depth": r["depth"],
                    "hole_fraction": float((~r["valid"]).mean()),
                    "knobs": {k: _scalar(v[index]) for k, v in extras.items()},
                }
            )
    finally:
        filled.close()
        raw.close()
    return out


def _scalar(value):
    return value.item() if isinstance(value, np.generic) else value


def render_knob_sweep(
    knob: str,
    values: Sequence[float],
    *,
    seed: int = 0,
    index: int = 0,
    height: int = 240,
    width: int = 320,
) -> dict:
    """Room ``index`` of the rooms set ``seed`` rendered once per value of one forced knob.

    Every other draw of the room stays as it is, so the sweep isolates that knob. Returns
    ``{"knob", "values", "applied" (what the room used: a camera is never placed less than 0.3 m
    under the ceiling), "own_value" (the room's unforced draw), "rgb": [uint8 (H, W, 3)],
    "depth": [float32 (H, W)], "raw_depth": [...], "depth_changes", "rgb_changes"}`` where the two bools say whether
    any depth map / image differs from the first one (depth stays for light, contrast and noise:
    they change only the colours).
    """
    if knob not in RoomKnobs.names():
        raise ConfigError(
            f"Unknown room knob {knob!r}; choose one of {', '.join(RoomKnobs.names())}."
        )
    values = list(values)
    if not values:
        raise ConfigError(f"render_knob_sweep needs at least one value for {knob!r}.")
    if knob == "n_objects":
        values = [int(v) for v in values]
    renders = [render_room(seed, index, height, width, **{knob: v}) for v in values]
    own = sample_scene(seed, index).knobs[knob]
    depths = [r["depth"] for r in renders]
    return {
        "knob": knob,
        "values": values,
        "applied": [r["knobs"][knob] for r in renders],
        "own_value": own,
        "seed": int(seed),
        "index": int(index),
        "rgb": [r["rgb"] for r in renders],
        "depth": depths,
        "raw_depth": [r["raw_depth"] for r in renders],
        "depth_changes": any(not np.array_equal(d, depths[0]) for d in depths[1:]),
        "rgb_changes": any(not np.array_equal(r["rgb"], renders[0]["rgb"]) for r in renders[1:]),
    }


def split_depth_histograms(
    path: str | os.PathLike, bins: np.ndarray | None = None
) -> dict[str, dict]:
    """Histogram of the valid filled depths of every image, per split (``train`` / ``test``).

    Streams one image at a time, so it works on the 2.8 GB NYU file too. Per split:
    ``{"counts": int64 (len(bins) - 1,), "bins", "n_images", "n_pixels", "mean", "median"}``;
    the median is interpolated within its bin. Depths outside the bins are counted in the end bins.
    """
    from depthlib.data.nyu import NYULabeled

    bins = DEPTH_BINS if bins is None else np.asarray(bins, dtype=np.float64)
    if bins.ndim != 1 or len(bins) < 2 or np.any(np.diff(bins) <= 0):
        raise ConfigError("bins must be at least two increasing bin edges, e.g. 0..10 m.")
    out = {}
    for split in ("train", "test"):
        reader = NYULabeled(path, split=split)
        counts = np.zeros(len(bins) - 1, dtype=np.int64)
        total = 0.0
        try:
            for i in range(len(reader)):
                sample = reader[i]
                d = sample["depth"][sample["valid"]].astype(np.float64)
                clipped = np.clip(d, bins[0], np.nextafter(bins[-1], bins[0]))
                counts += np.histogram(clipped, bins=bins)[0]
                total += float(d.sum())
        finally:
            reader.close()
        n = int(counts.sum())
        out[split] = {
            "counts": counts,
            "bins": bins,
            "n_images": len(reader),
            "n_pixels": n,
            "mean": total / n if n else float("nan"),
            "median": _histogram_median(counts, bins),
        }
    return out


def _histogram_median(counts: np.ndarray, bins: np.ndarray) -> float:
    n = int(counts.sum())
    if not n:
        return float("nan")
    cum = np.cumsum(counts)
    k = int(np.searchsorted(cum, n / 2))
    below = cum[k - 1] if k else 0
    return float(bins[k] + (bins[k + 1] - bins[k]) * (n / 2 - below) / counts[k])
