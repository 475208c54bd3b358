"""From any reader to network-ready tensors, plus the factory that picks the reader for a path.

``DepthDataset`` turns the readers' numpy samples into ``{"image": float32 (3, H, W) ImageNet-
normalised, "depth": float32 (1, H, W) metres, "valid": bool (1, H, W), "index": int}``.
Pipeline per sample: read -> resize to ``size`` -> augment (train) -> tensors -> normalise.
Augmentation randomness comes from ``(seed, epoch, position)`` only, so a resumed run and a
DataLoader with any number of workers see the same augmentations.

On a CPU the data pipeline must stay off the hot path: with ``preload=True`` every sample is
read and resized once into uint8/float tensors, and training batches are then cut and augmented
(flip, crop, jitter) on tensors by ``batch`` at negligible cost.
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
from depthlib.data.transforms import Augment, normalize, normalize_hwc, resize
from depthlib.errors import ConfigError, DataError

__all__ = [
    "MAX_PRELOAD_BYTES",
    "DepthDataset",
    "evenly_spaced",
    "open_depth_dataset",
    "open_splits",
    "stream_size",
]

# Largest preload (bytes) a job makes without being asked: well inside a 24 GiB laptop, and it
# refuses full-resolution NYU (1449 x 480 x 640 x 8 bytes = 3.6 GB) only when it would not fit.
MAX_PRELOAD_BYTES = 4e9


def evenly_spaced(n: int, limit: int | None) -> np.ndarray:
    """All ``n`` positions, or ``limit`` evenly spaced ones (the same every epoch and run): a
    fixed subset for validation or a quick look that still spans the whole split."""
    if not limit or limit >= n:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, max(1, limit)).round().astype(int))


def open_depth_dataset(path: str | os.PathLike, split: str = "train", **kwargs):
    """The reader for ``path``: an HDF5 / .mat / .h5 file -> ``NYULabeled(path, split, **kw)``;
    a .csv -> ``DenseDepthFolder``; a .txt list -> ``BTSFolder(path, **kw)``; a folder holding
    ``nyu_depth_v2_labeled.mat`` -> that file. Folder exports are one split each, so ``split`` is
    ignored for them (pass the train or test list instead)."""
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
    """A torch Dataset over any reader (``NYULabeled``, ``DenseDepthFolder``, ``BTSFolder``).

    transform: ``t(sample, rng) -> sample`` on numpy samples, applied after resizing; with
    ``train=True`` and no transform, ``Augment()`` (flip + colour jitter). size: (H, W) to resize
    to, or None to keep the reader's size. depth_resize: "nearest" or "area" (see transforms).
    preload: read everything once into tensors (needs an ``Augment``-like transform with
    ``apply_batch`` for training); ``max_preload_bytes`` guards against preloading full-size NYU.
    """

    def __init__(
        self,
        source,
        transform=None,
        size: Sequence[int] | None = None,
        train: bool = False,
        seed: int = 0,
        depth_resize: str = "nearest",
        preload: bool = False,
        max_preload_bytes: float = MAX_PRELOAD_BYTES,
    ):
        if depth_resize not in ("nearest", "area"):
            raise ConfigError(f"depth_resize must be 'nearest' or 'area', got {depth_resize!r}.")
        self.source = source
        self.size = (int(size[0]), int(size[1])) if size is not None else None
        self.train = train
        self.transform = transform if transform is not None else (Augment() if train else None)
        self.seed = int(seed)
        self.epoch = 0
        self.depth_resize = depth_resize
        self.max_preload_bytes = max_preload_bytes
        self.tensors: dict[str, torch.Tensor] | None = None
        if preload:
            if self.transform is not None and not hasattr(self.transform, "apply_batch"):
                raise ConfigError(
                    f"{type(self.transform).__name__} works on numpy samples only; preloaded "
                    "data needs a transform with apply_batch (e.g. depthlib.data.Augment)."
                )
            self.tensors = self.to_tensors()

    def set_epoch(self, epoch: int) -> None:
        """New augmentations each epoch, still a pure function of (seed, epoch, position)."""
        self.epoch = int(epoch)

    def rng(self, i: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, int(i)])

    def __len__(self) -> int:
        return len(self.source)

    def sample(self, i: int) -> dict:
        """Sample ``i`` as the reader gives it, resized to ``size`` (numpy, not augmented)."""
        sample = self.source[i]
        if self.size is not None:
            sample = resize(sample, self.size, self.depth_resize)
        return sample

    def __getitem__(self, i: int) -> dict:
        if self.tensors is not None:
            item = {key: value[0] for key, value in self.batch([i]).items()}
            item["index"] = int(item["index"])
            return item
        sample = self.sample(i)
        if self.transform is not None:
            sample = self.transform(sample, self.rng(i))
        return {
            "image": torch.from_numpy(normalize_hwc(sample["rgb"])),
            "depth": torch.from_numpy(sample["depth"])[None],
            "valid": torch.from_numpy(sample["valid"])[None],
            "index": sample["index"],
        }

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """Every sample, resized, stacked: rgb uint8 (N, 3, H, W), depth float32 (N, 1, H, W),
        valid bool (N, 1, H, W), index int64 (N,). Not augmented."""
        n = len(self.source)
        h, w = self.size if self.size is not None else self.source.image_size
        needed = n * h * w * (3 + 4 + 1)
        if needed > self.max_preload_bytes:
            raise ConfigError(
                f"Preloading {n} samples of {h}x{w} needs {needed / 1e9:.1f} GB (limit "
                f"{self.max_preload_bytes / 1e9:.1f} GB). Pass a smaller size=, raise "
                "max_preload_bytes, or use preload=False."
            )
        rgb = torch.empty((n, 3, h, w), dtype=torch.uint8)
        depth = torch.empty((n, 1, h, w), dtype=torch.float32)
        valid = torch.empty((n, 1, h, w), dtype=torch.bool)
        index = torch.empty(n, dtype=torch.int64)
        for i in range(n):
            sample = self.sample(i)
            if sample["depth"].shape != (h, w):
                raise ConfigError(
                    f"Sample {sample['name']!r} is {sample['depth'].shape}, not {(h, w)}: images "
                    "differ in size, so pass size=(H, W) to preload them."
                )
            rgb[i] = torch.from_numpy(sample["rgb"]).permute(2, 0, 1)
            depth[i, 0] = torch.from_numpy(sample["depth"])
            valid[i, 0] = torch.from_numpy(sample["valid"])
            index[i] = sample["index"]
        return {"rgb": rgb, "depth": depth, "valid": valid, "index": index}

    def batch(self, positions: Sequence[int]) -> dict[str, torch.Tensor]:
        """A batch from the preloaded tensors, augmented on tensors when a transform is set:
        the same result ``DataLoader`` + ``__getitem__`` would give, without per-sample work."""
        if self.tensors is None:
            raise ConfigError("batch() needs preloaded tensors: create with preload=True.")
        n = len(self.tensors["index"])
        positions = [int(p) for p in positions]
        for p in positions:
            if not -n <= p < n:
                raise IndexError(f"sample {p} out of range for {n} samples")
        positions = [p % n for p in positions]
        part = {key: value[positions] for key, value in self.tensors.items()}
        if self.transform is not None:
            part = self.transform.apply_batch(part, [self.rng(p) for p in positions])
        return {
            "image": normalize(part["rgb"]),
            "depth": part["depth"],
            "valid": part["valid"],
            "index": part["index"],
        }
