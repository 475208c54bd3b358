"""Rendering rooms: one sample per ``(seed, index)``, with forced knobs and measured statistics.

``render_room`` draws the scene (scene, furniture), casts rays (render), simulates the sensor
(sensor) and records the knobs with what the image actually shows (visible object sizes,
colour distance, brightness, holes). Each room's generators are seeded by ``(seed, index)``
only, so a room does not depend on which process renders it or on the rooms before it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace

import numpy as np

from depthlib.data.rooms import render
from depthlib.data.rooms.furniture import furnish
from depthlib.data.rooms.scene import RoomKnobs, Scene, draw_knobs, sample_room
from depthlib.data.rooms.sensor import kinect_raw, photo
from depthlib.errors import ConfigError


def sample_scene(seed: int, index: int, knobs: RoomKnobs | None = None) -> Scene:
    """The scene of room ``index`` of the set with this seed, with any forced knobs."""
    if int(seed) != seed or int(index) != index or seed < 0 or index < 0:
        raise ConfigError(
            f"seed and index must be non-negative integers (got seed={seed!r}, index={index!r})."
        )
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]).spawn(2)[0])
    values = draw_knobs(rng, knobs)
    room, camera, rotation, surfaces, lamp, ambient, power = sample_room(rng, values)
    background = np.mean([s.color for i, s in enumerate(surfaces) if i != 3], axis=0)
    prims, sizes = furnish(rng, room, camera, rotation[:, 2], values, background)
    lit = (lamp, ambient, power)
    return Scene(room, camera, rotation, *lit, surfaces, prims, sizes, background, values)


def object_ids(scene: Scene, surf: np.ndarray) -> np.ndarray:
    """Per-pixel furniture id (int32, shaped like ``surf``; -1 = room faces and flat decor)."""
    faces = [-1] * render.N_ROOM_FACES
    return np.array(faces + [p.group for p in scene.primitives], np.int32)[surf]


def render_scene(
    scene: Scene,
    height: int,
    width: int,
    rng: np.random.Generator,
    raw: bool = True,
    objects: bool = False,
) -> dict:
    """``rgb`` uint8, ``depth`` float32 m, ``raw_depth`` (or None), ``stats`` and, with
    ``objects``, the per-pixel furniture ids (:func:`object_ids`) of a scene."""
    depth, surf, dirs = render.cast(scene, height, width)
    p, normals, albedo, glow, gloss = render.surfaces(scene, depth, surf, dirs)
    radiance, _ = render.shade(scene, p, normals, albedo, glow, gloss)
    rgb = photo(radiance.reshape(height, width, 3), rng, scene.knobs["noise"])
    raw_depth = None
    if raw:
        d = np.stack([x.reshape(-1) for x in dirs], 1)
        facing = np.abs(np.einsum("ij,ij->i", normals, d)) / np.linalg.norm(d, axis=1)
        maps = (facing.reshape(depth.shape), albedo.reshape(*depth.shape, 3))
        fx = render.intrinsics(height, width)[0]
        raw_depth = kinect_raw(depth, *maps, glow.reshape(depth.shape), rng, fx)
    ids = object_ids(scene, surf)
    stats = _measure(scene, surf, ids.reshape(-1), albedo, rgb, raw_depth)
    out = {"rgb": rgb, "depth": depth, "raw_depth": raw_depth, "stats": stats}
    if objects:
        out["objects"] = ids.reshape(height, width)
    return out


def _measure(scene: Scene, surf, group_of: np.ndarray, albedo: np.ndarray, rgb, raw_depth) -> dict:
    """What the image shows: visible object sizes, colour distance, brightness, holes
    (``group_of``: flat furniture ids, -1 = room surfaces and decor)."""
    is_object = group_of >= 0
    encoded = albedo ** (1 / 2.2)  # distances on a perceptual-ish scale, like the 8-bit image
    room_px = surf.reshape(-1) < render.N_ROOM_FACES  # walls, floor, ceiling (not decor)
    background = encoded[room_px].mean(0) if room_px.any() else scene.background ** (1 / 2.2)
    visible, distance, pixels = [], 0.0, 0
    for g in np.unique(group_of[is_object]):
        sel = group_of == g
        visible.append(scene.sizes[g])
        distance += np.linalg.norm(encoded[sel].mean(0) - background) * sel.sum()
        pixels += sel.sum()
    return {
        "object_size_min": float(min(visible)) if visible else 0.0,
        "object_size_mean": float(np.mean(visible)) if visible else 0.0,
        "objects_visible": len(visible),
        "object_fraction": float(is_object.mean()),
        "color_distance": float(distance / pixels) if pixels else 0.0,
        "mean_luminance": float(rgb.mean() / 255),
        "hole_fraction": float((raw_depth == 0).mean()) if raw_depth is not None else 0.0,
    }


def render_room(
    seed: int = 0,
    index: int = 0,
    height: int = 240,
    width: int = 320,
    knobs: RoomKnobs | None = None,
    *,
    raw: bool = True,
    objects: bool = False,
    **overrides,
) -> dict:
    """Room ``index`` of the set with this seed: ``rgb``, ``depth``, ``raw_depth``, ``knobs``
    (and ``objects``, the per-pixel furniture id map, when asked).

    Force scene factors with a ``RoomKnobs`` or keyword overrides (``light=0.2``); every other
    draw stays, so e.g. ``light`` or ``contrast`` sweeps keep the depth map identical.
    """
    height, width = parse_size((height, width))
    if overrides:
        unknown = set(overrides) - set(RoomKnobs.names())
        if unknown:
            raise ConfigError(
                f"Unknown room knob(s) {sorted(unknown)}; choose from {', '.join(RoomKnobs.names())}."
            )
        knobs = replace(knobs or RoomKnobs(), **overrides)
    scene = sample_scene(seed, index, knobs)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]).spawn(2)[1])
    out = render_scene(scene, height, width, rng, raw=raw, objects=objects)
    k = scene.knobs
    out["knobs"] = {
        "seed": int(seed),
        "index": int(index),
        **{name: k[name] for name in RoomKnobs.names()},
        "ambient": scene.ambient,
        "lamp_power": scene.lamp_power,
        "room_width": float(scene.room[0]),
        "room_height": float(scene.room[1]),
        "room_depth": float(scene.room[2]),
        "objects_placed": len(scene.sizes),
        **out.pop("stats"),
    }
    return out


def _render_job(job) -> dict:  # (seed, index, height, width, knobs, raw)
    return render_room(*job[:5], raw=job[5])


def render_rooms(
    n: int,
    height: int = 240,
    width: int = 320,
    seed: int = 0,
    *,
    start: int = 0,
    knobs: RoomKnobs | None = None,
    raw: bool = True,
    workers: int | None = 1,
) -> Iterator[dict]:
    """Rooms ``start .. start+n-1`` in order; ``workers`` > 1 renders in parallel processes."""
    jobs = [(seed, i, height, width, knobs, raw) for i in range(start, start + n)]
    return parallel_map(_render_job, jobs, workers)


def parallel_map(func, jobs: list, workers: int | None = 1) -> Iterator:
    """``map(func, jobs)`` in ``workers`` processes (None = all usable cores; ``func`` must be
    module-level). Results stream back in order while later jobs run, to be written as they come.
    """
    workers = default_workers() if workers is None else int(workers)
    if workers <= 1 or len(jobs) < 4:
        yield from map(func, jobs)
        return
    chunksize = max(1, min(8, len(jobs) // (8 * workers)))
    pool = ProcessPoolExecutor(max_workers=workers)
    try:
        yield from pool.map(func, jobs, chunksize=chunksize)
    finally:  # on Ctrl-C or an error, drop the queued jobs instead of rendering them all
        pool.shutdown(wait=True, cancel_futures=True)


def default_workers() -> int:
    """Processes for rendering: the CPUs this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def parse_size(size: str | tuple[int, int]) -> tuple[int, int]:
    """``"240x320"`` or ``(240, 320)`` -> (240, 320): height x width in pixels, both at least 8."""
    parts = size.lower().replace("×", "x").split("x") if isinstance(size, str) else size
    try:
        h, w = (int(p) for p in parts)
    except (TypeError, ValueError):
        h = w = None
    if h is None or h < 8 or w < 8:
        raise ConfigError(
            f"Image size {size!r} is not valid; write HEIGHTxWIDTH with both at least 8, e.g. 240x320."
        )
    return h, w
