"""Figures of the course, one module per topic; every figure function returns a matplotlib Figure.

``save_figure`` is the single place that decides where and how course figures are written, so the
notebooks, ``depthlib reproduce`` and the tests all produce the same files in ``figures/``.
"""

from __future__ import annotations

import os
from pathlib import Path

FIGURES_ENV = "DEPTHLIB_FIGURES"


def figures_dir() -> Path:
    """``$DEPTHLIB_FIGURES`` if set, else ``figures/`` at the repository root (beside ``depthlib/``)."""
    env = os.environ.get(FIGURES_ENV)
    return Path(env) if env else Path(__file__).resolve().parents[2] / "figures"


def save_figure(fig, name: str, directory: str | os.PathLike | None = None, dpi: int = 120) -> Path:
    """Write ``fig`` as ``<directory>/<name>.png`` atomically (temp file, then rename) and return the path."""
    out_dir = Path(directory) if directory is not None else figures_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = name[:-4] if name.endswith(".png") else name
    path = out_dir / f"{stem}.png"
    tmp = path.with_suffix(".png.tmp")
    fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    os.replace(tmp, path)
    return path
