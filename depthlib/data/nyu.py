"""NYU Depth V2's ``labeled.mat`` and ``splits.mat``: a lazy reader and writers of the same layout.

``nyu_depth_v2_labeled.mat`` is MATLAB v7.3, i.e. HDF5 with MATLAB's reversed axes: ``images`` is
(N, 3, W, H) uint8 and ``depths`` / ``rawDepths`` are (N, W, H) float32 metres, so one sample is
``images[i].transpose(2, 1, 0)`` (H, W, 3) and ``depths[i].T`` (H, W). ``splits.mat`` is MATLAB 5
(scipy reads it, h5py cannot) with 1-based ``trainNdxs`` / ``testNdxs`` column vectors.

The writers produce exactly this layout so the procedural rooms set and small test fixtures go
through the very code path real NYU takes. The reader never loads the 2.8 GB file: it reads one
sample per ``__getitem__`` through an HDF5 handle opened lazily, once per process, so DataLoader
workers each get their own handle (HDF5 handles must not be shared across a fork).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import h5py
import numpy as np
import scipy.io

from depthlib.atomic import atomic_path, atomic_write
from depthlib.data.sample import DATA_SOURCES_HINT, make_sample
from depthlib.errors import DataError

__all__ = [
    "LABELED_FILENAME",
    "NYULabeled",
    "find_splits_file",
    "read_extras",
    "read_splits",
    "write_labeled",
    "write_splits",
]

LABELED_FILENAME = "nyu_depth_v2_labeled.mat"
EXTRAS_GROUP = "depthlib_extras"
_JSON_ATTRS = "_json_attrs"  # names of group attributes stored as JSON (dicts, lists, None)
_USERBLOCK = 512  # MATLAB v7.3 files are HDF5 with a 512-byte MATLAB header in front
_MAT5_MAGIC = b"MATLAB 5.0 MAT-file"


def write_labeled(
    path: str | os.PathLike,
    images: np.ndarray,
    depths: np.ndarray,
    raw_depths: np.ndarray | None = None,
    extras: dict[str, np.ndarray] | None = None,
    attrs: dict | None = None,
    compression: str | None = "gzip",
) -> Path:
    """Write an HDF5 file in the exact ``labeled.mat`` layout, atomically, and return its path.

    images (N, H, W, 3) uint8 and depths (N, H, W) float32 metres are stored MATLAB-transposed;
    ``raw_depths=None`` stores a copy of ``depths``. ``extras`` are per-image arrays (e.g. the
    rooms knobs) in the group ``depthlib_extras``, ``attrs`` go onto it (dicts and lists as JSON).
    One HDF5 chunk per image, so reading a sample decompresses only that sample.
    """
    images = np.asarray(images)
    depths = np.asarray(depths, dtype=np.float32)
    raw = depths if raw_depths is None else np.asarray(raw_depths, dtype=np.float32)
    if images.ndim != 4 or images.shape[3] != 3 or images.dtype != np.uint8:
        raise DataError(
            f"write_labeled: images must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}."
        )
    n, h, w, _ = images.shape
    for label, arr in (("depths", depths), ("raw_depths", raw)):
        if arr.shape != (n, h, w):
            raise DataError(
                f"write_labeled: {label} must be (N, H, W) = {(n, h, w)} like images, got {arr.shape}."
            )
    extras, attrs = {key: np.asarray(value) for key, value in (extras or {}).items()}, attrs or {}
    for key, value in extras.items():
        if value.ndim == 0 or len(value) != n:
            raise DataError(
                f"write_labeled: extra {key!r} must have one entry per image (length {n}), "
                f"got shape {value.shape}."
            )
        if value.dtype.kind == "U":  # h5py stores UTF-8 strings, not numpy unicode
            extras[key] = value.astype(h5py.string_dtype())

    path = Path(path)
    opts = {"compression": compression, "shuffle": True} if compression else {}
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", userblock_size=_USERBLOCK, libver="earliest") as f:
            f.create_dataset(
                "images", data=images.transpose(0, 3, 2, 1), chunks=(1, 3, w, h), **opts
            )
            f.create_dataset("depths", data=depths.transpose(0, 2, 1), chunks=(1, w, h), **opts)
            f.create_dataset("rawDepths", data=raw.transpose(0, 2, 1), chunks=(1, w, h), **opts)
            for name, cls in (("images", "uint8"), ("depths", "single"), ("rawDepths", "single")):
                f[name].attrs["MATLAB_class"] = np.bytes_(cls)
            if extras or attrs:
                group = f.create_group(EXTRAS_GROUP)
                for key, value in extras.items():
                    group.create_dataset(key, data=value)
                as_json = [
                    k for k, v in attrs.items() if v is None or isinstance(v, dict | list | tuple)
                ]
                for key, value in attrs.items():
                    group.attrs[key] = json.dumps(value) if key in as_json else value
                if as_json:
                    group.attrs[_JSON_ATTRS] = json.dumps(as_json)
        _write_matlab_header(tmp)
    return path


def write_splits(
    path: str | os.PathLike, train_indices: np.ndarray, test_indices: np.ndarray
) -> Path:
    """Write a MATLAB-5 ``splits.mat``. The arguments are 0-BASED Python indices; the file stores
    them 1-based as (n, 1) uint16 ``trainNdxs`` / ``testNdxs``, exactly like NYU's toolbox file."""
    columns = {}
    for key, values in (("trainNdxs", train_indices), ("testNdxs", test_indices)):
        values = np.asarray(values).reshape(-1)
        if values.size and (values.min() < 0 or values.max() >= np.iinfo(np.uint16).max):
            raise DataError(
                f"write_splits: {key} needs 0-based indices in [0, 65534], "
                f"got range [{values.min()}, {values.max()}]."
            )
        columns[key] = (values.astype(np.int64) + 1).astype(np.uint16).reshape(-1, 1)
    atomic_write(Path(path), lambda f: scipy.io.savemat(f, columns, format="5"))
    return Path(path)


def read_extras(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict]:
    """The per-image extras and the attributes ``write_labeled`` stored (both empty if none)."""
    path = _check_hdf5(Path(path))
    try:
        with h5py.File(path, "r") as f:
            group = f.get(EXTRAS_GROUP)
            if group is None:
                return {}, {}
            extras = {key: _from_h5(group[key][()]) for key in group}
            json_keys = set(json.loads(group.attrs.get(_JSON_ATTRS, "[]")))
            attrs = {k: _from_h5(v) for k, v in group.attrs.items() if k != _JSON_ATTRS}
    except (OSError, RuntimeError, KeyError) as err:  # h5py: truncated or damaged file
        raise _damaged(path, err) from err
    return extras, {k: json.loads(v) if k in json_keys else v for k, v in attrs.items()}


def _from_h5(value):
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray) and value.dtype.kind == "O":
        decoded = [v.decode() if isinstance(v, bytes) else v for v in value.ravel()]
        return np.array(decoded).reshape(value.shape)
    if isinstance(value, np.generic):
        return value.item()
    return value


def _write_matlab_header(path: Path) -> None:
    """Fill the userblock with MATLAB's v7.3 header, as MATLAB itself writes it; scipy.io.loadmat
    then recognises the file as v7.3 (HDF5) instead of failing on an unknown format. The date is
    fixed (the epoch), so that the same data gives the same bytes whenever it is written."""
    stamp = time.strftime("%a %b %d %H:%M:%S %Y", time.gmtime(0))
    text = f"MATLAB 7.3 MAT-file, Platform: depthlib, Created on: {stamp} HDF5 schema 1.00 ."
    header = text.encode().ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM"
    with open(path, "r+b") as f:
        f.write(header.ljust(_USERBLOCK, b"\x00"))


def _damaged(path: Path, err: Exception, what: str = "") -> DataError:
    return DataError(
        f"Cannot read {what}{path} ({type(err).__name__}: {err}): the HDF5 file is truncated or "
        "damaged, e.g. by an interrupted download or copy. Download or copy it again (its size "
        "should match the source's), or render the rooms set anew with `depthlib synth`."
    )


def _check_hdf5(path: Path) -> Path:
    if not path.exists():
        raise DataError(f"No dataset file at {path}. {DATA_SOURCES_HINT}")
    if path.is_dir():
        inside = path / LABELED_FILENAME
        hint = "" if inside.is_file() else f" There is none in it. {DATA_SOURCES_HINT}"
        raise DataError(f"{path} is a folder; pass the HDF5 file itself (e.g. {inside}).{hint}")
    if not h5py.is_hdf5(path):
        with open(path, "rb") as f:
            head = f.read(len(_MAT5_MAGIC))
        if head == _MAT5_MAGIC:
            raise DataError(
                f"{path} is a MATLAB 5 file, not the HDF5 (MATLAB v7.3) labeled file. If it is "
                f"splits.mat, pass it as splits_path and the labeled .mat as the dataset. "
                f"{DATA_SOURCES_HINT}"
            )
        raise DataError(
            f"{path} is not an HDF5 file (labeled.mat is MATLAB v7.3 = HDF5); it may be truncated "
            f"or of another kind. {DATA_SOURCES_HINT}"
        )
    return path


def splits_path_for(path: str | os.PathLike) -> Path:
    """Where the split file of a labeled file is written: ``<stem>_splits.mat`` beside it."""
    path = Path(path)
    return path.with_name(f"{path.stem}_splits.mat")


def find_splits_file(path: str | os.PathLike) -> Path | None:
    """The split file beside a labeled file: ``<stem>_splits.mat``, else ``splits.mat``."""
    for candidate in (splits_path_for(path), Path(path).with_name("splits.mat")):
        if candidate.is_file():
            return candidate
    return None


def read_splits(
    path: str | os.PathLike, num_images: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """0-based (train, test) int64 indices from a MATLAB-5 split file with 1-based
    ``trainNdxs`` / ``testNdxs``; with ``num_images`` every index must lie in 1..num_images."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"No split file at {path}. {DATA_SOURCES_HINT}")
    if h5py.is_hdf5(path):
        raise DataError(
            f"{path} is an HDF5 (MATLAB v7.3) file, not a MATLAB-5 split file: did you swap the "
            "labeled .mat and splits.mat? Write a split file with depthlib.data.write_splits."
        )
    try:
        content = scipy.io.loadmat(path)
    except Exception as err:  # scipy raises ValueError, TypeError, OSError ... on foreign files
        raise DataError(
            f"{path} is not a readable MATLAB-5 split file ({type(err).__name__}: {err}). "
            f"Use NYU's splits.mat or write one with depthlib.data.write_splits."
        ) from err
    missing = [key for key in ("trainNdxs", "testNdxs") if key not in content]
    if missing:
        found = sorted(k for k in content if not k.startswith("__"))
        raise DataError(
            f"Split file {path} lacks {' and '.join(missing)} (found: {found or 'nothing'}). "
            "NYU's splits.mat holds 1-based trainNdxs and testNdxs column vectors."
        )
    splits = []
    for key in ("trainNdxs", "testNdxs"):
        values = np.asarray(content[key]).reshape(-1)
        if values.dtype.kind not in "iuf" or not np.all(values == np.round(values)):
            raise DataError(
                f"Split file {path}: {key} must hold whole numbers, got {values.dtype}."
            )
        values = values.astype(np.int64)
        upper = num_images if num_images is not None else np.iinfo(np.int64).max
        bad = values[(values < 1) | (values > upper)]
        if bad.size:
            raise DataError(
                f"Split file {path}: {key} has {bad.size} indices outside 1..{num_images} "
                f"(e.g. {bad[:5].tolist()}). Indices are 1-based and must name images of the "
                "labeled file; is this split file for a different dataset?"
            )
        splits.append(values - 1)
    overlap = np.intersect1d(splits[0], splits[1])
    if overlap.size:
        raise DataError(
            f"Split file {path}: {overlap.size} images are in both trainNdxs and testNdxs "
            f"(0-based e.g. {overlap[:5].tolist()}); train and test must be disjoint."
        )
    return splits[0], splits[1]


class NYULabeled:
    """Lazy reader of a labeled.mat-layout HDF5 file, one sample dict per index.

    split: "train" / "test" (from ``splits_path``, else the split file beside it) or "all".
    depth: "filled" (``depths``) or "raw" (``rawDepths``, holes come out invalid). Sample ``i``
    is file image ``indices[i]`` (0-based) and carries that file index as ``"index"``.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        split: str = "train",
        splits_path: str | os.PathLike | None = None,
        depth: str = "filled",
    ):
        if split not in ("train", "test", "all"):
            raise DataError(f"split must be 'train', 'test' or 'all', got {split!r}.")
        if depth not in ("filled", "raw"):
            raise DataError(f"depth must be 'filled' or 'raw', got {depth!r}.")
        self.path = _check_hdf5(Path(path))
        self.split = split
        self.depth_kind = depth
        self._depth_key = "depths" if depth == "filled" else "rawDepths"
        self.num_images, self.image_size = self._inspect()
        if split == "all":
            self.splits_path = None
            self.indices = np.arange(self.num_images, dtype=np.int64)
        else:
            self.splits_path = Path(splits_path) if splits_path else find_splits_file(self.path)
            if self.splits_path is None:
                raise DataError(
                    f"No split file for {self.path}: looked for {self.path.stem}_splits.mat and "
                    "splits.mat beside it. Pass splits_path=..., or split='all'. "
                    + DATA_SOURCES_HINT
                )
            train, test = read_splits(self.splits_path, self.num_images)
            self.indices = train if split == "train" else test
        self._h5: h5py.File | None = None
        self._pid: int | None = None

    def _inspect(self) -> tuple[int, tuple[int, int]]:
        """(number of images, (H, W)), after checking the file has NYU's layout."""
        try:
            with h5py.File(self.path, "r") as f:
                missing = [k for k in ("images", self._depth_key) if k not in f]
                if missing:
                    raise DataError(
                        f"{self.path} has no {' or '.join(missing)} dataset (found: {sorted(f)}), "
                        f"so it is not in NYU's labeled.mat layout. {DATA_SOURCES_HINT}"
                    )
                images, depths = f["images"].shape, f[self._depth_key].shape
        except (OSError, RuntimeError, KeyError) as err:  # h5py: truncated or damaged file
            raise _damaged(self.path, err) from err
        if len(images) != 4 or images[1] != 3 or depths != images[:1] + images[2:]:
            raise DataError(
                f"{self.path}: images {images} and {self._depth_key} {depths} are not NYU's "
                "(N, 3, W, H) and (N, W, H) layout."
            )
        n, _, w, h = images
        return int(n), (int(h), int(w))

    def _file(self) -> h5py.File:
        if self._h5 is None or self._pid != os.getpid():
            self._h5 = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._h5

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        if not -len(self) <= i < len(self):
            raise IndexError(f"sample {i} out of range for {len(self)} samples")
        index = int(self.indices[i])
        try:
            f = self._file()
            rgb = f["images"][index].transpose(2, 1, 0)
            depth = f[self._depth_key][index].T
        except (OSError, RuntimeError, KeyError) as err:
            raise _damaged(self.path, err, f"image {index} of ") from err
        return make_sample(rgb, depth, index, f"{index:05d}")

    def with_depth(self, depth: str) -> NYULabeled:
        """This reader, or one of the same images and split with the other depth."""
        same = depth == self.depth_kind
        return self if same else NYULabeled(self.path, self.split, self.splits_path, depth)

    def close(self) -> None:
        """Close this process's handle (reopened on the next read)."""
        if self._h5 is not None and self._pid == os.getpid():
            self._h5.close()
        self._h5 = None

    def __getstate__(self) -> dict:  # a worker process opens its own handle
        return self.__dict__ | {"_h5": None, "_pid": None}
