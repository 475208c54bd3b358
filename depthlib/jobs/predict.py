"""Depth maps for image files: a 16-bit PNG in millimetres and a colourised PNG per image.

The 16-bit PNG is the format of NYU's DenseDepth/BTS exports, so other tools read it; 0 would
mean "no depth" and never occurs, as the model's depth is at least min_depth. The colour PNG
(``turbo``, near = blue, far = red) is stretched per image so the layout of every scene is
visible whatever its range; ``color_range=(lo, hi)`` in metres makes colours comparable across
images. Folders are not searched recursively; greyscale, palette and alpha images become RGB;
one unreadable file never aborts the batch; and an unwritable output folder is refused before
any work.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from depthlib.atomic import atomic_path, ensure_writable_dir
from depthlib.data.folders import IMAGE_SUFFIXES, read_rgb
from depthlib.data.transforms import resize_rgb
from depthlib.depth.metrics import MeanDepthBaseline, MedianDepthBaseline, depth_in_batches
from depthlib.errors import ConfigError, DataError
from depthlib.jobs.evaluate import load_model
from depthlib.progress import progress_bar

__all__ = [
    "PredictReport",
    "Predictor",
    "colorize",
    "depth_to_png16",
    "find_images",
    "parse_input_size",
    "write_depth_maps",
]

_OUTPUT_ENDINGS = ("_depth.png", "_depth_color.png")  # never re-read our own outputs
_UNREADABLE = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


@dataclass
class PredictReport:
    """What ``write_depth_maps`` did: written (input, depth PNG, colour PNG), skipped (input, why)."""

    written: list[tuple[Path, Path, Path]] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    seconds: float = 0.0
    model_seconds: float = 0.0

    def summary(self) -> str:
        lines = [
            f"{len(self.written)} depth map(s) written in {self.seconds:.1f} s "
            f"(network {self.model_seconds:.1f} s)"
        ]
        if self.skipped:
            lines.append(f"{len(self.skipped)} file(s) skipped:")
            lines += [f"  {path}: {why}" for path, why in self.skipped]
        return "\n".join(lines)


def find_images(inputs: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """Image files named by ``inputs`` (files, or folders whose image files are taken, sorted).

    A missing path is a ``DataError``: it is a typo, not an unreadable image.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    found: list[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            found += sorted(
                p
                for p in path.iterdir()
                if p.is_file()
                and p.suffix.lower() in IMAGE_SUFFIXES
                and not p.name.endswith(_OUTPUT_ENDINGS)
                and not p.name.startswith(".")
            )
        elif path.is_file():
            found.append(path)
        else:
            raise DataError(f"No file or folder at {path}. Pass image files or folders of images.")
    return found


def parse_input_size(value: str | Sequence[int] | None) -> str | tuple[int, int] | None:
    """``None``/"train" (the checkpoint's training size), "native" (the image's own size, padded
    to the stride) or "HxW" / (H, W)."""
    if value is None or value in ("train", "native"):
        return value
    if isinstance(value, str):
        h, sep, w = value.lower().partition("x")
        if not sep or not (h.isdigit() and w.isdigit()):
            raise ConfigError(f"input size {value!r} is not 'train', 'native' or HxW like 96x128.")
        value = (int(h), int(w))
    h, w = (int(v) for v in value)
    if h < 1 or w < 1:
        raise ConfigError(f"input size must be positive, got {h}x{w}.")
    return h, w


def depth_to_png16(depth: np.ndarray) -> np.ndarray:
    """Metres → uint16 millimetres (rounded; NaN → 0 = no depth; clipped to 65.535 m)."""
    mm = np.nan_to_num(np.asarray(depth, np.float64) * 1000.0, nan=0.0, posinf=65535.0)
    return np.clip(np.rint(mm), 0, 65535).astype(np.uint16)


def colorize(
    depth: np.ndarray, color_range: tuple[float, float] | None = None, cmap: str = "turbo"
) -> np.ndarray:
    """uint8 RGB (H, W, 3): ``cmap`` over ``color_range`` (default: 2nd-98th percentile)."""
    import matplotlib

    d = np.asarray(depth, np.float64)
    lo, hi = color_range if color_range is not None else np.percentile(d, (2, 98))
    scaled = np.clip((d - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    rgba = matplotlib.colormaps[cmap](scaled)
    return (rgba[..., :3] * 255 + 0.5).astype(np.uint8)


class Predictor:
    """Depth maps at the images' own size from a model, a run folder or a fitted baseline.

    Load a run once and reuse it: ``Predictor(run_dir)``. ``input_size`` is what the network
    sees: "train" (default: the run's training size; a bare module sees the image size),
    "native" (the image's own size, padded to the stride) or (H, W). Calling it on equally sized
    uint8 RGB images (H, W, 3) returns float32 (N, H, W): resized to the input size, predicted in
    batches, resized back bilinearly. ``which``: the "latest" or "best" checkpoint of a run.
    """

    def __init__(self, model, input_size="train", batch_size: int = 16, which: str = "latest"):
        baselines = (MeanDepthBaseline, MedianDepthBaseline)
        self.baseline = model if isinstance(model, baselines) else None
        self.net, self.input_size, self.batch_size = None, None, int(batch_size)
        if self.baseline is None:
            if not isinstance(model, (str, os.PathLike, nn.Module)):
                raise ConfigError(
                    "Predictions come from a depth model (nn.Module), a run/checkpoint folder or "
                    f"a fitted MeanDepthBaseline/MedianDepthBaseline, got {type(model).__name__}."
                )
            self.net, info = load_model(model, which)
            size = parse_input_size(input_size)
            size = info["input_size"] if size in (None, "train") else size
            self.input_size = None if size in (None, "native") else tuple(int(v) for v in size)

    def __call__(self, rgbs: Sequence[np.ndarray]) -> np.ndarray:
        h, w = rgbs[0].shape[:2]
        if self.baseline is not None:
            return np.stack([self.baseline.predict((h, w)) for _ in rgbs]).astype(np.float32)
        size = self.input_size
        batch = np.stack([rgb if size is None else resize_rgb(rgb, size) for rgb in rgbs])
        images = torch.from_numpy(batch).permute(0, 3, 1, 2)
        depth = torch.cat([d for _, d in depth_in_batches(self.net, images, self.batch_size)])
        if depth.shape[-2:] != (h, w):
            depth = F.interpolate(depth, size=(h, w), mode="bilinear", align_corners=True)
        return depth[:, 0].numpy()


def _output_names(paths: list[Path]) -> list[str]:
    """``<stem>`` per input; a stem seen before gets its suffix appended (a.png, a.jpg)."""
    used: set[str] = set()
    names = []
    for path in paths:
        name = path.stem
        if name in used:
            name = f"{path.stem}_{path.suffix.lstrip('.').lower()}"
        k = 2
        while name in used:
            name, k = f"{path.stem}_{k}", k + 1
        used.add(name)
        names.append(name)
    return names


def _save_png(array: np.ndarray, path: Path) -> None:
    with atomic_path(path) as tmp:  # a killed run never leaves half a PNG under the real name
        Image.fromarray(array).save(tmp, format="PNG")


def write_depth_maps(
    inputs: str | os.PathLike | Iterable[str | os.PathLike],
    checkpoint,
    out_dir: str | os.PathLike,
    *,
    input_size: str | Sequence[int] | None = "train",
    which: str = "latest",
    color_range: tuple[float, float] | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> PredictReport:
    """Write ``<name>_depth.png`` (uint16 mm) and ``<name>_depth_color.png`` per input image.

    checkpoint: a run folder, a checkpoint folder or a model. input_size: "train" (default: the
    checkpoint's training size; for a bare model or a checkpoint without one, the image's size),
    "native", or (H, W). Unreadable files are skipped and listed in the report. Depth maps
    already in ``out_dir`` under the same names are refused unless ``overwrite``.
    """
    out = ensure_writable_dir(out_dir)  # fail before loading anything
    predictor = Predictor(checkpoint, input_size, batch_size=1, which=which)
    paths = find_images(inputs)
    names = _output_names(paths)
    taken = [out / f"{n}{end}" for n in names for end in _OUTPUT_ENDINGS]
    taken = [p for p in taken if p.exists()]
    if taken and not overwrite:
        raise ConfigError(
            f"{len(taken)} output file(s) already exist in {out} (first: {taken[0].name}). Pass "
            "--overwrite (overwrite=True) to replace them, or choose another --out folder."
        )
    report = PredictReport()
    t0 = time.perf_counter()
    for path, name in progress_bar(
        list(zip(paths, names, strict=True)), desc="predicting", unit="img", disable=not progress
    ):
        try:
            rgb = read_rgb(path)
        except _UNREADABLE as err:
            report.skipped.append((path, f"not a readable image ({type(err).__name__}: {err})"))
            continue
        if min(rgb.shape[:2]) < 1:
            report.skipped.append((path, f"empty image of size {rgb.shape[:2]}"))
            continue
        t1 = time.perf_counter()
        depth = predictor([rgb])[0]
        report.model_seconds += time.perf_counter() - t1
        depth_png, color_png = out / f"{name}_depth.png", out / f"{name}_depth_color.png"
        _save_png(depth_to_png16(depth), depth_png)
        _save_png(colorize(depth, color_range), color_png)
        report.written.append((path, depth_png, color_png))
    report.seconds = time.perf_counter() - t0
    return report
