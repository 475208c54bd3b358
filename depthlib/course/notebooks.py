"""Running the course notebooks from code: how ``reproduce`` makes every figure of the course.

The notebooks are the one place where each figure is made, so ``reproduce`` executes them. Each
executed copy goes to ``runs/notebooks-<profile>/`` with a fingerprint of its code cells, inputs
and the figures it wrote: a re-run skips a notebook whose code, inputs and figures are unchanged.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from unittest import mock

from depthlib.atomic import atomic_write_text
from depthlib.errors import ConfigError, DataError
from depthlib.profiles import ENV_VAR, REPO_ROOT, figures_dir, runs_dir

__all__ = ["course_notebooks", "code_fingerprint", "execute_notebook", "run_notebooks"]

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
METADATA_KEY = "depthlib"


def _text(notebook) -> str:
    """The notebook as JSON text ending in a newline, as nbformat.write saves it."""
    import nbformat

    text = nbformat.writes(notebook)
    return text if text.endswith("\n") else text + "\n"


def course_notebooks(directory: str | os.PathLike = NOTEBOOKS_DIR) -> list[Path]:
    """The numbered notebooks of the course, in order (``00_...ipynb`` to ``05_...ipynb``)."""
    found = sorted(Path(directory).glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise DataError(f"No numbered notebooks (00_*.ipynb, ...) in {directory}.")
    return found


def _read(path: Path):
    import nbformat

    try:
        return nbformat.read(path, as_version=4)
    except Exception as err:  # nbformat raises several unrelated types for a damaged file
        raise DataError(f"{path} is not a readable notebook ({err}); restore it from git.") from err


def code_fingerprint(notebook) -> str:
    """A hash of the code cells' sources (not their outputs): executing a notebook in place
    does not change it, editing a cell does."""
    code = b"".join(c.source.encode() + b"\0" for c in notebook.cells if c.cell_type == "code")
    return hashlib.sha256(code).hexdigest()[:16]


def _figure_stamps(directory: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in directory.glob("*.png")}


def execute_notebook(
    path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 3600,
    inputs: str = "",
) -> dict:
    """Execute ``path`` in a fresh kernel (in its folder), write the executed copy to ``out``;
    returns ``{"seconds", "figures", "skipped"}``. Skipped when ``out`` holds a complete run of
    the same code and ``inputs`` (what the notebook reads, e.g. profile and study folder) whose
    figures all exist. A failing cell raises :class:`DataError`; the partial copy stays in ``out``.
    """
    try:
        from jupyter_client import KernelManager
        from nbclient import NotebookClient
        from nbclient.exceptions import CellExecutionError
    except ImportError:
        raise ConfigError(
            "Running the notebooks needs nbclient and ipykernel: pip install -e '.[notebooks]' "
            "(make install does it)."
        ) from None

    path, out = Path(path), Path(out)
    notebook = _read(path)
    fingerprint = {"code": code_fingerprint(notebook), "inputs": inputs}
    figures = figures_dir()
    if out.is_file():
        previous = _read(out).metadata.get(METADATA_KEY, {})
        written = previous.get("figures", [])
        same = all(previous.get(k) == v for k, v in fingerprint.items())
        if same and previous.get("complete") and all((figures / f).is_file() for f in written):
            return {"seconds": 0.0, "figures": written, "skipped": True}
    before = _figure_stamps(figures)
    sockets = tempfile.TemporaryDirectory(prefix="depthlib-kernel-")
    # IPC sockets in a private folder: local only, and no "running over TCP without encryption"
    km = KernelManager(kernel_name="python3", transport="ipc", ip=str(Path(sockets.name, "ipc")))
    client = NotebookClient(
        notebook,
        km=km,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    start, error = time.perf_counter(), None
    with sockets, mock.patch.dict(os.environ, dict(env or {})):  # the kernel inherits it
        try:
            client.execute()
        except CellExecutionError as err:
            error = err
    seconds = time.perf_counter() - start
    after = _figure_stamps(figures)
    written = sorted(name for name, stamp in after.items() if before.get(name) != stamp)
    done = {"figures": written, "seconds": round(seconds, 1), "complete": error is None}
    notebook.metadata[METADATA_KEY] = fingerprint | done
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, _text(notebook))
    if error is not None:
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip()  # the kernel's colour codes
        first_line = text.splitlines()[-1].rstrip(".") if text else repr(error)
        raise DataError(
            f"Notebook {path.name} failed: {first_line}. The partly executed copy is in {out}; "
            "fix the cause and run again (finished notebooks and runs are reused)."
        ) from error
    return {"seconds": seconds, "figures": written, "skipped": False}


def run_notebooks(
    profile_name: str,
    *,
    notebooks: list[Path] | None = None,
    inputs: str = "",
    env: Mapping[str, str] | None = None,
    update: bool = False,
    echo=print,
) -> dict[str, dict]:
    """Execute the course notebooks in order under ``DEPTHLIB_PROFILE=profile_name`` into
    ``runs/notebooks-<profile>/``; with ``update`` also into the committed notebooks."""
    if update and profile_name != "cpu":
        raise ConfigError(
            "Committed notebooks carry the cpu profile's outputs; run with --profile cpu to "
            "update them (or drop --update-notebooks)."
        )
    out_dir = runs_dir() / f"notebooks-{profile_name}"
    results = {}
    for path in notebooks or course_notebooks():
        out = out_dir / path.name
        result = execute_notebook(
            path, out, env={ENV_VAR: profile_name, **dict(env or {})}, inputs=inputs
        )
        results[path.name] = result
        state = "unchanged, skipped" if result["skipped"] else f"{result['seconds']:.0f} s"
        echo(f"  {path.name}: {state}; figures: {', '.join(result['figures']) or 'none'}")
        if update:
            _write_outputs_into(path, out)
    return results


def _write_outputs_into(source: Path, executed: Path) -> None:
    """Give ``source`` the outputs of ``executed`` (a run of the same code cells), keeping the
    source's own markdown: an executed copy may predate an edit of the prose."""
    notebook, run = _read(source), _read(executed)
    if code_fingerprint(notebook) != code_fingerprint(run):
        raise DataError(f"{executed} ran other code than {source}; run reproduce again.")
    ran = [c for c in run.cells if c.cell_type == "code"]
    for cell, done in zip((c for c in notebook.cells if c.cell_type == "code"), ran, strict=True):
        cell.outputs, cell.execution_count = done.outputs, done.execution_count
    notebook.metadata[METADATA_KEY] = run.metadata.get(METADATA_KEY, {})
    atomic_write_text(source, _text(notebook))
