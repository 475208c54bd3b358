"""The data behind notebook 00's sample gallery and knob sweeps (``depthlib.viz.data`` draws them).

Computed here, so tests can check what a figure claims (e.g. that forcing ``light`` leaves the
depth map untouched) on the very arrays it draws.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from depthlib.data.rooms.generate import render_room, sample_scene
from depthlib.errors import ConfigError, DataError

__all__ = ["file_samples", "gallery_samples", "render_knob_sweep"]


def file_samples(path: str | os.PathLike, indices: Sequence[int], depth="filled") -> list[dict]:
    """The samples (``rgb``, ``depth``, ``valid``, ``index``) of file images ``indices`` of a
    labeled-layout file (rooms or NYU), with a clear error for an index out of range."""
    from depthlib.data.nyu import NYULabeled

    reader = NYULabeled(path, split="all", depth=depth)
    try:
        for index in indices:
            if not 0 <= int(index) < len(reader):
                raise DataError(
                    f"image index {index} is out of range: {path} holds {len(reader)} images "
                    f"(use 0..{len(reader) - 1})."
                )
        return [reader[int(index)] for index in indices]
    finally:
        reader.close()


def gallery_samples(path: str | os.PathLike, indices: Sequence[int]) -> list[dict]:
    """File images ``indices`` of a labeled-layout file (rooms or NYU), each: ``index``, ``rgb``
    uint8 (H, W, 3), ``depth`` (filled) and ``raw_depth`` float32 metres (0 = invalid),
    ``hole_fraction`` of the raw map and ``knobs`` (the rooms set's; empty for real NYU)."""
    from depthlib.data.nyu import read_extras

    if len(indices) == 0:
        raise ConfigError("gallery_samples needs at least one image index.")
    filled, raw = file_samples(path, indices), file_samples(path, indices, depth="raw")
    extras, _ = read_extras(path)
    return [
        {
            "index": int(index),
            "rgb": f["rgb"],
            "depth": f["depth"],
            "raw_depth": r["depth"],
            "hole_fraction": float((~r["valid"]).mean()),
            "knobs": {k: _scalar(v[int(index)]) for k, v in extras.items()},
        }
        for index, f, r in zip(indices, filled, raw, strict=True)
    ]


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
    """Room ``index`` of the rooms set ``seed`` rendered once per value of one forced knob (every
    other draw stays, so the sweep isolates that knob).

    Returns ``{"knob", "values", "applied" (what the room used: a camera stays 0.3 m under the
    ceiling), "own_value" (the room's unforced draw), "seed", "index", "rgb", "depth",
    "raw_depth" (lists of maps), "depth_changes", "rgb_changes"}``; the two bools say whether any
    map differs from the first (light, contrast and noise change only the colours).
    """
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
