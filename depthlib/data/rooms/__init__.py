"""The embedded RGB-D "rooms" dataset: procedural indoor scenes with exact depth, in NYU's file layout.

NYU Depth V2 cannot be downloaded everywhere, so the course renders its own: rooms with floors,
walls and furniture, seen by a camera with NYU's intrinsics, with z-depth in metres over NYU's
range, a Kinect-like ``rawDepths`` twin with holes, and the scene factors ("knobs": light level,
object size, colour contrast, ...) recorded per image so experiments can relate errors to them.
Everything is a pure function of ``(seed, index)``: same seed, same bytes.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from depthlib.atomic import atomic_path
from depthlib.data.rooms.generate import (
    default_workers,
    parallel_map,
    parse_size,
    render_room,
    render_rooms,
    render_scene,
    sample_scene,
)
from depthlib.data.rooms.scene import RoomKnobs
from depthlib.errors import ConfigError, DepthlibError

GENERATOR = "depthlib-rooms"
GENERATOR_VERSION = 3  # 3: catalogue sizes, clutter, cones, gloss, camera effects, wild colours
NYU_TRAIN, NYU_TOTAL = 795, 1449

__all__ = [
    "GENERATOR_VERSION",
    "RoomKnobs",
    "default_workers",
    "ensure_rooms",
    "is_rooms_file",
    "rooms_for_profile",
    "parse_knobs",
    "parse_size",
    "render_room",
    "render_rooms",
    "render_scene",
    "sample_scene",
    "split_indices",
    "synthesize",
]


def parse_knobs(items: list[str] | None) -> RoomKnobs | None:
    """``["light=0.2", "n_objects=3"]`` -> ``RoomKnobs(light=0.2, n_objects=3)``; nothing -> None."""
    forced = {}
    for item in items or []:
        name, sep, value = str(item).partition("=")
        name = name.strip()
        if not sep or name not in RoomKnobs.names():
            raise ConfigError(
                f"Knob {item!r} is not NAME=VALUE with NAME one of {', '.join(RoomKnobs.names())}."
            )
        try:
            forced[name] = int(value) if name == "n_objects" else float(value)
        except ValueError:
            raise ConfigError(
                f"Knob {name} needs a number, got {value!r} (e.g. {name}=1)."
            ) from None
    return RoomKnobs(**forced).validated() if forced else None


def is_rooms_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a labelled file this generator wrote (not real NYU data)."""
    from depthlib.data.nyu import read_extras

    try:
        _, attrs = read_extras(Path(path))
    except (OSError, DepthlibError):
        return False
    return str(attrs.get("generator", "")) == GENERATOR


def split_indices(
    n: int, seed: int = 0, n_train: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """0-based (train, test) indices: NYU's 795/1449 share of ``n`` unless ``n_train`` is given.

    Past 1449 rooms, the first 1449 keep NYU's 795/654 split and every further room trains (as
    NYU's papers add frames of the raw videos to training): a larger training pool is scored on
    the very same 654 test rooms."""
    if n < 2:
        raise ConfigError(f"A rooms set needs at least 2 images (one train, one test); got n={n}.")
    if n > NYU_TOTAL and n_train is None:
        train, test = split_indices(NYU_TOTAL, seed)
        return np.concatenate([train, np.arange(NYU_TOTAL, n)]), test
    n_train = round(n * NYU_TRAIN / NYU_TOTAL) if n_train is None else int(n_train)
    if not 1 <= n_train <= n - 1:
        raise ConfigError(
            f"n_train={n_train} must leave both splits non-empty: use 1..{n - 1} for n={n}."
        )
    order = np.random.default_rng([int(seed), 0x5EED5, int(n)]).permutation(n)
    return np.sort(order[:n_train]), np.sort(order[n_train:])


def _settings(n, size, seed, n_train, knobs, raw) -> dict:
    """What a rooms file stores about how it was made (and ``ensure_rooms`` compares)."""
    forced = {k: v for k, v in vars(knobs).items() if v is not None} if knobs else {}
    return {
        "generator": GENERATOR,
        "generator_version": GENERATOR_VERSION,
        "n": int(n),
        "height": int(size[0]),
        "width": int(size[1]),
        "seed": int(seed),
        "n_train": len(split_indices(n, seed, n_train)[0]),
        "forced_knobs": forced,
        "raw": bool(raw),
    }


def _render_packed(job) -> tuple[dict, dict]:
    """Worker: render one room and compress its chunks for the file (see ``rooms_writer``)."""
    from depthlib.data.rooms import writer as rooms_writer

    seed, index, height, width, knobs, raw, level = job
    sample = render_room(seed, index, height, width, knobs, raw=raw)
    return rooms_writer.chunks(sample, level), sample["knobs"]


def synthesize(
    out_path: str | os.PathLike,
    n: int = NYU_TOTAL,
    size: tuple[int, int] | str = (240, 320),
    seed: int = 0,
    *,
    n_train: int | None = None,
    knobs: RoomKnobs | None = None,
    raw: bool = True,
    progress: bool = True,
    workers: int | None = None,
) -> Path:
    """Render ``n`` rooms into a labeled.mat-layout HDF5 file plus ``<stem>_splits.mat``.

    Knobs go into ``depthlib_extras/<name>`` (one value per image), the settings into that group's
    attributes. Images are written as they are rendered (never all in RAM) into a temporary file
    that replaces ``out_path`` when complete. ``workers``: processes (None = all cores).
    """
    import h5py

    from depthlib.data.nyu import splits_path_for, write_splits
    from depthlib.data.rooms import writer as rooms_writer
    from depthlib.progress import progress_bar

    height, width = parse_size(size)
    train, test = split_indices(n, seed, n_train)
    settings = _settings(n, (height, width), seed, n_train, knobs, raw)
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        probe = render_room(seed, 0, 8, 8, knobs, raw=False)["knobs"]  # the extras' names and types
        rooms_writer.create(tmp, n, height, width, probe, settings)
        with h5py.File(tmp, "r+") as f:
            level = rooms_writer.deflate_level(f)
            jobs = [(seed, i, height, width, knobs, raw, level) for i in range(n)]
            columns: dict[str, list] = {key: [] for key in probe}
            rendered = parallel_map(_render_packed, jobs, workers)
            bar = progress_bar(
                rendered, total=n, desc="rendering rooms", unit="room", disable=not progress
            )
            for i, (packed, values) in enumerate(bar):
                rooms_writer.put(f, i, packed)
                for key in columns:
                    columns[key].append(values[key])
            rooms_writer.put_extras(f, columns)
        write_splits(splits_path_for(out_path), train, test)  # first, so a stale pair never matches
    return out_path


def ensure_rooms(
    path: str | os.PathLike,
    n: int = NYU_TOTAL,
    size: tuple[int, int] | str = (240, 320),
    seed: int = 0,
    **kwargs,
) -> Path:
    """The rooms file at ``path``, rendered again only if missing, without its split file, or
    made with other settings (n, size, seed, split, forced knobs, generator version)."""
    from depthlib.data.nyu import read_extras, splits_path_for

    path, size = Path(path), parse_size(size)
    options = (kwargs.get("n_train"), kwargs.get("knobs"), kwargs.get("raw", True))
    wanted = _settings(n, size, seed, *options)
    if path.is_file() and splits_path_for(path).is_file():
        try:
            _, attrs = read_extras(path)
        except DepthlibError:
            attrs = {}
        if {k: attrs.get(k) for k in wanted} == wanted:
            return path
    return synthesize(path, n, size, seed, **kwargs)


def rooms_for_profile(profile=None, *, progress: bool = True) -> Path:
    """The rooms file of a profile (``quick``/``cpu``/``paper`` or a Profile), rendered once and
    cached in ``$DEPTHLIB_DATA`` (under torchrun, let one process render it first:
    :func:`depthlib.train.distributed.main_process_first`)."""
    from depthlib.profiles import Profile, get_profile, rooms_path

    cfg = (profile if isinstance(profile, Profile) else get_profile(profile)).rooms
    return ensure_rooms(
        rooms_path(cfg), cfg.n, (cfg.height, cfg.width), cfg.seed, progress=progress
    )
