"""NYU Depth V2 as folder exports of image pairs: DenseDepth's CSVs and BTS/AdaBins' list files.

The sets papers train on: BTS's "sync" export (~24k pairs, ``sync_depth_*.png`` in uint16
millimetres, 0 = hole) and DenseDepth's ``nyu_data.zip`` (``nyu2_train.csv``: 50,688 pairs with
**8-bit depth, value / 255 x 10 m**; ``nyu2_test.csv``: 654 pairs in uint16 millimetres). The
depth scale comes from the export's layout or an explicit ``depth_scale``, never from a file's
values. Readers check at construction that every listed file exists (not halfway through an
epoch) and return ``NYULabeled``'s sample dict; ``"index"`` is the row in the list.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from depthlib.data.sample import DATA_SOURCES_HINT, make_sample
from depthlib.errors import DataError

__all__ = [
    "DEPTH_SCALES",
    "IMAGE_SUFFIXES",
    "BTSFolder",
    "DenseDepthFolder",
    "find_test_list",
    "read_depth_png",
    "read_rgb",
]

# What the course reads as an image file (pretraining folders, predict inputs).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
NYU_FOCAL = 518.8579  # fx of NYU's RGB camera at 640x480, the focal BTS lists carry
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_PNG_COLOUR = {0: "greyscale", 2: "RGB", 3: "palette", 4: "greyscale+alpha", 6: "RGBA"}
# depth scale -> (PNG bit depth it requires, metres per stored unit)
DEPTH_SCALES = {"mm": (16, 1e-3), "densedepth-8bit": (8, 10.0 / 255.0)}


def read_rgb(path: Path) -> np.ndarray:
    """A colour image as uint8 (H, W, 3); grey (8 or 16 bit), palette and alpha images are
    converted (alpha dropped, 16-bit grey keeps its high byte). An unreadable file raises
    :class:`DataError` naming it, so callers that skip bad files and the CLI get a clear message."""
    try:
        with Image.open(path) as img:
            if img.mode.startswith("I;16"):  # PIL's convert would clip 16-bit grey at 255
                grey = (np.asarray(img).astype(np.uint16) >> 8).astype(np.uint8)
                return np.repeat(grey[..., None], 3, axis=2)
            return np.array(img.convert("RGB"))
    except FileNotFoundError:
        raise DataError(f"No image file at {path}. Check the path or the list file.") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(
            f"{path} is not a readable image ({type(err).__name__}: {err}). Replace it with a "
            "PNG or JPEG file, or remove it from the list."
        ) from err


def read_depth_png(path: Path, scale: str = "mm") -> np.ndarray:
    """A greyscale depth PNG as float32 metres (0 = hole) at ``scale`` (see :data:`DEPTH_SCALES`).
    A PNG of another bit depth is refused, not reinterpreted: an 8-bit map read as millimetres
    would end at 0.255 m."""
    if scale not in DEPTH_SCALES:
        raise DataError(f"depth_scale must be one of {', '.join(DEPTH_SCALES)}, got {scale!r}.")
    with open(path, "rb") as f:
        head = f.read(26)
    bits_wanted, metres = DEPTH_SCALES[scale]
    if head[:8] != _PNG_MAGIC:
        raise DataError(
            f"Depth map {path} is not a PNG file; expected a {bits_wanted}-bit greyscale PNG."
        )
    bits, colour = head[24], head[25]
    if bits != bits_wanted or colour != 0:
        kind = _PNG_COLOUR.get(colour, f"colour type {colour}")
        raise DataError(
            f"Depth map {path} is a {bits}-bit {kind} PNG, but this list's depth scale {scale!r} "
            f"needs {bits_wanted}-bit greyscale (16-bit millimetres: BTS's sync_depth and "
            "DenseDepth's nyu2_test files; 8-bit value/255 x 10 m: DenseDepth's nyu2_train "
            "files). Pass the right depth_scale, or re-export the depth."
        )
    with Image.open(path) as img:
        return np.asarray(img).astype(np.float32) * np.float32(metres)


class _PairList:
    """Shared reading of (rgb path, depth path) rows; subclasses parse their list format."""

    def __init__(self, list_path: Path, rgb_paths, depth_paths, names, depth_scale: str = "mm"):
        if not rgb_paths:
            raise DataError(f"{list_path} lists no image pairs. {DATA_SOURCES_HINT}")
        self.list_path, self.rgb_paths, self.depth_paths = list_path, rgb_paths, depth_paths
        self.names, self.depth_scale = list(names), depth_scale
        self._image_size: tuple[int, int] | None = None
        read_depth_png(depth_paths[0], depth_scale)  # a wrong scale fails now, not in epoch 1

    @property
    def indices(self) -> np.ndarray:
        return np.arange(len(self.rgb_paths), dtype=np.int64)

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the first colour image (read from its header only)."""
        if self._image_size is None:
            with Image.open(self.rgb_paths[0]) as img:
                self._image_size = (img.height, img.width)
        return self._image_size

    def __len__(self) -> int:
        return len(self.rgb_paths)

    def __getitem__(self, i: int) -> dict:
        if not -len(self) <= i < len(self):
            raise IndexError(f"sample {i} out of range for {len(self)} samples")
        i = i % len(self)
        rgb = read_rgb(self.rgb_paths[i])
        depth = read_depth_png(self.depth_paths[i], self.depth_scale)
        return make_sample(rgb, depth, i, self.names[i])


def _check_list_file(path: Path, kind: str) -> Path:
    if not path.is_file():
        raise DataError(f"No {kind} at {path}. {DATA_SOURCES_HINT}")
    return path


def _report_missing(list_path: Path, missing: list[str], searched: list[Path]) -> None:
    if missing:
        shown = ", ".join(missing[:5])
        where = " or ".join(str(d) for d in searched)
        raise DataError(
            f"{len(missing)} files listed in {list_path} do not exist (first: {shown}); paths "
            f"were looked up relative to {where}. Unpack the whole export, or fix the list file."
        )


class DenseDepthFolder(_PairList):
    """DenseDepth's export: a CSV of ``rgb,depth`` lines (``nyu2_train.csv``, ``nyu2_test.csv``).

    Relative paths are looked up in the CSV's folder and its parent (DenseDepth names files as
    ``data/nyu2_test/00000_colors.png``). ``depth_scale``: None = by the layout (the train CSV,
    rows in ``nyu2_train/``, holds 8-bit depth; else millimetres), or one of :data:`DEPTH_SCALES`.
    """

    def __init__(self, csv_path: str | os.PathLike, depth_scale: str | None = None):
        csv_path = _check_list_file(Path(csv_path), "DenseDepth CSV")
        bases = [csv_path.parent, csv_path.parent.parent]
        rgb_paths, depth_paths, names, missing = [], [], [], []
        for number, line in enumerate(csv_path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            fields = [part.strip() for part in line.split(",")]
            if len(fields) != 2 or not all(fields):
                raise DataError(
                    f"{csv_path}, line {number}: expected 'colors.png,depth.png', got {line!r}."
                )
            rgb, depth = (_resolve(field, bases, missing) for field in fields)
            rgb_paths.append(rgb)
            depth_paths.append(depth)
            names.append(str(Path(fields[0]).with_suffix("")))
        _report_missing(csv_path, missing, bases)
        if depth_scale is None:
            train = csv_path.name == "nyu2_train.csv" or "nyu2_train/" in str(depth_paths[:1])
            depth_scale = "densedepth-8bit" if train else "mm"
        super().__init__(csv_path, rgb_paths, depth_paths, names, depth_scale)


class BTSFolder(_PairList):
    """BTS/AdaBins' export: a list file of ``rgb.jpg depth.png focal`` lines (depth in mm).

    Paths are relative to ``data_root``, by default the list's folder and BTS's ``sync/`` and
    ``official_splits/test/`` in it; a leading ``/`` is ignored, as BTS's loader does. ``focals``
    holds each row's focal length (NYU's fx when a row has none).
    """

    def __init__(self, list_path: str | os.PathLike, data_root: str | os.PathLike | None = None):
        list_path = _check_list_file(Path(list_path), "BTS list file")
        here = list_path.parent
        roots = [Path(data_root)] if data_root is not None else [
            here, here / "sync", here / "official_splits" / "test"
        ]  # fmt: skip
        if data_root is not None and not roots[0].is_dir():
            raise DataError(
                f"data_root {roots[0]} is not a folder; pass the folder the list is for."
            )
        rgb_paths, depth_paths, names, focals, missing = [], [], [], [], []
        for number, line in enumerate(list_path.read_text().splitlines(), start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) not in (2, 3) or fields[1] == "None":
                raise DataError(
                    f"{list_path}, line {number}: expected 'rgb depth focal' with a depth file, "
                    f"got {line!r}."
                )
            try:
                focals.append(float(fields[2]) if len(fields) == 3 else NYU_FOCAL)
            except ValueError:
                raise DataError(
                    f"{list_path}, line {number}: focal {fields[2]!r} is not a number."
                ) from None
            rgb, depth = (_resolve(field.lstrip("/"), roots, missing) for field in fields[:2])
            rgb_paths.append(rgb)
            depth_paths.append(depth)
            names.append(str(Path(fields[0].lstrip("/")).with_suffix("")))
        _report_missing(list_path, missing, roots)
        self.data_root = roots[0]
        self.focals = np.asarray(focals, dtype=np.float32)
        super().__init__(list_path, rgb_paths, depth_paths, names)


def _resolve(field: str, bases: list[Path], missing: list[str]) -> Path:
    """The first existing ``base / field``; records ``field`` as missing if none exists."""
    candidates = [Path(field)] if Path(field).is_absolute() else [b / field for b in bases]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    missing.append(field)
    return candidates[0]


def find_test_list(train_list: str | os.PathLike) -> Path | None:
    """The test list a training export ships beside its train list (``nyu2_train.csv`` ->
    ``nyu2_test.csv``, ``nyudepthv2_train_files_with_gt.txt`` -> ``..._test_...``), or None."""
    path = Path(train_list)
    if "train" not in path.name:
        return None
    candidate = path.with_name(path.name.replace("train", "test"))
    return candidate if candidate.is_file() else None
