"""Rendering rooms: one sample per ``(seed, index)``, with forced knobs and measured statistics.

``render_room`` draws the scene (``rooms_scene`` / ``rooms_furniture``), casts rays
(``rooms_render``), simulates the sensor (``rooms_sensor``) and records the knobs together with
what the image actually shows (visible object sizes, colour distance, brightness, holes).
Each room uses its own generators seeded by ``SeedSequence([seed, index])``, so a room does not
depend on which process renders it or on the rooms rendered before it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from depthlib.data.rooms import render
from depthlib.data.rooms.furniture import furnish
from depthlib.data.rooms.scene import RoomKnobs, Scene, draw_knobs, sample_room
from depthlib.data.rooms.sensor import kinect_raw, photo
from depthlib.errors import ConfigError


def _check_seed(seed: int, index: int) -> None:
    if int(seed) != seed or int(index) != index or seed < 0 or index < 0:
        raise ConfigError(
            f"seed and index must be non-negative integers (got seed={seed!r}, index={index!r})."
        )


def sample_scene(seed: int, index: int, knobs: RoomKnobs | None = None) -> Scene:
    """The scene of room ``index`` of the set with this seed, with any forced knobs."""
    _check_seed(seed, index)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]).spawn(2)[0])
    values = draw_knobs(rng, knobs)
    room, camera, rotation, surfaces, lamp, ambient, power = sample_room(rng, values)
    background = np.mean([s.color for i, s in enumerate(surfaces) if i != 3], axis=0)
    primitives, sizes = furnish(rng, room, camera, rotation[:, 2], values, background)
    return Scene(
        room,
        camera,
        rotation,
        lamp,
        ambient,
        power,
        surfaces,
        primitives,
        sizes,
        background.astype(np.float32),
        values,
    )


def object_ids(scene: Scene, surf: np.ndarray) -> np.ndarray:
    """Per-pixel furniture id (int32, same shape as ``surf``; -1 = walls, floor, ceiling and flat
    decor) from the surface index every ray hit."""
    groups = np.array([p.group for p in scene.primitives] or [-1], np.int32)
    ids = surf.astype(np.int64)
    inside = ids >= render.N_ROOM_FACES
    return np.where(inside, groups[np.where(inside, ids - render.N_ROOM_FACES, 0)], -1).astype(
        np.int32
    )


def render_scene(
    scene: Scene,
    height: int,
    width: int,
    rng: np.random.Generator,
    raw: bool = True,
    objects: bool = False,
) -> dict:
    """Pixels of a scene: ``rgb`` uint8, ``depth`` float32 m, ``raw_depth`` (or None), ``stats``,
    and with ``objects`` the per-pixel furniture id map (see :func:`object_ids`)."""
    depth, surf, dirs = render.cast(scene, height, width)
    p, normals, albedo, glow = render.surfaces(scene, depth, surf, dirs)
    radiance, _ = render.shade(scene, p, normals, albedo, glow)
    rgb = photo(radiance.reshape(height, width, 3), rng, scene.knobs["noise"])
    raw_depth = None
    if raw:
        d = np.stack([x.reshape(-1) for x in dirs], 1)
        facing = np.abs(np.einsum("ij,ij->i", normals, d)) / np.linalg.norm(d, axis=1)
        fx = render.intrinsics(height, width)[0]
        raw_depth = kinect_raw(
            depth,
            facing.reshape(height, width),
            albedo.reshape(height, width, 3),
            glow.reshape(height, width),
            rng,
            fx,
        )
    ids = object_ids(scene, surf)
    stats = _measure(scene, surf, ids.reshape(-1), albedo, rgb, raw_depth)
    out = {"rgb": rgb, "depth": depth, "raw_depth": raw_depth, "stats": stats}
    if objects:
        out["objects"] = ids.reshape(height, width)
    return out


def _measure(scene: Scene, surf, group_of: np.ndarray, albedo: np.ndarray, rgb, raw_depth) -> dict:
    """What the image actually shows: visible object sizes, colour distance, brightness, holes.
    ``group_of``: the flat furniture id map (-1 = room surfaces and decor)."""
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
    if height < 8 or width < 8:
        raise ConfigError(
            f"Image size {height}x{width} is too small; use at least 8x8 (e.g. 240x320)."
        )
    if overrides:
        unknown = set(overrides) - set(RoomKnobs.names())
        if unknown:
            raise ConfigError(
                f"Unknown room knob(s) {sorted(unknown)}; choose from {', '.join(RoomKnobs.names())}."
            )
        base = {} if knobs is None else {n: getattr(knobs, n) for n in RoomKnobs.names()}
        knobs = RoomKnobs(**{**base, **overrides})
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


def _render_job(job) -> dict:
    seed, index, height, width, knobs, raw = job
    return render_room(seed, index, height, width, knobs, raw=raw)


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
    """``map(func, jobs)`` in order, in ``workers`` processes (None = all usable cores).

    ``func`` must be a module-level function (it is pickled by name). Results stream back in
    order while later jobs still run, so the caller can write them as they come.
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


def parse_size(text: str) -> tuple[int, int]:
    """``"240x320"`` -> (240, 320): height x width in pixels."""
    parts = str(text).lower().replace("×", "x").split("x")
    try:
        h, w = (int(p) for p in parts)
    except ValueError:
        h = w = None
    if h is None or h < 8 or w < 8:
        raise ConfigError(
            f"Image size {text!r} is not valid; write HEIGHTxWIDTH with both at least 8, e.g. 240x320."
        )
    return h, w
