"""Figures of the course, one module per topic; every figure function returns a matplotlib Figure.

``save_figure`` is the single place that decides where and how course figures are written
(``figures/``, or ``$DEPTHLIB_FIGURES``). Nothing below viz draws; viz draws what the rest computed.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from depthlib.atomic import atomic_path
from depthlib.profiles import figures_dir

__all__ = ["bare", "hwc", "patch_lines", "save_figure"]


def save_figure(fig, name: str, directory: str | os.PathLike | None = None) -> Path:
    """Write ``fig`` as ``<directory>/<name>.png`` atomically and return the path."""
    path = Path(directory or figures_dir()) / f"{name.removesuffix('.png')}.png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    return path


def bare(ax) -> None:
    """No ticks: for image panels."""
    ax.set_xticks([])
    ax.set_yticks([])


def hwc(image) -> np.ndarray:
    """A (3, H, W) tensor in [0, 1] as an (H, W, 3) array for ``imshow``."""
    return image.permute(1, 2, 0).clamp(0, 1).numpy()


def patch_lines(ax, shape: tuple[int, int], patch: float, **line) -> None:
    """Borders between the ``patch``-pixel cells of an (H, W) ``imshow`` image."""
    for y in np.arange(patch, shape[0], patch):
        ax.axhline(y - 0.5, **line)
    for x in np.arange(patch, shape[1], patch):
        ax.axvline(x - 0.5, **line)
