"""``depthlib reproduce`` in the quick profile: every stage runs, every figure README.md and its
docs/ pages show is written by code, a second run reuses what is done."""

import re

import pytest

from depthlib.cli import main
from depthlib.profiles import REPO_ROOT, get_profile, rooms_path


def readme_figures() -> list[str]:
    pages = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
    text = "\n".join(page.read_text() for page in pages)
    return sorted(set(re.findall(r"figures/([\w.-]+\.png)", text)))


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory):
    root = tmp_path_factory.mktemp("reproduce")
    with pytest.MonkeyPatch.context() as mp:
        for name in ("DATA", "RUNS", "FIGURES"):
            mp.setenv(f"DEPTHLIB_{name}", str(root / name.lower()))
        mp.delenv("DEPTHLIB_DATASET", raising=False)
        assert main(["reproduce", "--profile", "quick"]) == 0
        yield root, mp


def test_every_figure_the_readme_shows_is_written_by_reproduce(reproduced):
    root, _ = reproduced
    names = readme_figures()
    assert len(names) >= 10, names  # the gallery in docs/figures.md
    missing = [n for n in names if not (root / "figures" / n).is_file()]
    assert not missing, f"README or docs/ show figures reproduce did not write: {missing}"


def test_results_file_has_the_experiment_and_baselines(reproduced):
    root, _ = reproduced
    text = (root / "figures" / "RESULTS.md").read_text()
    assert "| 100% | scratch | 1 |" in text and "| 10% | spark | 1 |" in text
    assert "mean-depth baseline" in text and "train mean depth map" in text
    assert "## Time per stage" in text


def test_second_run_skips_finished_stages(reproduced, capsys):
    root, _ = reproduced
    path = rooms_path(get_profile("quick").rooms)
    assert path.parent == root / "data"
    stamp = path.stat().st_mtime_ns
    capsys.readouterr()
    assert main(["reproduce", "--profile", "quick"]) == 0
    out = capsys.readouterr().out
    assert path.stat().st_mtime_ns == stamp
    assert "fine-tune" not in out  # every run reused
    assert out.count("unchanged, skipped") == len(list((REPO_ROOT / "notebooks").glob("0*.ipynb")))


def test_reproduce_unknown_profile_or_stage_is_a_user_error(capsys):
    assert main(["reproduce", "--profile", "gpu"]) == 2
    assert "Unknown profile 'gpu'" in capsys.readouterr().err
    assert main(["reproduce", "--profile", "quick", "--only", "everything"]) == 2
    assert "the stages are: rooms dataset" in capsys.readouterr().err
