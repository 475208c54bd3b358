"""What every committed notebook must hold for a reader: the course's sections, exercises a
learner can check, no text pointing outside the repository and no machine's absolute paths in
the committed outputs (they would say where one machine keeps its files, and nothing else)."""

import json
import re

import nbformat
import pytest

from depthlib.profiles import REPO_ROOT

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("0*.ipynb"))
TEXT_MIME = ("text/plain", "text/markdown", "text/html")
# A slash that starts a path of at least one folder: /work/..., /tmp/x/, /home/u/...; not "img/s"
# (preceded by a word character) and not "$DEPTHLIB_RUNS/..." (a variable, not a machine path).
ABSOLUTE_PATH = re.compile(r"(?<![\w.~$}/])/(?:[A-Za-z0-9_.-]+/)+[A-Za-z0-9_.-]*")
OUTSIDE = re.compile(r"design notes|DESIGN\.md|\.\./shared|\bissue #?\d+|<!--\s*LEAD|\bLEAD:", re.I)


def _read(path):
    return nbformat.read(path, as_version=4)


def _output_texts(nb):
    for index, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                yield index, out.get("text", "")
            for mime in TEXT_MIME:
                value = out.get("data", {}).get(mime)
                if value:
                    yield index, value if isinstance(value, str) else "".join(value)


def test_there_are_six_notebooks():
    assert [p.name[:2] for p in NOTEBOOKS] == ["00", "01", "02", "03", "04", "05"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_opens_with_what_you_will_learn_and_ends_with_what_to_remember(path):
    nb = _read(path)
    markdown = [c.source for c in nb.cells if c.cell_type == "markdown"]
    assert markdown[0].startswith("# ") and "**What you will learn**" in markdown[0]
    remember = [s for s in markdown if s.startswith("## What to remember")]
    assert len(remember) == 1, "one '## What to remember' section"
    points = [line for line in remember[0].splitlines() if line.startswith("- ")]
    assert 3 <= len(points) <= 5, f"3-5 points to remember, found {len(points)}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_exercise_gives_a_hint_a_cpu_time_and_a_check(path):
    nb = _read(path)
    sections = [c.source for c in nb.cells if c.source.startswith("## Exercises")]
    assert len(sections) == 1
    items = re.split(r"\n(?=\d+\. )", sections[0].split("\n", 1)[1].strip())
    assert len(items) >= 3
    for item in items:
        for part in ("*Hint:*", "*CPU time:*", "*Check:*"):
            assert part in item, f"exercise {item[:40]!r}... lacks {part}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_outputs_show_no_absolute_path(path):
    found = [
        (index, match.group())
        for index, text in _output_texts(_read(path))
        for match in ABSOLUTE_PATH.finditer(text)
    ]
    assert not found, f"absolute paths in outputs (cell, path): {found[:5]}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_text_points_nowhere_outside_the_repository(path):
    found = [
        (index, match.group())
        for index, cell in enumerate(_read(path).cells)
        for match in OUTSIDE.finditer(cell.source)
    ]
    assert not found, f"text pointing outside the repository or unfinished (cell, text): {found}"


def test_the_path_pattern_catches_machine_paths_and_spares_units_and_variables():
    caught = ["see /work/main/runs/x", "'/tmp/pytest-1/run'", "(/home/me/data/)"]
    spared = [
        "0.22 s/step, 71 img/s",
        "$DEPTHLIB_RUNS/study-cpu/x",
        "runs/study-cpu/pretrain",
        "1/4",
    ]
    assert all(ABSOLUTE_PATH.search(text) for text in caught)
    assert not any(ABSOLUTE_PATH.search(text) for text in spared)


# A checked line that claims an equality ("by hand = depthlib: ...", "... match: ...") and prints
# False: nbval would pin a wrong answer. Plain facts that happen to be False ("splits.mat is HDF5:
# False", "depth changes False") are not equality checks.
FALSE_EQUALITY = re.compile(
    r"^\s*False\s*$|(\S\s==?\s\S|\b(equal|equals|match|matches|agree|agrees|identical|same|close"
    r"|allclose)\b)[^\n]*\bFalse\b",
    re.I,
)


def test_the_false_equality_rule_reads_lines_as_meant():
    assert FALSE_EQUALITY.search("per-image metrics, by hand = depthlib: False")
    assert FALSE_EQUALITY.search("sparse and reference outputs identical: False")
    assert not FALSE_EQUALITY.search("per-image metrics, by hand = depthlib: True")
    assert FALSE_EQUALITY.search("generator(0), step 0 == seed 0: False")
    assert FALSE_EQUALITY.search("False")  # a bare torch.equal / allclose printed
    assert FALSE_EQUALITY.search("gradients close to the reference: False")
    assert not FALSE_EQUALITY.search("generator(0), step 0 == seed 0: True")
    assert not FALSE_EQUALITY.search("splits.mat is HDF5: False")
    assert not FALSE_EQUALITY.search(
        "light values [0.15, 0.4]: RGB changes True, depth changes False"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_a_checked_equality_is_true_not_pinned_false(path):
    nb = _read(path)
    checked = {i for i, c in enumerate(nb.cells) if "# NBVAL_CHECK_OUTPUT" in c.source}
    wrong = [
        f"cell {index}: {line.strip()}"
        for index, text in _output_texts(nb)
        if index in checked
        for line in text.splitlines()
        if FALSE_EQUALITY.search(line)
    ]
    assert not wrong, f"{path.name} pins a false equality: {wrong}"


def test_every_chapter_has_a_solutions_notebook_that_opens_with_the_install_cell():
    assert NOTEBOOKS
    for chapter in NOTEBOOKS:
        solutions = chapter.parent / "solutions" / f"{chapter.name[:2]}_solutions.ipynb"
        assert solutions.is_file(), f"{chapter.name} has no {solutions.name}"
        cells = json.loads(solutions.read_text())["cells"]
        code = [c for c in cells if c["cell_type"] == "code"]
        assert code[0]["id"] == "install" and "assert " in "".join(
            "".join(c["source"]) for c in code
        ), f"{solutions.name}: install cell first, and its checks as asserts"
