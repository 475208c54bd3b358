"""Unlabelled images for SparK pretraining: where they come from, and batches cut from memory.

Three sources, all giving RGB only (depth is never read):

- ``"rooms"``: the procedural rooms generator, any number of images. Rooms are a pure function of
  ``(seed, index)`` (each room seeds its own generators with ``SeedSequence([seed, index])``), so
  the pool uses a seed of its own, the labelled set's seed + :data:`UNLABELLED_SEED_OFFSET`: its
  rooms are other rooms, and pretraining never sees the labelled set, its test split included.
  Rendered in memory (about 10 ms per 96×128 room) or cached into an HDF5 file via ``synthesize``.
- a labelled-layout HDF5 file (NYU's ``nyu_depth_v2_labeled.mat`` or a rooms file): the RGB of
  its **train** split only, so the test images stay unseen.
- a folder: every .png/.jpg/.jpeg below it (recursive); unreadable files are skipped and counted.

Every image is centre-cropped to the target aspect ratio and resized once, into one uint8 tensor
(N, 3, H, W): on a CPU nothing but the network may cost during training (the pretraining job cuts
its batches from it with :class:`depthlib.train.batches.PreloadedBatches`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from depthlib.data.dataset import MAX_PRELOAD_BYTES
from depthlib.data.folders import IMAGE_SUFFIXES, read_rgb
from depthlib.data.transforms import resize_rgb
from depthlib.errors import ConfigError, DataError

__all__ = [
    "UNLABELLED_SEED_OFFSET",
    "ImagePool",
    "fit_to_size",
    "folder_pool",
    "labeled_pool",
    "load_image_pool",
    "rooms_pool",
    "unlabelled_rooms_seed",
]

UNLABELLED_SEED_OFFSET = 1_000_003


@dataclass
class ImagePool:
    """Preloaded unlabelled images: ``images`` uint8 (N, 3, H, W); ``source`` says where from;
    ``skipped`` lists unreadable files left out; ``available`` = images the source offered."""

    images: torch.Tensor
    source: str
    available: int
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        return int(self.images.shape[-2]), int(self.images.shape[-1])


def unlabelled_rooms_seed(labelled_seed: int) -> int:
    """The seed of the unlabelled rooms pool for a labelled rooms set with ``labelled_seed``."""
    return int(labelled_seed) + UNLABELLED_SEED_OFFSET


def fit_to_size(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 (h, w, 3) → (H, W, 3): the largest centred crop of the target aspect, then resized
    (box filter when shrinking), so nothing is stretched."""
    out_h, out_w = size
    h, w = rgb.shape[:2]
    if h * out_w > w * out_h:  # too tall
        ch, cw = max(1, round(w * out_h / out_w)), w
    else:
        ch, cw = h, max(1, round(h * out_w / out_h))
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = np.ascontiguousarray(rgb[top : top + ch, left : left + cw])
    return crop if crop.shape[:2] == (out_h, out_w) else resize_rgb(crop, (out_h, out_w))


def _allocate(n: int, size: tuple[int, int], max_bytes: float) -> torch.Tensor:
    h, w = size
    if n * 3 * h * w > max_bytes:
        raise ConfigError(
            f"Preloading {n} images of {h}x{w} needs {n * 3 * h * w / 1e9:.1f} GB (limit "
            f"{max_bytes / 1e9:.1f} GB). Use fewer images (--n-images), a smaller size, or raise "
            "max_preload_bytes if the machine has the memory."
        )
    return torch.empty((n, 3, h, w), dtype=torch.uint8)


def _fill(images: torch.Tensor, i: int, rgb: np.ndarray) -> None:
    images[i] = torch.from_numpy(fit_to_size(rgb, tuple(images.shape[-2:]))).permute(2, 0, 1)


def rooms_pool(
    n: int,
    size: tuple[int, int],
    seed: int,
    *,
    cache: str | os.PathLike | None = None,
    progress: bool = True,
    workers: int | None = None,
    max_preload_bytes: float = MAX_PRELOAD_BYTES,
) -> ImagePool:
    """``n`` procedural rooms (indices 0..n-1 of ``seed``) rendered at ``size``.

    ``cache``: an HDF5 path; rendered there once with ``ensure_rooms`` (RGB only, no raw depth)
    and read back, so a second run or a resume does not render again. None: render in memory.
    """
    from depthlib.data.rooms import ensure_rooms, render_rooms

    if not isinstance(n, int) or n < 2:
        raise ConfigError(f"The rooms pool needs at least 2 images, got n_images={n!r}.")
    images = _allocate(n, size, max_preload_bytes)
    if cache is not None:
        path = ensure_rooms(cache, n, size, seed, raw=False, progress=progress, workers=workers)
        pool = labeled_pool(path, size, split="all", progress=progress, max_preload_bytes=None)
        return ImagePool(pool.images, f"rooms seed {seed} (cached in {path})", n)
    rendered = render_rooms(n, size[0], size[1], seed, raw=False, workers=workers)
    bar = tqdm(rendered, total=n, desc="rendering rooms", unit="room", disable=not progress)
    for i, sample in enumerate(bar):
        _fill(images, i, sample["rgb"])
    return ImagePool(images, f"rooms seed {seed} (rendered)", n)


def _subset(n: int, limit: int | None, seed: int) -> np.ndarray:
    """All of ``n`` positions, or a seeded, sorted choice of ``limit`` of them."""
    if limit is None or limit >= n:
        return np.arange(n)
    if limit < 1:
        raise ConfigError(f"n_images must be at least 1, got {limit}.")
    return np.sort(np.random.default_rng([int(seed), 0x9E7A]).choice(n, limit, replace=False))


def labeled_pool(
    path: str | os.PathLike,
    size: tuple[int, int],
    n_images: int | None = None,
    *,
    split: str = "train",
    seed: int = 0,
    progress: bool = True,
    max_preload_bytes: float | None = MAX_PRELOAD_BYTES,
) -> ImagePool:
    """The RGB of a labelled-layout HDF5 file's ``split`` (default train: the test images stay
    unseen), or a seeded subset of ``n_images`` of them."""
    from depthlib.data.nyu import NYULabeled

    reader = NYULabeled(path, split=split)
    try:
        positions = _subset(len(reader), n_images, seed)
        images = _allocate(len(positions), size, max_preload_bytes or float("inf"))
        bar = tqdm(positions, desc="reading images", unit="img", disable=not progress)
        for i, p in enumerate(bar):
            _fill(images, i, reader[int(p)]["rgb"])
    finally:
        reader.close()
    return ImagePool(images, f"{Path(path)} ({split} split, RGB only)", len(reader))


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )


def folder_pool(
    folder: str | os.PathLike,
    size: tuple[int, int],
    n_images: int | None = None,
    *,
    seed: int = 0,
    progress: bool = True,
    max_preload_bytes: float = MAX_PRELOAD_BYTES,
) -> ImagePool:
    """Every .png/.jpg/.jpeg below ``folder`` (or a seeded subset of ``n_images``); files that
    cannot be decoded are skipped and listed in ``skipped`` (a corrupt file should not cost a
    run). No image at all, or none readable, is a DataError."""
    folder = Path(folder)
    files = _image_files(folder)
    if not files:
        raise DataError(
            f"No images in {folder}: looked for {', '.join(IMAGE_SUFFIXES)} files in it and its "
            "subfolders. Point --data at a folder of images, a labelled .mat/.h5 file, or 'rooms'."
        )
    if n_images is None:
        order, wanted = np.arange(len(files)), len(files)
    else:  # a seeded order, so a skipped corrupt file is replaced by the next one in it
        if n_images < 1:
            raise ConfigError(f"n_images must be at least 1, got {n_images}.")
        order = np.random.default_rng([int(seed), 0x9E7A]).permutation(len(files))
        wanted = min(int(n_images), len(files))
    images = _allocate(wanted, size, max_preload_bytes)
    kept, skipped = [], []
    bar = tqdm(total=wanted, desc="reading images", unit="img", disable=not progress)
    for p in order:
        if len(kept) == wanted:
            break
        try:
            rgb = read_rgb(files[int(p)])
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
            skipped.append(str(files[int(p)]))
            continue
        _fill(images, len(kept), rgb)
        kept.append(int(p))
        bar.update(1)
    bar.close()
    if not kept:
        raise DataError(
            f"None of the {len(files)} image files in {folder} could be read (first: "
            f"{skipped[0]}). Check that they are valid PNG/JPEG files."
        )
    images = images[: len(kept)][torch.from_numpy(np.argsort(kept, kind="stable"))]
    return ImagePool(images, f"{folder} ({len(kept)} images)", len(files), skipped)


def load_image_pool(
    data: str | os.PathLike,
    size: tuple[int, int],
    n_images: int | None,
    *,
    rooms_seed: int,
    rooms_cache: str | os.PathLike | None = None,
    seed: int = 0,
    progress: bool = True,
    max_preload_bytes: float = MAX_PRELOAD_BYTES,
) -> ImagePool:
    """``data`` = "rooms" (``n_images`` rooms of ``rooms_seed``), a labelled-layout HDF5 file
    (its train split), or a folder of images."""
    kwargs = {"progress": progress, "max_preload_bytes": max_preload_bytes}
    if str(data) == "rooms":
        if n_images is None:
            raise ConfigError("The rooms source needs a number of images (n_images).")
        return rooms_pool(n_images, size, rooms_seed, cache=rooms_cache, **kwargs)
    path = Path(data).expanduser()
    if path.is_dir():
        return folder_pool(path, size, n_images, seed=seed, **kwargs)
    if path.is_file():
        return labeled_pool(path, size, n_images, seed=seed, **kwargs)
    raise DataError(
        f"No pretraining data at {path}. --data takes 'rooms' (the generator), a labelled "
        ".mat/.h5 file (its train split's RGB is used) or a folder of .png/.jpg images."
    )
