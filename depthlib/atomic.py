"""Crash-safe file writes: a reader sees the old file or the new one, never a part.

The recipe: write a temporary file in the same folder (same file system, so a rename is atomic),
flush and fsync it, ``os.replace`` it onto the target, then fsync the folder so the rename itself
survives a power cut. A ``kill -9`` at any instant leaves at most a hidden ``.*.tmp`` file.
Every file depthlib writes (datasets, weights, figures, logs, results) goes through here.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from depthlib.errors import ConfigError

__all__ = [
    "atomic_path",
    "atomic_write",
    "atomic_write_text",
    "ensure_writable_dir",
    "fsync_dir",
    "refuse_overwrite",
    "to_json",
    "write_synced",
]


def fsync_dir(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    with contextlib.suppress(OSError):
        os.fsync(fd)
    os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed onto ``path`` when the block ends
    without an error, removed otherwise. For writers that need a file name (h5py, PIL, matplotlib,
    safetensors)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    fsync_dir(path.parent)


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> Path:
    """Write ``path`` through ``write(file)`` so that readers see the old or the new file."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        write(f)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """:func:`atomic_write` for UTF-8 text."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def refuse_overwrite(path: str | Path, overwrite: bool, hint: str = "") -> Path:
    """Refuse to replace an existing ``path`` unless ``overwrite``: a typo in an output name must
    not erase a dataset or a result."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise ConfigError(
            f"{path} already exists. Pass --overwrite (overwrite=True) to replace it, or choose "
            f"another name.{' ' + hint if hint else ''}"
        )
    return path


def ensure_writable_dir(folder: str | Path) -> Path:
    """Create ``folder`` and prove a file can be written there, before any training time is spent."""
    folder = Path(folder).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ConfigError(
            f"Cannot write to the output folder {folder} ({err.strerror or err}). Checkpoints and "
            "logs go there, so training would be lost. Choose a folder you can write to (--out) "
            "or fix its permissions."
        ) from err
    return folder


def write_synced(path: Path, data: bytes) -> None:
    """Write and fsync ``path`` (inside a folder that is itself renamed into place later)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _json_default(obj: Any) -> Any:
    import dataclasses

    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if getattr(obj, "ndim", None) == 0 and hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    return repr(obj)


def to_json(obj: Any) -> str:
    """JSON text for configs and metrics (paths, tuples, numpy/torch scalars made plain)."""
    return json.dumps(obj, indent=2, default=_json_default)
