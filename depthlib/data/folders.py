"""NYU Depth V2 as folder exports of PNG/JPG pairs: DenseDepth's CSV and BTS/AdaBins' list file.

Both store depth as 16-bit PNG in millimetres. DenseDepth's test export is hole-filled; BTS's
``sync_depth_*.png`` keep raw holes as 0, which come out invalid. The numbers in the file names
are 0-based labeled indices. Both readers check at construction that every listed file exists (a
missing file found halfway through an epoch wastes the epoch) and return the same sample dict as
``NYULabeled``; ``"index"`` is the row of the pair in the list file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from depthlib.data.sample import DATA_SOURCES_HINT, make_sample
from depthlib.errors import DataError

__all__ = ["IMAGE_SUFFIXES", "BTSFolder", "DenseDepthFolder", "read_depth_png", "read_rgb"]

# What the course reads as an image file (pretraining folders, predict inputs).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
NYU_FOCAL = 518.8579  # fx of NYU's RGB camera at 640x480, the focal BTS lists carry
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_PNG_COLOUR = {0: "greyscale", 2: "RGB", 3: "palette", 4: "greyscale+alpha", 6: "RGBA"}


def read_rgb(path: Path) -> np.ndarray:
    """A colour image as uint8 (H, W, 3); greyscale (8 or 16 bit), palette and alpha images are
    converted (alpha is dropped, 16-bit grey keeps its high byte).

    A file that is not a readable image raises :class:`DataError` (a ``ValueError``) naming it,
    not PIL's own exception, so callers that skip bad files and the CLI both get a clear message.
    """
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


def read_depth_png(path: Path) -> np.ndarray:
    """A 16-bit greyscale millimetre PNG as float32 metres (0 stays 0, i.e. a hole).

    Other bit depths are refused rather than guessed: an 8-bit depth PNG holds only 256 levels at
    an export-specific scale, and reading it as millimetres would give depths of at most 0.255 m.
    """
    with open(path, "rb") as f:
        head = f.read(26)
    if head[:8] != _PNG_MAGIC:
        raise DataError(
            f"Depth map {path} is not a PNG file; expected a 16-bit greyscale PNG in millimetres."
        )
    bits, colour = head[24], head[25]
    if bits != 16 or colour != 0:
        kind = _PNG_COLOUR.get(colour, f"colour type {colour}")
        raise DataError(
            f"Depth map {path} is a {bits}-bit {kind} PNG; expected a 16-bit greyscale PNG of "
            "millimetres (as DenseDepth's nyu2_test and BTS's sync_depth files are). Re-export "
            "the depth as uint16 millimetres, or use the labeled .mat instead."
        )
    with Image.open(path) as img:
        return np.asarray(img).astype(np.float32) / 1000.0


class _PairList:
    """Shared reading of (rgb path, depth path) rows; subclasses parse their list format."""

    def __init__(self, list_path: Path, rgb_paths: list[Path], depth_paths: list[Path], names):
        if not rgb_paths:
            raise DataError(f"{list_path} lists no image pairs. {DATA_SOURCES_HINT}")
        self.list_path = list_path
        self.rgb_paths = rgb_paths
        self.depth_paths = depth_paths
        self.names = list(names)
        self._image_size: tuple[int, int] | None = None
        read_depth_png(depth_paths[0])  # refuse an 8-bit export now, not after the first epoch

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
        depth = read_depth_png(self.depth_paths[i])
        return make_sample(rgb, depth, i, self.names[i])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.list_path)!r}: {len(self)} pairs)"


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
    """DenseDepth's export: a CSV of ``rgb.png,depth.png`` lines (e.g. nyu2_test.csv).

    Paths are relative to the CSV's folder or to its parent (DenseDepth's CSVs name files as
    ``data/nyu2_test/00000_colors.png``); each path is looked up in both, absolute paths as given.
    """

    def __init__(self, csv_path: str | os.PathLike):
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
        super().__init__(csv_path, rgb_paths, depth_paths, names)


class BTSFolder(_PairList):
    """BTS/AdaBins' export: a list file of ``rgb.jpg depth.png focal`` lines.

    Paths are relative to ``data_root`` (default: the list file's folder); a leading ``/`` is
    ignored, as BTS's own loader does. ``focals`` holds each row's focal length (NYU's fx when a
    row has none).
    """

    def __init__(self, list_path: str | os.PathLike, data_root: str | os.PathLike | None = None):
        list_path = _check_list_file(Path(list_path), "BTS list file")
        root = Path(data_root) if data_root is not None else list_path.parent
        if not root.is_dir():
            raise DataError(f"data_root {root} is not a folder; pass the folder the list is for.")
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
            rgb, depth = (_resolve(field.lstrip("/"), [root], missing) for field in fields[:2])
            rgb_paths.append(rgb)
            depth_paths.append(depth)
            names.append(str(Path(fields[0].lstrip("/")).with_suffix("")))
        _report_missing(list_path, missing, [root])
        self.data_root = root
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
