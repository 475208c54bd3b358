"""Executing notebooks from code (what ``reproduce`` does): figures recorded, re-runs skipped,
a failing cell named with the partly executed copy kept."""

import nbformat
import pytest

from depthlib.course.notebooks import (
    code_fingerprint,
    course_notebooks,
    execute_notebook,
    run_notebooks,
)
from depthlib.errors import ConfigError, DataError


def write_notebook(path, *sources):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, path)
    return path


SAVE_FIGURE = (
    "import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n"
    "from depthlib.viz import save_figure\nfig = plt.figure()\nprint(save_figure(fig, 'tiny'))"
)


def test_executes_records_figures_and_skips_an_unchanged_rerun(tmp_path, monkeypatch):
    monkeypatch.setenv("DEPTHLIB_FIGURES", str(tmp_path / "figures"))
    source = write_notebook(tmp_path / "00_tiny.ipynb", "x = 6 * 7\nprint(x)", SAVE_FIGURE)
    out = tmp_path / "executed" / "00_tiny.ipynb"
    first = execute_notebook(source, out, inputs="quick:a")
    assert not first["skipped"] and first["figures"] == ["tiny.png"]
    executed = nbformat.read(out, as_version=4)
    assert executed.cells[0].outputs[0]["text"] == "42\n"
    assert executed.metadata["depthlib"]["complete"] is True
    assert nbformat.read(source, as_version=4).cells[0].outputs == []  # source untouched
    assert execute_notebook(source, out, inputs="quick:a")["skipped"]
    assert not execute_notebook(source, out, inputs="quick:b")["skipped"]  # other inputs
    (tmp_path / "figures" / "tiny.png").unlink()
    assert not execute_notebook(source, out, inputs="quick:b")["skipped"]  # a figure is gone


def test_fingerprint_ignores_outputs_but_not_code(tmp_path):
    path = write_notebook(tmp_path / "a.ipynb", "print(1)")
    nb = nbformat.read(path, as_version=4)
    before = code_fingerprint(nb)
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", text="1\n")]
    assert code_fingerprint(nb) == before
    nb.cells[0].source = "print(2)"
    assert code_fingerprint(nb) != before


def test_a_failing_cell_names_the_notebook_and_keeps_the_partial_copy(tmp_path, monkeypatch):
    monkeypatch.setenv("DEPTHLIB_FIGURES", str(tmp_path / "figures"))
    source = write_notebook(tmp_path / "03_broken.ipynb", "print('ran')", "1 / 0", "print('never')")
    out = tmp_path / "executed" / "03_broken.ipynb"
    with pytest.raises(DataError, match=r"03_broken.ipynb failed: .*ZeroDivisionError") as err:
        execute_notebook(source, out)
    assert str(out) in str(err.value)
    partial = nbformat.read(out, as_version=4)
    assert partial.cells[0].outputs[0]["text"] == "ran\n"
    assert partial.metadata["depthlib"]["complete"] is False
    with pytest.raises(DataError):  # an incomplete copy is never taken as done
        execute_notebook(source, out)


def test_damaged_or_missing_notebooks_are_clear_errors(tmp_path):
    bad = tmp_path / "01_bad.ipynb"
    bad.write_text("{ not json")
    with pytest.raises(DataError, match="not a readable notebook"):
        execute_notebook(bad, tmp_path / "out.ipynb")
    with pytest.raises(DataError, match="No numbered notebooks"):
        course_notebooks(tmp_path / "empty")
    assert [p.name[:2] for p in course_notebooks()] == ["00", "01", "02", "03", "04", "05"]


def test_update_fills_outputs_in_and_keeps_prose_edited_after_the_run(tmp_path, monkeypatch):
    monkeypatch.setenv("DEPTHLIB_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("DEPTHLIB_FIGURES", str(tmp_path / "figures"))
    path = write_notebook(tmp_path / "00_tiny.ipynb", "print(7)")
    nb = nbformat.read(path, as_version=4)
    nb.cells.insert(0, nbformat.v4.new_markdown_cell("Runtime: TODO"))
    nbformat.write(nb, path)
    run_notebooks("cpu", notebooks=[path], update=True, echo=lambda _: None)
    nb = nbformat.read(path, as_version=4)
    assert nb.cells[1].outputs[0]["text"] == "7\n"
    nb.cells[0].source = "Runtime: 5 s"  # prose edited after the run
    nbformat.write(nb, path)
    said = []
    run_notebooks("cpu", notebooks=[path], update=True, echo=said.append)
    assert "skipped" in said[0]
    nb = nbformat.read(path, as_version=4)
    assert nb.cells[0].source == "Runtime: 5 s" and nb.cells[1].outputs[0]["text"] == "7\n"
    with pytest.raises(ConfigError, match="--profile cpu"):
        run_notebooks("quick", notebooks=[path], update=True)
