"""The embedded RGB-D "rooms" dataset: procedural indoor scenes with exact depth, in NYU's file layout.

NYU Depth V2 cannot be downloaded everywhere, so the course renders its own: rooms with floors,
walls and furniture, seen by a camera with NYU's intrinsics, with z-depth in metres over NYU's
range, a Kinect-like ``rawDepths`` twin with holes, and the scene factors ("knobs": light level,
object size, colour contrast, ...) recorded per image so experiments can relate errors to them.
Everything is a pure function of ``(seed, index)``: same seed, same bytes.

    render_room(seed, index, height, width, light=0.2)  one sample (force any RoomKnobs field)
    render_rooms(n, height, width, seed)                 an iterator of samples
    synthesize(path, n, size, seed)                      labeled.mat layout + <stem>_splits.mat
    ensure_rooms(path, n, size, seed)                    the cached file, re-rendered if stale
    summarize(path), format_summary(summary)             counts, sizes, depth range, knob ranges
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from depthlib.data.rooms_generate import (
    default_workers,
    parallel_map,
    parse_size,
    render_room,
    render_rooms,
    render_scene,
    sample_scene,
)
from depthlib.data.rooms_scene import RoomKnobs
from depthlib.errors import ConfigError, DepthlibError

GENERATOR = "depthlib-rooms"
GENERATOR_VERSION = 1
NYU_TRAIN, NYU_TOTAL = 795, 1449

__all__ = [
    "GENERATOR_VERSION",
    "RoomKnobs",
    "default_workers",
    "ensure_rooms",
    "format_summary",
    "is_rooms_file",
    "parse_knobs",
    "parse_size",
    "render_room",
    "render_rooms",
    "render_scene",
    "sample_scene",
    "split_indices",
    "summarize",
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
    """0-based (train, test) indices: NYU's 795/1449 share of ``n`` unless ``n_train`` is given."""
    if n < 2:
        raise ConfigError(f"A rooms set needs at least 2 images (one train, one test); got n={n}.")
    n_train = round(n * NYU_TRAIN / NYU_TOTAL) if n_train is None else int(n_train)
    if not 1 <= n_train <= n - 1:
        raise ConfigError(
            f"n_train={n_train} must leave both splits non-empty: use 1..{n - 1} for n={n}."
        )
    order = np.random.default_rng([int(seed), 0x5EED5, int(n)]).permutation(n)
    return np.sort(order[:n_train]), np.sort(order[n_train:])


def splits_path_for(path: str | os.PathLike) -> Path:
    """Where the split file of a labeled file lives: ``<stem>_splits.mat`` beside it."""
    path = Path(path)
    return path.with_name(f"{path.stem}_splits.mat")


def _settings(n, size, seed, n_train, knobs, raw) -> dict:
    forced = {k: v for k, v in vars(knobs).items() if v is not None} if knobs else {}
    train, _ = split_indices(n, seed, n_train)
    return {
        "generator": GENERATOR,
        "generator_version": GENERATOR_VERSION,
        "n": int(n),
        "height": int(size[0]),
        "width": int(size[1]),
        "seed": int(seed),
        "n_train": len(train),
        "forced_knobs": forced,
        "raw": bool(raw),
    }


def _render_packed(job) -> tuple[dict, dict]:
    """Worker: render one room and compress its chunks for the file (see ``rooms_writer``)."""
    from depthlib.data import rooms_writer

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
    attributes. Images are written as they are rendered (never all in RAM), into a temporary file
    that replaces ``out_path`` only when complete. ``workers``: processes (None = all cores).
    """
    import h5py
    from tqdm.auto import tqdm

    from depthlib.data import rooms_writer
    from depthlib.data.nyu import write_splits

    height, width = _size(size)
    train, test = split_indices(n, seed, n_train)
    settings = _settings(n, (height, width), seed, n_train, knobs, raw)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.rendering{os.getpid()}")
    try:
        probe = render_room(seed, 0, 8, 8, knobs, raw=False)["knobs"]  # the extras' names and types
        rooms_writer.create(tmp, n, height, width, probe, settings)
        with h5py.File(tmp, "r+") as f:
            level = rooms_writer.deflate_level(f)
            jobs = [(seed, i, height, width, knobs, raw, level) for i in range(n)]
            columns: dict[str, list] = {key: [] for key in probe}
            results = parallel_map(_render_packed, jobs, workers)
            for i, (packed, values) in enumerate(
                tqdm(results, total=n, desc="rendering rooms", unit="room", disable=not progress)
            ):
                rooms_writer.put(f, i, packed)
                for key in columns:
                    columns[key].append(values[key])
            rooms_writer.put_extras(f, columns)
        write_splits(splits_path_for(out_path), train, test)  # first, so a stale pair never matches
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    return out_path


def _size(size) -> tuple[int, int]:
    if isinstance(size, str):
        return parse_size(size)
    try:
        height, width = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ConfigError(
            f"size must be (height, width) or 'HEIGHTxWIDTH', got {size!r}."
        ) from None
    return parse_size(f"{height}x{width}")


def ensure_rooms(
    path: str | os.PathLike,
    n: int = NYU_TOTAL,
    size: tuple[int, int] | str = (240, 320),
    seed: int = 0,
    **kwargs,
) -> Path:
    """The rooms file at ``path``, rendered only if missing or made with other settings.

    A file counts as the same when its stored settings (n, size, seed, split, forced knobs,
    generator version) match and its split file exists; otherwise it is rendered again.
    """
    from depthlib.data.nyu import read_extras

    path = Path(path)
    height, width = _size(size)
    wanted = _settings(
        n,
        (height, width),
        seed,
        kwargs.get("n_train"),
        kwargs.get("knobs"),
        kwargs.get("raw", True),
    )
    if path.is_file() and splits_path_for(path).is_file():
        try:
            _, attrs = read_extras(path)
        except DepthlibError:
            attrs = {}
        if {k: attrs.get(k) for k in wanted} == wanted:
            return path
    return synthesize(path, n, (height, width), seed, **kwargs)


def summarize(path: str | os.PathLike, max_images: int = 200) -> dict:
    """Counts, split sizes, image size, depth range and knob ranges of a labeled-layout file.

    Works for real NYU files too (they have no knobs). Depth statistics use at most
    ``max_images`` evenly spaced images (every pixel of each), so a 2.8 GB file stays quick.
    """
    from depthlib.data.nyu import NYULabeled, find_splits_file, read_extras, read_splits

    if max_images < 1:
        raise ConfigError(f"max_images must be at least 1, got {max_images}.")
    filled = NYULabeled(path, split="all")
    raw = NYULabeled(path, split="all", depth="raw")
    n = len(filled)
    picked = np.unique(np.linspace(0, n - 1, min(n, max_images)).round().astype(int)) if n else []
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


def rooms_for_profile(profile=None, *, progress: bool = True) -> Path:
    """The rooms file of a profile (``quick``/``cpu``/``paper`` or a Profile), rendered once and cached."""
    from depthlib.distributed import barrier, is_main_process
    from depthlib.profiles import Profile, get_profile, rooms_path

    prof = profile if isinstance(profile, Profile) else get_profile(profile)
    cfg = prof.rooms
    kwargs = dict(n=cfg.n, size=(cfg.height, cfg.width), seed=cfg.seed, progress=progress)
    # Under torchrun, rank 0 renders the cache while the others wait, then they find it ready.
    if is_main_process():
        path = ensure_rooms(rooms_path(cfg), **kwargs)
    barrier()
    if not is_main_process():
        path = ensure_rooms(rooms_path(cfg), **kwargs)
    return path
