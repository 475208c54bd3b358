"""From any reader to batches of tensors, plus the factory that picks the reader for a path.

``DepthDataset`` gives batches ``{"rgb": uint8 (B, 3, H, W), "depth": float32 (B, 1, H, W)
metres, "valid": bool (B, 1, H, W), "index": int64 (B,)}`` of some images of a reader, augmented
on tensors when training. With ``preload=True`` every image is read and resized once, so on a
CPU the data pipeline stays off the hot path.

A batch sampler yields draws, not images: draw ``d`` is image ``d % len(dataset)``, augmented by
a generator of ``(seed, epoch, d)`` only. A label subset repeated ``passes`` times per epoch is
held once, each repetition gets its own augmentation, and a resumed run or a DataLoader with
any number of workers sees the same batches.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from depthlib.data.folders import BTSFolder, DenseDepthFolder, find_test_list
from depthlib.data.nyu import LABELED_FILENAME, NYULabeled
from depthlib.data.sample import DATA_SOURCES_HINT
from depthlib.data.transforms import Augment, resize
from depthlib.errors import ConfigError, DataError
from depthlib.seeds import generator

__all__ = [
    "MAX_PRELOAD_BYTES",
    "DepthDataset",
    "check_preload",
    "evenly_spaced",
    "open_depth_dataset",
    "open_splits",
    "stream_size",
]

# Largest preload (bytes) a job makes without being asked: well inside a 24 GiB laptop, and it
# refuses full-resolution NYU (1449 x 480 x 640 x 8 bytes = 3.6 GB) only when it would not fit.
MAX_PRELOAD_BYTES = 4e9


def check_preload(n: int, size: Sequence[int], bytes_per_pixel: int, limit: float) -> None:
    """Refuse to preload ``n`` images of ``size`` when they would take more than ``limit`` bytes."""
    needed = n * size[0] * size[1] * bytes_per_pixel
    if needed > limit:
        raise ConfigError(
            f"Preloading {n} images of {size[0]}x{size[1]} needs {needed / 1e9:.1f} GB (limit "
            f"{limit / 1e9:.1f} GB). Use fewer images or a smaller size (--n-images, --height/--width), "
            "or a folder export, which is streamed instead of preloaded."
        )


def evenly_spaced(n: int, limit: int | None) -> np.ndarray:
    """All ``n`` positions, or ``limit`` evenly spaced ones (the same every epoch and run): a
    fixed subset for validation or a quick look that still spans the whole split."""
    if not limit or limit >= n:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, max(1, limit)).round().astype(int))


def open_depth_dataset(path: str | os.PathLike, split: str = "train", **kwargs):
    """The reader for ``path``: an HDF5 / .mat / .h5 file (or a folder holding
    ``nyu_depth_v2_labeled.mat``) -> ``NYULabeled``, a .csv -> ``DenseDepthFolder``, a .txt list
    -> ``BTSFolder``. Folder exports are one split each, so they ignore ``split``."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"No dataset at {path}. {DATA_SOURCES_HINT}")
    if path.is_dir():
        labeled = path / LABELED_FILENAME
        if labeled.is_file():
            return NYULabeled(labeled, split=split, **kwargs)
        raise DataError(
            f"Folder {path} holds no {LABELED_FILENAME}; pass the dataset file itself (a labeled "
            f".mat/.h5, a DenseDepth .csv or a BTS .txt list). {DATA_SOURCES_HINT}"
        )
    suffix = path.suffix.lower()
    if suffix in (".mat", ".h5", ".hdf5") or h5py.is_hdf5(path):
        return NYULabeled(path, split=split, **kwargs)
    if suffix == ".csv":
        return DenseDepthFolder(path, **kwargs)
    if suffix == ".txt":
        return BTSFolder(path, **kwargs)
    raise DataError(
        f"Cannot tell what kind of dataset {path} is: expected a labeled .mat/.h5 (HDF5), a "
        "DenseDepth .csv or a BTS .txt list."
    )


def open_splits(data: str | os.PathLike, test_data: str | os.PathLike | None = None):
    """``(train reader, test reader)``: a labelled file's two splits, or a folder export's train
    list with its test list (``test_data``, else the one the export ships beside it)."""
    train = open_depth_dataset(data, "train")
    if test_data is not None:
        return train, open_depth_dataset(test_data, "test")
    if isinstance(train, NYULabeled):
        return train, open_depth_dataset(data, "test")
    found = find_test_list(data)
    if found is None:
        raise DataError(
            f"{data} is one split of a folder export; pass its test list as well (--test-data: "
            "DenseDepth's nyu2_test.csv, BTS's nyudepthv2_test_files_with_gt.txt), or put it "
            "beside the train list under the same name with 'test' for 'train'."
        )
    return train, open_depth_dataset(found, "test")


def stream_size(image_size: Sequence[int], size: Sequence[int], margin: float = 0.1) -> tuple:
    """What a streamed sample is resized to before its random crop at the training ``size``: the
    smallest scale that covers ``size``, ``margin`` larger, never above the image's own size."""
    (h, w), (th, tw) = image_size, size
    scale = min(1.0, max(th / h, tw / w) * (1 + margin))
    return max(th, round(h * scale)), max(tw, round(w * scale))


class DepthDataset(Dataset):
    """Images ``positions`` (default all) of any reader, resized to ``size`` (None: the reader's
    own), augmented by ``augment`` per draw (None: as they are). ``preload``: read everything
    once into tensors. depth_resize: "nearest" or "area" (see transforms).

    ``batch(draws)`` is also ``__getitems__``, so DataLoader workers build whole batches and
    augment them at once; pass ``collate_fn=default_convert`` to keep them as they are.
    """

    def __init__(
        self,
        source,
        positions: Sequence[int] | None = None,
        *,
        size: Sequence[int] | None = None,
        augment: Augment | None = None,
        seed: int = 0,
        depth_resize: str = "nearest",
        preload: bool = False,
        max_preload_bytes: float = MAX_PRELOAD_BYTES,
    ):
        if depth_resize not in ("nearest", "area"):
            raise ConfigError(f"depth_resize must be 'nearest' or 'area', got {depth_resize!r}.")
        self.source = source
        self.positions = [int(p) for p in (range(len(source)) if positions is None else positions)]
        self.size = (int(size[0]), int(size[1])) if size is not None else None
        self.augment, self.seed, self.epoch, self.depth_resize = augment, int(seed), 0, depth_resize
        self.tensors: dict[str, torch.Tensor] | None = None
        if preload:
            check_preload(len(self), self.size or source.image_size, 3 + 4 + 1, max_preload_bytes)
            self.tensors = self.stack(range(len(self)))

    def set_epoch(self, epoch: int) -> None:
        """New augmentations each epoch, still a pure function of (seed, epoch, draw)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.positions)

    def read(self, i: int) -> dict:
        """Image ``i`` as the reader gives it (numpy, its own size: the ground truth)."""
        return self.source[self.positions[i]]

    def stack(self, images: Sequence[int]) -> dict[str, torch.Tensor]:
        """Images ``images`` read, resized and stacked as a batch (not augmented). Filled in
        numpy: per-sample torch ops would each wake the intra-op thread pool."""
        n, (h, w) = len(images), self.size or self.source.image_size
        rgb, index = np.empty((n, 3, h, w), np.uint8), np.empty(n, np.int64)
        depth, valid = np.empty((n, 1, h, w), np.float32), np.empty((n, 1, h, w), bool)
        for k, i in enumerate(images):
            sample = self.read(i)
            sample = resize(sample, (h, w), self.depth_resize) if self.size else sample
            if sample["depth"].shape != (h, w):
                raise ConfigError(
                    f"Sample {sample['name']!r} is {sample['depth'].shape}, not {(h, w)}: images "
                    "differ in size, so pass size=(H, W) to batch them."
                )
            rgb[k], index[k] = sample["rgb"].transpose(2, 0, 1), sample["index"]
            depth[k, 0], valid[k, 0] = sample["depth"], sample["valid"]
        arrays = {"rgb": rgb, "depth": depth, "valid": valid, "index": index}
        return {key: torch.from_numpy(value) for key, value in arrays.items()}

    def batch(self, draws: Sequence[int]) -> dict[str, torch.Tensor]:
        """The batch of ``draws`` (draw d is image d % len), from the preloaded tensors or read
        now, augmented per draw."""
        images = [int(d) % len(self) for d in draws]
        if self.tensors is None:
            part = self.stack(images)
        else:
            part = {key: value[images] for key, value in self.tensors.items()}
        if self.augment is None:
            return part
        return self.augment(part, [generator(self.seed, self.epoch, d) for d in draws])

    __getitems__ = batch

    def __getitem__(self, draw: int) -> dict:
        return {key: value[0] for key, value in self.batch([draw]).items()}
