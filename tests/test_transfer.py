"""The scratch-vs-SparK experiment: runs, caching, table and verdict (quick profile, tiny)."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from depthlib.course.experiment import (
    TransferRun,
    course_runs,
    curve_groups,
    experiment_dir,
    format_transfer_table,
    summarize_transfer,
    transfer_runs,
    transfer_verdict,
)
from depthlib.errors import ConfigError, DataError
from depthlib.profiles import get_profile

QUICK = get_profile("quick")


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    root = tmp_path_factory.mktemp("transfer")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DEPTHLIB_RUNS", str(root / "runs"))
        mp.setenv("DEPTHLIB_DATA", str(root / "data"))
        runs = transfer_runs(QUICK, seeds=(0, 1), progress=False, echo=lambda _: None)
        yield root, runs


def test_every_condition_runs_once_and_is_scored(experiment):
    _, runs = experiment
    assert [(r.label_fraction, r.seed, r.init) for r in runs] == [
        (f, s, i) for f in (1.0, 0.1) for s in (0, 1) for i in ("scratch", "spark")
    ]
    for run in runs:
        last = json.loads((run.run_dir / "log.jsonl").read_text().splitlines()[-1])
        assert last["epoch"] == QUICK.transfer.epochs
        assert 0 <= run.metrics["delta1"] <= 1 and run.metrics["abs_rel"] > 0
    spark = [r for r in runs if r.init == "spark"][0]
    latest = json.loads((spark.run_dir / "checkpoints" / "latest.json").read_text())["name"]
    meta = json.loads((spark.run_dir / "checkpoints" / latest / "meta.json").read_text())
    assert meta["run_config"]["encoder_weights"].endswith("spark/encoder.safetensors")
    low = [r for r in runs if r.label_fraction == 0.1][0]
    low_meta = json.loads((low.run_dir / "checkpoints" / latest / "meta.json").read_text())
    assert low_meta["run_config"]["subset_passes"] > 1


def test_finished_runs_are_reused(experiment, monkeypatch):
    root, runs = experiment
    monkeypatch.setenv("DEPTHLIB_RUNS", str(root / "runs"))
    monkeypatch.setenv("DEPTHLIB_DATA", str(root / "data"))
    stamps = {r.run_dir: (r.run_dir / "evaluation.json").stat().st_mtime_ns for r in runs}
    said = []
    again = transfer_runs(QUICK, seeds=(0, 1), progress=False, echo=said.append)
    assert said == [] and [r.run_dir for r in again] == [r.run_dir for r in runs]
    assert all((d / "evaluation.json").stat().st_mtime_ns == t for d, t in stamps.items())
    assert course_runs(QUICK, progress=False) == {r.init: r.run_dir for r in runs[:2]}
    seed0 = transfer_runs(QUICK, seeds=(0,), progress=False, echo=said.append)
    assert len(seed0) == 4
    everything = transfer_runs(QUICK, seeds=(0,), include_finished=True, progress=False)
    assert [r.run_dir for r in everything] == [r.run_dir for r in runs] and said == []


def test_other_settings_get_another_experiment_folder(experiment, monkeypatch):
    root, runs = experiment
    monkeypatch.setenv("DEPTHLIB_RUNS", str(root / "runs"))
    data = runs[0].evaluation["data"]
    longer = QUICK.with_(transfer=dataclasses.replace(QUICK.transfer, epochs=3))
    assert experiment_dir(QUICK, data) == runs[0].run_dir.parent
    assert experiment_dir(longer, data) != experiment_dir(QUICK, data)


def test_summary_table_and_curve_groups(experiment):
    _, runs = experiment
    rows = summarize_transfer(runs)
    assert [(r["label_fraction"], r["init"]) for r in rows] == [
        (1.0, "scratch"),
        (1.0, "spark"),
        (1.0, "mean-depth baseline"),
        (0.1, "scratch"),
        (0.1, "spark"),
        (0.1, "mean-depth baseline"),
    ]
    scratch = [r.metrics["abs_rel"] for r in runs if (r.label_fraction, r.init) == (1.0, "scratch")]
    assert rows[0]["abs_rel"] == pytest.approx(sum(scratch) / 2)
    assert rows[0]["n_seeds"] == 2 and not math.isnan(rows[0]["abs_rel_std"])
    table = format_transfer_table(rows)
    assert "| 10% | spark | 2 |" in table and "mean-depth baseline" in table
    groups = curve_groups(runs)
    assert list(groups) == [
        "scratch, 100% labels",
        "spark, 100% labels",
        "scratch, 10% labels",
        "spark, 10% labels",
    ]
    assert all(len(dirs) == 2 for dirs in groups.values())


def _row(init, delta1, abs_rel, rmse, std, n=3):
    row = {"label_fraction": 0.1, "init": init, "n_seeds": n}
    for name, value in (("delta1", delta1), ("abs_rel", abs_rel), ("rmse", rmse)):
        row[name], row[f"{name}_std"] = value, std
    return row


def test_verdict_needs_a_gain_beyond_one_std_on_every_metric():
    better = [_row("scratch", 0.60, 0.25, 0.9, 0.01), _row("spark", 0.70, 0.20, 0.8, 0.02)]
    verdict = transfer_verdict(better, 0.1)
    assert verdict["spark_better_beyond_one_std"] and "is better" in verdict["summary"]
    close = [_row("scratch", 0.60, 0.25, 0.9, 0.05), _row("spark", 0.62, 0.20, 0.8, 0.02)]
    verdict = transfer_verdict(close, 0.1)
    assert not verdict["spark_better_beyond_one_std"] and "not better" in verdict["summary"]
    assert not verdict["metrics"]["delta1"]["beyond_one_std"]
    assert verdict["metrics"]["abs_rel"]["gain"] == pytest.approx(0.05)
    single = [
        _row("scratch", 0.6, 0.25, 0.9, math.nan, 1),
        _row("spark", 0.7, 0.2, 0.8, math.nan, 1),
    ]
    assert "no verdict" in transfer_verdict(single, 0.1)["summary"]
    with pytest.raises(ConfigError, match="10% labels"):
        transfer_verdict(better[:1], 0.1)


def test_mismatched_encoder_depths_are_refused_before_any_work(tmp_path):
    bad = QUICK.with_(pretrain=dataclasses.replace(QUICK.pretrain, encoder_depth=5))
    with pytest.raises(ConfigError, match="encoder_depth"):
        transfer_runs(bad, tmp_path / "missing.mat", progress=False)
    with pytest.raises(ConfigError, match="inits"):
        transfer_runs(QUICK, tmp_path / "missing.mat", inits=("imagenet",), progress=False)


def test_an_unfinished_run_says_how_to_finish_it(tmp_path):
    run = TransferRun("scratch", 1.0, 0, tmp_path / "scratch-labels100-seed0")
    with pytest.raises(DataError, match="did not finish"):
        _ = run.metrics
