"""Test-wide settings: offline model hubs, a non-interactive plot backend, few threads, quick profile."""

import errno
import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("DEPTHLIB_PROFILE", "quick")

import torch  # noqa: E402

torch.set_num_threads(1)  # tiny test models run faster on one thread


@pytest.fixture
def read_only_dir(tmp_path, monkeypatch):
    """An existing folder nobody may write into, for the user the tests run as.

    ``chmod 0o500`` is enough for a regular user, but root (as in CI containers) ignores
    permissions; there no file may be created in the folder through ``tempfile.mkstemp`` (the
    probe of ``depthlib.atomic.ensure_writable_dir``): it fails with EACCES as it would for a
    regular user, so the tests run, and mean the same, under every user.
    """
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.geteuid() == 0:
        real_mkstemp = tempfile.mkstemp

        def mkstemp(*args, dir=None, **kw):  # tempfile's own keyword names
            if dir is not None and Path(dir).resolve() == locked.resolve():
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(locked))
            return real_mkstemp(*args, dir=dir, **kw)

        monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    yield locked
    locked.chmod(0o700)  # let pytest clean it up


class _Boom:
    """A pickle that would create a file if it were ever executed."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.fixture
def boom():
    """``boom(marker)``: a booby-trapped pickle; ``marker`` exists afterwards only if it ran."""
    return _Boom
