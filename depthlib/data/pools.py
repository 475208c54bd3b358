"""Unlabelled images for SparK pretraining, RGB only, from one of three sources:

- ``"rooms"``: procedural rooms of a seed of their own (:func:`unlabelled_rooms_seed`), so
  pretraining never sees the labelled set, its test split included; rendered in memory or
  cached into an HDF5 file;
- a labelled-layout HDF5 file (NYU or rooms): the RGB of its **train** split only;
- a folder (or a folder export's list) of images; unreadable files are skipped and counted.

Every image is centre-cropped to the target aspect and resized once, into one uint8 tensor
(N, 3, H, W): on a CPU nothing but the network may cost during training.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from depthlib.data.dataset import MAX_PRELOAD_BYTES, check_preload
from depthlib.data.folders import IMAGE_SUFFIXES, read_rgb
from depthlib.data.transforms import resize_rgb
from depthlib.errors import ConfigError, DataError
from depthlib.progress import progress_bar
from depthlib.seeds import (
    HELD_OUT_ROOMS,
    POOL,
    STREAMED_IMAGE,
    UNLABELLED_ROOMS,
    derive_seed,
    generator,
)

__all__ = [
    "ImagePool",
    "StreamedImages",
    "fit_to_size",
    "held_out_rooms_seed",
    "folder_pool",
    "labeled_pool",
    "load_image_pool",
    "rooms_pool",
    "unlabelled_rooms_seed",
]


@dataclass
class ImagePool:
    """Unlabelled images: ``images`` uint8 (N, 3, H, W) preloaded, or None when the pool is
    streamed from ``files`` (too large to preload); ``source`` says where from; ``skipped``
    lists unreadable files left out; ``available`` = images the source offered."""

    images: torch.Tensor | None
    source: str
    available: int
    skipped: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    size: tuple[int, int] | None = None

    def __post_init__(self):
        if self.images is not None:
            self.size = (int(self.images.shape[-2]), int(self.images.shape[-1]))

    def __len__(self) -> int:
        return int(self.images.shape[0]) if self.images is not None else len(self.files)

    def first(self, k: int) -> torch.Tensor:
        """The first ``k`` images as uint8 (k, 3, H, W), read from files if streamed."""
        if self.images is not None:
            return self.images[:k]
        pick = self.files[: min(k, len(self.files))]
        return torch.stack([StreamedImages(pick, self.size)[i]["rgb"] for i in range(len(pick))])


class StreamedImages(Dataset):
    """Image files read one at a time (DataLoader workers), each fitted to ``size``: a pool too
    large to preload. Item ``i`` is ``{"rgb": uint8 (3, H, W), "seed": int}``, the seed a function
    of (seed, epoch, i) only, so crops, flips and masks are exact on resume."""

    def __init__(self, files: list[Path], size: tuple[int, int], seed: int = 0):
        self.files, self.size, self.seed, self.epoch = list(files), tuple(size), int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict:
        rgb = fit_to_size(read_rgb(self.files[i]), self.size)
        return {
            "rgb": torch.from_numpy(rgb).permute(2, 0, 1).contiguous(),
            "seed": derive_seed(self.seed, self.epoch, i, STREAMED_IMAGE),
        }


def unlabelled_rooms_seed(labelled_seed: int) -> int:
    """The seed of the unlabelled rooms pool for a labelled rooms set with ``labelled_seed``."""
    return int(labelled_seed) + UNLABELLED_ROOMS


def held_out_rooms_seed(labelled_seed: int) -> int:
    """The seed of the held-out rooms that score pretraining: neither trained on nor labelled."""
    return int(labelled_seed) + HELD_OUT_ROOMS


def center_crop_to_aspect(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """The largest centred crop of an (H, W, 3) image with the aspect ratio height:width (so a
    figure size the patch divides, e.g. 224×320, does not distort a 240×320 room)."""
    h, w = rgb.shape[:2]
    if h * width > w * height:  # too tall: crop rows
        new_h = max(1, round(w * height / width))
        return rgb[(h - new_h) // 2 :][:new_h]
    new_w = max(1, round(h * width / height))
    return rgb[:, (w - new_w) // 2 :][:, :new_w]


def fit_to_size(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 (h, w, 3) → (H, W, 3): :func:`center_crop_to_aspect`, then resized (box filter
    when shrinking), so nothing is stretched."""
    crop = np.ascontiguousarray(center_crop_to_aspect(rgb, *size))
    return crop if crop.shape[:2] == tuple(size) else resize_rgb(crop, tuple(size))


def _allocate(n: int, size: tuple[int, int], max_bytes: float) -> torch.Tensor:
    check_preload(n, size, 3, max_bytes)
    return torch.empty((n, 3, *size), dtype=torch.uint8)


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
    """``n`` procedural rooms (indices 0..n-1 of ``seed``) at ``size``, rendered in memory or,
    with ``cache`` (an HDF5 path), once into that file and read back (a resume renders nothing)."""
    from depthlib.data.rooms import ensure_rooms, render_rooms

    if not isinstance(n, int) or n < 2:
        raise ConfigError(f"The rooms pool needs at least 2 images, got n_images={n!r}.")
    images = _allocate(n, size, max_preload_bytes)
    if cache is not None:
        path = ensure_rooms(cache, n, size, seed, raw=False, progress=progress, workers=workers)
        pool = labeled_pool(path, size, split="all", progress=progress)
        return ImagePool(pool.images, f"rooms seed {seed} (cached in {path})", n)
    rendered = render_rooms(n, size[0], size[1], seed, raw=False, workers=workers)
    bar = progress_bar(rendered, total=n, desc="rendering rooms", unit="room", disable=not progress)
    for i, sample in enumerate(bar):
        _fill(images, i, sample["rgb"])
    return ImagePool(images, f"rooms seed {seed} (rendered)", n)


def _subset(n: int, limit: int | None, seed: int) -> np.ndarray:
    """All of ``n`` positions, or a seeded, sorted choice of ``limit`` of them."""
    if limit is None or limit >= n:
        return np.arange(n)
    if limit < 1:
        raise ConfigError(f"n_images must be at least 1, got {limit}.")
    return np.sort(generator(seed, POOL).choice(n, limit, replace=False))


def labeled_pool(
    path: str | os.PathLike,
    size: tuple[int, int],
    n_images: int | None = None,
    *,
    split: str = "train",
    seed: int = 0,
    progress: bool = True,
    max_preload_bytes: float = MAX_PRELOAD_BYTES,
) -> ImagePool:
    """The RGB of a labelled-layout HDF5 file's ``split`` (default train: the test images stay
    unseen), or a seeded subset of ``n_images`` of them."""
    from depthlib.data.nyu import NYULabeled

    reader = NYULabeled(path, split=split)
    try:
        positions = _subset(len(reader), n_images, seed)
        images = _allocate(len(positions), size, max_preload_bytes)
        bar = progress_bar(positions, desc="reading images", unit="img", disable=not progress)
        for i, p in enumerate(bar):
            _fill(images, i, reader[int(p)]["rgb"])
    finally:
        reader.close()
    return ImagePool(images, f"{Path(path)} ({split} split, RGB only)", len(reader))


def folder_pool(
    folder: str | os.PathLike,
    size: tuple[int, int],
    n_images: int | None = None,
    *,
    seed: int = 0,
    progress: bool = True,
    max_preload_bytes: float = MAX_PRELOAD_BYTES,
    files: list[Path] | None = None,
) -> ImagePool:
    """Every image file below ``folder`` (or the given ``files``), or a seeded subset of
    ``n_images``: preloaded, undecodable files skipped and listed (a corrupt file should not cost
    a run); streamed instead when they would not fit in ``max_preload_bytes``."""
    folder = Path(folder)
    if files is None:
        found = (p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        files = sorted(p for p in found if p.is_file())
    files = list(files)
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
        order = generator(seed, POOL).permutation(len(files))
        wanted = min(int(n_images), len(files))
    if wanted * 3 * size[0] * size[1] > max_preload_bytes:  # too many to hold: read on the fly
        chosen = [files[int(p)] for p in np.sort(order[:wanted])]
        return ImagePool(None, f"{folder} ({wanted} images, streamed)", len(files),
                         files=chosen, size=tuple(size))  # fmt: skip
    images = _allocate(wanted, size, max_preload_bytes)
    kept, skipped = [], []
    bar = progress_bar(total=wanted, desc="reading images", unit="img", disable=not progress)
    for p in order:
        if len(kept) == wanted:
            break
        try:
            rgb = read_rgb(files[int(p)])
        except DataError:  # read_rgb's verdict on any file PIL cannot decode
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
    (its train split), a folder of images, or a folder export's list file (its colour images)."""
    kwargs = {"progress": progress, "max_preload_bytes": max_preload_bytes}
    if str(data) == "rooms":
        if n_images is None:
            raise ConfigError("The rooms source needs a number of images (n_images).")
        return rooms_pool(n_images, size, rooms_seed, cache=rooms_cache, **kwargs)
    path = Path(data).expanduser()
    if path.is_dir():
        return folder_pool(path, size, n_images, seed=seed, **kwargs)
    if path.suffix.lower() in (".csv", ".txt") and path.is_file():  # a folder export's list
        from depthlib.data.dataset import open_depth_dataset

        listed = open_depth_dataset(path).rgb_paths
        return folder_pool(path.parent, size, n_images, seed=seed, files=listed, **kwargs)
    if path.is_file():
        return labeled_pool(path, size, n_images, seed=seed, **kwargs)
    raise DataError(
        f"No pretraining data at {path}. --data takes 'rooms' (the generator), a labelled "
        ".mat/.h5 file (its train split's RGB is used), a folder export's list (DenseDepth "
        ".csv or BTS .txt: its RGB files) or a folder of .png/.jpg images."
    )
