"""The data behind notebook 00's sample gallery and knob sweeps (``depthlib.viz.data`` draws them).

Figures only draw; what they show is computed here, so the tests can check the facts a figure
claims (e.g. that forcing ``light`` leaves the depth map untouched) on the very arrays it draws.

    gallery_samples(path, indices)               RGB, filled and raw depth of file images
    render_knob_sweep(knob, values, seed, index, ...)   one room rendered with one knob forced per value
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from depthlib.data.rooms.generate import render_room, sample_scene
from depthlib.data.rooms.scene import RoomKnobs
from depthlib.errors import ConfigError, DataError

__all__ = ["gallery_samples", "render_knob_sweep"]


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
