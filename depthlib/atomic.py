"""Crash-safe file writes: a reader sees the old file or the new one, never a part.

The recipe: write a temporary file in the same folder (same file system, so a rename is atomic),
flush and fsync it, ``os.replace`` it onto the target, then fsync the folder so the rename itself
survives a power cut. A ``kill -9`` at any instant leaves at most a hidden ``.*.tmp`` file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from depthlib.errors import ConfigError

__all__ = ["atomic_write", "atomic_write_text", "ensure_writable_dir", "fsync_dir", "write_synced"]


def fsync_dir(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> Path:
    """Write ``path`` through ``write(file)`` so that readers see the old or the new file, never a part.

    The bytes go to a temporary file in the same folder (same file system, so the rename is
    atomic), which is flushed and fsync'ed, then ``os.replace``'d onto ``path``; the folder is
    fsync'ed so the rename survives a power cut. On any error the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """:func:`atomic_write` for UTF-8 text."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


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
