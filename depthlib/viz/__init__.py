"""Figures of the course, one module per topic; every figure function returns a matplotlib Figure.

``save_figure`` is the single place that decides where and how course figures are written, so the
notebooks, ``depthlib reproduce`` and the tests all produce the same files in ``figures/``
(``$DEPTHLIB_FIGURES`` elsewhere). Nothing below viz draws; viz draws what the rest computed.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from depthlib.atomic import atomic_path
from depthlib.profiles import figures_dir

__all__ = ["bare", "hwc", "save_figure"]


def save_figure(fig, name: str, directory: str | os.PathLike | None = None, dpi: int = 120) -> Path:
    """Write ``fig`` as ``<directory>/<name>.png`` atomically and return the path."""
    out_dir = Path(directory) if directory is not None else figures_dir()
    stem = name[:-4] if name.endswith(".png") else name
    path = out_dir / f"{stem}.png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    return path


def bare(ax) -> None:
    """No ticks: for image panels."""
    ax.set_xticks([])
    ax.set_yticks([])


def hwc(image) -> np.ndarray:
    """A (3, H, W) tensor in [0, 1] as an (H, W, 3) array for ``imshow``."""
    return image.permute(1, 2, 0).clamp(0, 1).numpy()
