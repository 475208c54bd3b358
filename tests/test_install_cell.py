"""The notebooks' first code cell installs depthlib where it is missing (a hosted notebook service):
run from the built wheel in a fresh venv that has the dependencies but not depthlib."""

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from depthlib.profiles import REPO_ROOT

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))


def install_cell(path: Path) -> str:
    cells = json.loads(path.read_text())["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    assert code and code[0]["id"] == "install", f"{path.name}: the first code cell must install"
    return "".join(code[0]["source"])


def test_every_notebook_opens_with_the_same_install_cell():
    cells = {install_cell(p) for p in NOTEBOOKS}
    assert len(NOTEBOOKS) >= 6 and len(cells) == 1


def _site_packages(python: Path) -> Path:
    out = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return Path(out.stdout.strip())


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory):
    """A venv whose only extra packages are this one's dependencies, depthlib left out."""
    root = tmp_path_factory.mktemp("fresh")
    deps = root / "deps"
    deps.mkdir()
    here = Path(__import__("torch").__file__).parents[1]  # this environment's site-packages
    for entry in here.iterdir():
        if "depthlib" not in entry.name.lower() and entry.suffix != ".pth" and entry.name != "pip":
            (deps / entry.name).symlink_to(entry)
    venv.EnvBuilder(with_pip=True).create(root / "venv")
    python = root / "venv" / "bin" / "python"
    # the venv's own old setuptools would shadow the one torch requires
    subprocess.run([python, "-m", "pip", "uninstall", "-y", "-q", "setuptools"], check=True)
    (_site_packages(python) / "course-deps.pth").write_text(f"{deps}\n")
    source, wheels = root / "source", root / "wheels"  # built from a copy: no build/ in the repo
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO_ROOT / name, source / name)
    shutil.copytree(REPO_ROOT / "depthlib", source / "depthlib",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
         "-w", wheels, source],
        check=True, capture_output=True,
    )  # fmt: skip
    (wheel,) = wheels.glob("depthlib-*.whl")
    return python, wheel


def _run_cell(python: Path, env: dict) -> subprocess.CompletedProcess:
    code = install_cell(NOTEBOOKS[0])
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DEPTHLIB_SOURCE")}
    return subprocess.run(
        [python, "-c", code], env=clean | env, capture_output=True, text=True, cwd=python.parents[2]
    )


def test_the_install_cell_installs_the_wheel_in_a_fresh_venv(fresh_venv):
    python, wheel = fresh_venv
    missing = _run_cell(python, {})
    assert missing.returncode != 0 and "DEPTHLIB_SOURCE" in missing.stderr
    done = _run_cell(python, {"DEPTHLIB_SOURCE": str(wheel), "PIP_NO_INDEX": "1"})
    assert done.returncode == 0, done.stderr
    where = subprocess.run(
        [python, "-c", "import depthlib.spark.model as m; print(m.__file__)"],
        check=True, capture_output=True, text=True, cwd=python.parents[2],
    ).stdout  # fmt: skip
    assert str(_site_packages(python)) in where  # the wheel's copy, not the repository's
    again = _run_cell(python, {})  # installed: the cell does nothing
    assert again.returncode == 0
