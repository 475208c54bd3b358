"""What a dataset file holds: counts, splits, image size, depth range, holes and knobs.

``depthlib info`` prints it; ``depthlib synth`` ends with it. Depth statistics use a bounded,
evenly spaced subset of images, so even the 2.8 GB NYU file is described in seconds.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from depthlib.data.dataset import evenly_spaced
from depthlib.data.nyu import NYULabeled, find_splits_file, read_extras, read_splits
from depthlib.data.rooms import GENERATOR
from depthlib.errors import ConfigError

__all__ = ["format_summary", "summarize"]


def summarize(path: str | os.PathLike, max_images: int = 200) -> dict:
    """Counts, split sizes, image size, depth range and knob ranges of a labeled-layout file.

    Works for real NYU files too (they have no knobs). Depth statistics use at most
    ``max_images`` evenly spaced images (every pixel of each), so a 2.8 GB file stays quick.
    """
    if max_images < 1:
        raise ConfigError(f"max_images must be at least 1, got {max_images}.")
    filled = NYULabeled(path, split="all")
    raw = NYULabeled(path, split="all", depth="raw")
    n = len(filled)
    picked = evenly_spaced(n, max_images) if n else []
    values, holes, pixels = [], 0, 0
    for i in picked:
        s = filled[i]
        values.append(s["depth"][s["valid"]])
        r = raw[i]
        holes += int((~r["valid"]).sum())
        pixels += r["valid"].size
    filled.close()
    raw.close()
    depth = np.concatenate(values) if values else np.zeros(0, np.float32)
    splits = find_splits_file(path)
    train = test = None
    if splits is not None:
        tr, te = read_splits(splits, n)
        train, test = len(tr), len(te)
    extras, attrs = read_extras(path)
    knobs = {
        key: {"min": float(np.min(v)), "mean": float(np.mean(v)), "max": float(np.max(v))}
        for key, v in extras.items()
        if np.asarray(v).dtype.kind in "biuf" and len(v) and key not in ("seed", "index")
    }
    return {
        "path": str(path),
        "n_images": n,
        "height": filled.image_size[0],
        "width": filled.image_size[1],
        "splits_file": str(splits) if splits else None,
        "n_train": train,
        "n_test": test,
        "images_measured": len(picked),
        "depth_min": float(depth.min()) if depth.size else float("nan"),
        "depth_median": float(np.median(depth)) if depth.size else float("nan"),
        "depth_max": float(depth.max()) if depth.size else float("nan"),
        "raw_hole_fraction": holes / pixels if pixels else float("nan"),
        "knobs": knobs,
        "attrs": attrs,
    }


def format_summary(summary: dict) -> str:
    """A few readable lines for ``depthlib info`` and the end of ``depthlib synth``."""
    s = summary
    split = (
        f"train {s['n_train']}, test {s['n_test']} ({Path(s['splits_file']).name})"
        if s["splits_file"]
        else "no split file beside it"
    )
    lines = [
        f"{s['path']}: {s['n_images']} images of {s['height']}x{s['width']} (HxW); {split}",
        f"depth over valid pixels of {s['images_measured']} images: min {s['depth_min']:.3f} m, "
        f"median {s['depth_median']:.3f} m, max {s['depth_max']:.3f} m; "
        f"raw-depth holes {100 * s['raw_hole_fraction']:.1f}% of pixels",
    ]
    if s["attrs"].get("generator") == GENERATOR:
        a = s["attrs"]
        lines.append(
            f"rendered by {GENERATOR} v{a.get('generator_version')} with seed {a.get('seed')}"
            + (f", forced knobs {a['forced_knobs']}" if a.get("forced_knobs") else "")
        )
    if s["knobs"]:
        width = max(map(len, s["knobs"]))
        lines.append(f"{'knob':<{width}}  {'min':>9} {'mean':>9} {'max':>9}")
        lines += [
            f"{k:<{width}}  {v['min']:9.3f} {v['mean']:9.3f} {v['max']:9.3f}"
            for k, v in s["knobs"].items()
        ]
    return "\n".join(lines)
