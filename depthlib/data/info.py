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
from depthlib.errors import ConfigError, DataError

__all__ = ["format_dataset_summary", "dataset_summary"]


def _depth_fields(reader, picked, raw=None) -> dict:
    """Range of the valid depths over ``picked`` samples, and the share of hole pixels (counted
    in ``raw``, a labelled file's raw-depth reader, when given)."""
    values, holes, pixels = [], 0, 0
    for i in picked:
        s = reader[int(i)]
        values.append(s["depth"][s["valid"]])
        valid = s["valid"] if raw is None else raw[int(i)]["valid"]
        holes, pixels = holes + int((~valid).sum()), pixels + valid.size
    depth, nan = np.concatenate(values or [np.zeros(0, np.float32)]), float("nan")
    return {
        "images_measured": len(picked),
        "depth_min": float(depth.min()) if depth.size else nan,
        "depth_median": float(np.median(depth)) if depth.size else nan,
        "depth_max": float(depth.max()) if depth.size else nan,
        "raw_hole_fraction": holes / pixels if pixels else nan,
    }


def export_summary(path: str | os.PathLike, max_images: int = 200) -> dict:
    """Pairs, image size, depth scale, depth range and holes of a folder export's list file
    (DenseDepth CSV, BTS list), and the test list found beside a train list."""
    from depthlib.data.dataset import open_depth_dataset
    from depthlib.data.folders import find_test_list

    reader = open_depth_dataset(path)
    h, w = reader.image_size
    test = find_test_list(path)
    return {
        "path": str(path),
        "kind": type(reader).__name__,
        "n_pairs": len(reader),
        "height": h,
        "width": w,
        "depth_scale": reader.depth_scale,
        "test_list": str(test) if test else None,
        **_depth_fields(reader, evenly_spaced(len(reader), max_images)),
    }


def dataset_summary(path: str | os.PathLike, max_images: int = 200) -> dict:
    """Counts, split sizes, image size, depth range and knob ranges (none for real NYU) of a
    labeled-layout file, or :func:`export_summary` of a folder export's list file.

    Depth statistics use at most ``max_images`` evenly spaced images, so a 2.8 GB file stays
    quick. A split file that does not fit the images is a warning: the rest still prints.
    """
    if max_images < 1:
        raise ConfigError(f"max_images must be at least 1, got {max_images}.")
    if Path(path).suffix.lower() in (".csv", ".txt"):
        return export_summary(path, max_images)
    filled, raw = NYULabeled(path, split="all"), NYULabeled(path, split="all", depth="raw")
    n = len(filled)
    depth = _depth_fields(filled, evenly_spaced(n, max_images), raw)
    filled.close()
    raw.close()
    splits = find_splits_file(path)
    train = test = warning = None
    if splits is not None:
        try:
            tr, te = read_splits(splits, n)
            train, test = len(tr), len(te)
        except DataError as err:
            warning = str(err)
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
        "split_warning": warning,
        **depth,
        "knobs": knobs,
        "attrs": attrs,
    }


def format_dataset_summary(summary: dict) -> str:
    """A few readable lines for ``depthlib info`` and the end of ``depthlib synth``."""
    s = summary
    depth = (
        f"depth over valid pixels of {s['images_measured']} images: min {s['depth_min']:.3f} m, "
        f"median {s['depth_median']:.3f} m, max {s['depth_max']:.3f} m; "
        f"{'raw-depth ' if 'n_images' in s else ''}holes {100 * s['raw_hole_fraction']:.1f}% of pixels"
    )
    if "n_pairs" in s:  # a folder export
        test = "no test list beside it"
        if s["test_list"]:
            test = f"test list beside it: {Path(s['test_list']).name}"
        head = (
            f"{s['path']}: {s['kind']} list of {s['n_pairs']} pairs of {s['height']}x{s['width']} "
            f"(HxW), depth scale {s['depth_scale']}; {test}"
        )
        return head + "\n" + depth
    if s["split_warning"]:
        split = f"split file problem: {s['split_warning']}"
    elif s["splits_file"]:
        split = f"train {s['n_train']}, test {s['n_test']} ({Path(s['splits_file']).name})"
    else:
        split = "no split file beside it"
    lines = [
        f"{s['path']}: {s['n_images']} images of {s['height']}x{s['width']} (HxW); {split}",
        depth,
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
