"""Running the course notebooks from code: how ``reproduce`` makes every figure of the course.

The notebooks are the single place where each figure is made (they narrate and call depthlib),
so ``reproduce`` executes them rather than repeating their calls. Each executed copy goes to
``runs/notebooks-<profile>/`` (the committed notebooks stay as they are unless asked), and
records a fingerprint of its code cells, its inputs and the figures it wrote: a re-run skips
a notebook whose code, inputs and figures are unchanged.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

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
    digest = hashlib.sha256()
    for cell in notebook.cells:
        if cell.cell_type == "code":
            digest.update(cell.source.encode() + b"\0")
    return digest.hexdigest()[:16]


@contextlib.contextmanager
def _environment(changes: Mapping[str, str]) -> Iterator[None]:
    """Environment variables for the kernel (it inherits this process's environment)."""
    saved = {k: os.environ.get(k) for k in changes}
    os.environ.update(changes)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _figure_stamps(directory: Path) -> dict[str, int]:
    return (
        {p.name: p.stat().st_mtime_ns for p in directory.glob("*.png")}
        if directory.is_dir()
        else {}
    )


def execute_notebook(
    path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 3600,
    inputs: str = "",
) -> dict:
    """Execute ``path`` top to bottom in a fresh kernel (working directory: its folder) and
    write the executed copy to ``out``. Returns ``{"seconds", "figures", "skipped"}``.

    Skipped when ``out`` already holds a run of the same code with the same ``inputs`` (a
    string naming what the notebook reads, e.g. the profile and experiment folder) and every
    figure it wrote still exists. A failing cell raises :class:`DataError` naming the notebook
    and the cell; the partly executed copy is kept in ``out`` for reading.
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
    start = time.perf_counter()
    error = None
    with sockets, _environment(dict(env or {})):
        try:
            client.execute()
        except CellExecutionError as err:
            error = err
    seconds = time.perf_counter() - start
    after = _figure_stamps(figures)
    written = sorted(name for name, stamp in after.items() if before.get(name) != stamp)
    notebook.metadata[METADATA_KEY] = {
        **fingerprint,
        "figures": written,
        "seconds": round(seconds, 1),
        "complete": error is None,
    }
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
    """Execute the course notebooks in order under ``DEPTHLIB_PROFILE=profile_name``.

    Executed copies go to ``runs/notebooks-<profile>/``; with ``update`` they also replace the
    committed notebooks (what a maintainer does after a cpu-profile run)."""
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
