"""The study: every arm runs in the quick profile, runs are paired and reused, compute matching
follows measured step times, the bootstrap has known answers, the results file round-trips."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import pytest

from depthlib.course.statistics import (
    bootstrap_ci,
    comparisons_note,
    format_study_table,
    load_results,
    paired_interval,
    paired_verdict,
    pretraining_budget_points,
    results_record,
    study_rows,
    study_verdicts,
    write_results,
)
from depthlib.course.study import (
    ARMS,
    MATCHED,
    arm_spec,
    compute_matched_epochs,
    course_runs,
    data_identity,
    run_study,
    study_dir,
)
from depthlib.errors import ConfigError, DataError
from depthlib.profiles import StudyConfig, get_profile
from depthlib.viz.training import plot_pretraining_budgets

QUICK = get_profile("quick")
FULL = StudyConfig(
    arms=tuple(ARMS), seeds=(0, 1), pretrain_seeds=(0, 1), epochs=1, sweep_epochs=(2,),
    sweep_seeds=(0,), compute_matched=(1.0, 0.1),
)  # fmt: skip


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DEPTHLIB_RUNS", str(root / "runs"))
        mp.setenv("DEPTHLIB_DATA", str(root / "data"))
        mp.delenv("DEPTHLIB_DATASET", raising=False)
        runs = run_study(QUICK, study=FULL, progress=False, echo=lambda _: None)
        yield root, runs, mp


def test_the_quick_study_runs_every_arm_paired_and_scored(study):
    _, runs, _ = study
    main = [r for r in runs if r.epochs == 1 and r.arm != MATCHED]
    assert {(r.arm, r.label_fraction, r.seed) for r in main} == {
        (a, f, s) for a in ARMS for f in (1.0, 0.1) for s in (0, 1)
    }
    assert {r.arm for r in runs if r.epochs == 2} >= {"scratch", "spark", "imagenet"}
    assert {r.pretrain_seed for r in main if r.arm == "spark"} == {0, 1}  # seed k -> k % 2
    assert all(r.pretrain_seed is None for r in main if r.arm in ("scratch", "imagenet"))
    for run in runs:
        assert 0 <= run.metrics["delta1"] <= 1 and run.metrics["abs_rel"] > 0
    # paired: the same seed gives every arm the same label subset
    meta = {}
    for r in main:
        config = json.loads((r.run_dir / "checkpoints" / "epoch_0001" / "meta.json").read_text())
        meta[(r.arm, r.label_fraction, r.seed)] = config["run_config"]
    for f in (1.0, 0.1):
        for s in (0, 1):
            assert len({meta[(a, f, s)]["n_train"] for a in ARMS}) == 1
    zero_out = meta[("zero-out", 1.0, 0)]["finetune"]["encoder_weights"]
    assert "pretrain/zero-out-seed0" in zero_out
    matched = [r for r in runs if r.arm == MATCHED]
    assert len(matched) == 4 and all(r.epochs >= 1 for r in matched)
    match = json.loads((runs[0].run_dir.parent / "compute_match.json").read_text())
    assert match["labels10-epochs1"]["epochs"] == matched[-1].epochs


def test_budget_arms_frozen_probes_and_matching_per_budget(tmp_path, monkeypatch):
    monkeypatch.setenv("DEPTHLIB_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("DEPTHLIB_DATA", str(tmp_path / "data"))
    monkeypatch.delenv("DEPTHLIB_DATASET", raising=False)
    design = StudyConfig(
        arms=("scratch", "spark"), label_fractions=(0.1,), seeds=(0, 1), pretrain_seeds=(0, 1),
        epochs=1, extra_runs=(("spark×2", 0.1), ("scratch (frozen)", 0.1), ("spark (frozen)", 0.1)),
        compute_matched=(0.1,), matched_budgets=(1.0, 2.0),
    )  # fmt: skip
    runs = run_study(QUICK, study=design, progress=False, echo=lambda _: None)
    root = runs[0].run_dir.parent
    checkpoints = root / "pretrain" / "spark-x2-seed1" / "checkpoints"
    pretrain_meta = json.loads(next(checkpoints.glob("epoch_*/meta.json")).read_text())
    assert pretrain_meta["config"]["epochs"] == 2 * QUICK.pretrain.epochs
    frozen = next(r for r in runs if r.arm == "spark (frozen)")
    meta = json.loads((frozen.run_dir / "checkpoints" / "epoch_0001" / "meta.json").read_text())
    assert meta["run_config"]["finetune"]["freeze_encoder"] is True
    assert "pretrain/spark-seed" in meta["run_config"]["finetune"]["encoder_weights"]
    assert {r.arm for r in runs} >= {"scratch (compute-matched)",
                                     "scratch (compute-matched to spark×2)"}  # fmt: skip
    match = json.loads((root / "compute_match.json").read_text())
    assert match["labels10-epochs1-spark×2"]["budget"] == 2.0
    questions = {v["question"] for v in study_verdicts(runs, design, match)}
    assert "spark (frozen) vs spark, 1 epochs" not in questions  # a probe against its own kind
    assert questions >= {
        "spark vs scratch, 1 epochs",
        "spark×2 vs scratch, 1 epochs",
        "spark×2 vs spark, 1 epochs",
        "spark (frozen) vs scratch (frozen), 1 epochs",
        "spark vs compute-matched scratch",
        "spark×2 vs compute-matched scratch",
    }
    assert arm_spec("imagenet+spark×12 (frozen)") == ("imagenet+spark", 12.0, True)
    for bad in ("imagenet×4", "spark×0", "sparkle", "spark×x"):
        with pytest.raises(ConfigError, match="Unknown study arm"):
            arm_spec(bad)


def test_finished_runs_are_reused_and_other_settings_get_another_folder(study):
    root, runs, mp = study
    said = []
    again = run_study(QUICK, study=FULL, progress=False, echo=said.append)
    assert said == [] and [r.run_dir for r in again] == [r.run_dir for r in runs]
    lean = course_runs(QUICK, progress=False)
    assert list(lean) == ["scratch", "spark", "imagenet"]
    assert lean["spark"] == next(r.run_dir for r in runs if (r.arm, r.seed, r.label_fraction,
                                 r.epochs) == ("spark", 0, 1.0, 1))  # fmt: skip
    data = runs[0].evaluation["data"]
    longer = QUICK.with_(finetune=dataclasses.replace(QUICK.finetune, lr=1e-4))
    assert study_dir(QUICK, data) == runs[0].run_dir.parent
    assert study_dir(longer, data) != study_dir(QUICK, data)


def test_tables_and_verdicts_read_the_runs(study):
    _, runs, _ = study
    rows = study_rows([r for r in runs if r.epochs == 1])
    assert {r["arm"] for r in rows} >= set(ARMS) | {"mean-depth baseline"}
    table = format_study_table(rows)
    assert "| 100% | spark | 1 | 2 |" in table and "± " in table
    verdict = paired_verdict(runs, "spark", label_fraction=1.0, epochs=1)
    assert verdict["seeds"] == [0, 1] and "95% CI" in verdict["summary"]
    with pytest.raises(ConfigError, match="budgets"):
        paired_verdict(runs, "spark", label_fraction=0.1)  # 1 and 2 epochs: say which


def test_compute_matching_picks_epochs_from_measured_step_times():
    assert compute_matched_epochs(5, pretrain_s=120.0, finetune_epoch_s=12.0) == 15
    assert compute_matched_epochs(5, pretrain_s=124.0, finetune_epoch_s=10.0) == 17  # 12.4 -> 12
    assert compute_matched_epochs(5, pretrain_s=126.0, finetune_epoch_s=10.0) == 18  # 12.6 -> 13
    assert compute_matched_epochs(10, pretrain_s=0.0, finetune_epoch_s=10.0) == 10
    with pytest.raises(ConfigError, match="measured step times"):
        compute_matched_epochs(5, 100.0, 0.0)


def test_matched_epochs_read_typical_step_times_so_slowed_runs_move_nothing(tmp_path):
    """Another job on the machine slows whole runs or some epochs of a run: compute matching reads
    each run's median epoch × its epochs, then the median over runs, and rounds to nearest."""
    from depthlib.course import study as study_module

    def run(folder, epoch_times):
        (tmp_path / folder).mkdir(parents=True)
        rows = [{"epoch": i + 1, "epoch_time_s": t} for i, t in enumerate(epoch_times)]
        (tmp_path / folder / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        return tmp_path / folder

    runs = [
        study_module.StudyRun("scratch", 0.1, 5, s, None, run(f"scratch-{s}", times))
        for s, times in enumerate([[10.0] * 5, [10, 10, 90, 10, 10], [100.0] * 5])  # 2 slowed
    ]
    runs += [study_module.StudyRun("spark", 0.1, 5, s, s, tmp_path / "x") for s in range(3)]
    run("pretrain/spark-seed0", [21.0] * 6)
    run("pretrain/spark-seed1", [21, 21, 21, 300, 21, 21])  # one epoch slowed: 126 s typical
    run("pretrain/spark-seed2", [90.0] * 6)  # a whole run slowed
    assert study_module.step_seconds(tmp_path / "pretrain/spark-seed1") == 405.0  # the clock
    assert study_module.step_seconds(tmp_path / "pretrain/spark-seed1", typical=True) == 126.0
    assert study_module._matched_epochs(tmp_path, runs, 0.1, 5) == 5 + 13  # 126 s / 10 s = 12.6
    (match,) = json.loads((tmp_path / "compute_match.json").read_text()).values()
    assert match == {
        "pretrain_step_s": 126.0,
        "finetune_epoch_step_s": 10.0,
        "epochs": 18,
        "budget": 1.0,
    }
    run("pretrain/spark-seed3", [1.0])  # measured once per study: a later timing moves nothing
    assert study_module._matched_epochs(tmp_path, runs, 0.1, 5) == 18


def test_bootstrap_interval_has_known_answers():
    assert bootstrap_ci([0.3] * 8) == (0.3, 0.3, 0.3)
    # two values 0 and 2: resampled means are 0, 1, 2 with chances 1/4, 1/2, 1/4
    mean, low, high = bootstrap_ci([0.0, 2.0], n_boot=20_000)
    assert (mean, low, high) == (1.0, 0.0, 2.0)
    mean, low, high = bootstrap_ci([1.0, 2.0, 3.0, 4.0, 5.0], confidence=0.5, n_boot=20_000)
    assert mean == 3.0 and 2.3 < low < 2.8 and 3.2 < high < 3.7  # ±0.67 σ/√n around 3
    assert bootstrap_ci([1, 2, 3], seed=1) == bootstrap_ci([1, 2, 3], seed=1)
    with pytest.raises(DataError):
        bootstrap_ci([math.nan])


def test_paired_interval_is_the_wider_of_bootstrap_and_t():
    got = paired_interval([1.0, 2.0, 3.0])
    # mean 2, sd 1, n 3: t(0.975, 2) = 4.303, half-width 4.303 / sqrt(3) = 2.484
    assert got["gain"] == 2.0
    assert got["ci_t"] == pytest.approx((2 - 2.4841, 2 + 2.4841), abs=1e-3)
    assert got["ci"] == got["ci_t"]  # the bootstrap of three values cannot leave [1, 3]
    assert got["ci_bootstrap"][0] >= 1.0 and got["ci_bootstrap"][1] <= 3.0
    wide = paired_interval([0.0] * 19 + [10.0])  # one outlier: the t interval is the wider
    assert wide["ci"][0] == min(wide["ci_t"][0], wide["ci_bootstrap"][0])
    assert wide["ci"][1] == max(wide["ci_t"][1], wide["ci_bootstrap"][1])
    with pytest.raises(DataError):
        paired_interval([1.0])


@dataclasses.dataclass
class FakeRun:
    """What a verdict reads from a run."""

    arm: str
    seed: int
    metrics: dict
    label_fraction: float = 0.1
    epochs: int = 5
    pretrain_seed: int | None = None


def _fake(arm, seed, abs_rel, delta1):
    return FakeRun(arm, seed, {"abs_rel": abs_rel, "delta1": delta1, "rmse": 1.0, "dbe_comp": 2.0})


def test_the_clustered_interval_widens_when_fine_tunes_share_pretraining_runs():
    # six differences, two per pretraining run; the runs differ, the fine-tunes of one hardly
    gains = [0.05, 0.051, 0.00, 0.001, 0.03, 0.031]
    naive = paired_interval(gains)
    clustered = paired_interval(gains, clusters=[0, 0, 1, 1, 2, 2])
    assert clustered["gain"] == naive["gain"] and clustered["clusters"] == 3
    width = lambda ci: ci[1] - ci[0]  # noqa: E731
    assert width(clustered["ci"]) > 1.5 * width(naive["ci"])
    assert naive["ci"][0] > 0 > clustered["ci"][0]  # "better" only while pretending independence
    # the t part reads the three cluster means (0.0505, 0.0005, 0.0305): sd 0.025166, t(2) 4.3027
    half = clustered["ci_t"][1] - clustered["gain"]
    assert half == pytest.approx(4.3027 * 0.025166 / 3**0.5, rel=1e-4)
    with pytest.raises(DataError, match="two clusters"):
        paired_interval([0.1, 0.2, 0.3], clusters=[7, 7, 7])
    # a verdict clusters by the pretraining runs the fine-tunes started from
    runs = [FakeRun("scratch", s, {"delta1": 0.7}) for s in range(6)]
    runs += [FakeRun("spark", s, {"delta1": 0.7 + g}, pretrain_seed=s % 3)
             for s, g in enumerate([0.05, 0.0, 0.03, 0.051, 0.001, 0.031])]  # fmt: skip
    v = paired_verdict(runs, "spark", label_fraction=0.1, metrics=("delta1",))
    assert v["metrics"]["delta1"]["clusters"] == 3 and "over 3 pretraining runs" in v["summary"]
    assert v["metrics"]["delta1"]["verdict"] == "no clear difference"


def test_compute_matching_and_the_pretraining_axis_read_median_step_times(study, tmp_path):
    _, runs, _ = study
    record, stored = load_results(
        write_results(tmp_path / "s.json", results_record(runs, QUICK, FULL))
    )
    record["pretraining"] = {f"spark-seed{p}": {"step_s": 120.0} for p in (0, 1)}
    record["pretraining"]["spark-seed2"] = {"step_s": 900.0}  # one run slowed by another job
    record["pretraining"]["spark-seed1"] = {"step_s": 700.0, "typical_s": 120.0}  # some epochs
    record["compute_match"] = {"labels10-epochs1": {"epochs": 2, "budget": 1.0}}
    points = pretraining_budget_points(record, stored, "delta1")
    assert set(points) == {1.0, 0.1}
    (spark,) = points[0.1]["spark"]
    assert spark[0] == pytest.approx(2.0)  # the median, 120 s: the slow run moves nothing
    assert points[0.1]["imagenet"][0][0] == 0.0  # pretrained elsewhere: not counted
    direct = paired_verdict(stored, "spark", label_fraction=0.1, epochs=1, metrics=("delta1",))
    assert spark[1:4] == (direct["metrics"]["delta1"]["gain"], *direct["metrics"]["delta1"]["ci"])
    assert "scratch, compute-matched" not in points[1.0]  # matched only where the study asked


def test_verdict_reads_the_interval_in_the_metrics_direction():
    runs = [_fake("scratch", s, 0.20, 0.70) for s in range(5)]
    runs += [_fake("spark", s, 0.18 - 0.001 * s, 0.72) for s in range(5)]  # lower AbsRel: better
    runs += [_fake("zero-out", s, 0.20 + (0.01 if s % 2 else -0.01), 0.70) for s in range(5)]
    v = paired_verdict(runs, "spark", label_fraction=0.1, metrics=("abs_rel", "delta1"))
    assert v["metrics"]["abs_rel"]["verdict"] == "better" and v["metrics"]["abs_rel"]["gain"] > 0
    assert v["metrics"]["delta1"]["verdict"] == "better"
    v = paired_verdict(runs, "zero-out", label_fraction=0.1, metrics=("abs_rel",))
    assert v["metrics"]["abs_rel"]["verdict"] == "no clear difference"
    v = paired_verdict(runs[:5] + runs[5:6], "spark", label_fraction=0.1, metrics=("abs_rel",))
    assert v["metrics"]["abs_rel"]["verdict"] == "too few paired seeds"


def test_study_verdicts_ask_every_question_of_the_design():
    design = dataclasses.replace(FULL, epochs=5, sweep_epochs=(20,), seeds=(0, 1, 2),
                                 compute_matched=(0.1,))  # fmt: skip
    runs = [
        _fake(a, s, 0.2 - 0.01 * (a != "scratch") - 0.001 * s, 0.7) for a in ARMS for s in range(3)
    ]
    runs += [dataclasses.replace(_fake(MATCHED, s, 0.19, 0.7), epochs=17) for s in range(3)]
    runs += [dataclasses.replace(_fake(a, s, 0.15, 0.8), epochs=20) for a in ARMS for s in range(3)]
    match = {
        "labels10-epochs5": {"epochs": 17, "pretrain_step_s": 1.0, "finetune_epoch_step_s": 1.0}
    }
    found = {v["question"]: v for v in study_verdicts(runs, design, match)}
    assert set(found) >= {
        "spark vs scratch, 5 epochs", "zero-out vs scratch, 5 epochs",
        "sparse vs zero-out masked pretraining", "spark vs compute-matched scratch",
        "imagenet vs compute-matched scratch", "spark vs scratch, 20 epochs",
    }  # fmt: skip
    assert found["spark vs scratch, 5 epochs"]["metrics"]["abs_rel"]["verdict"] == "better"
    matched = found["spark vs compute-matched scratch"]
    assert matched["seeds"] == [0, 1, 2]
    assert f"{MATCHED}, 17 epochs" in matched["summary"]
    assert found["spark vs scratch, 20 epochs"]["summary"].startswith("at 20 epochs: ")
    note = comparisons_note(list(found.values()))
    assert note.startswith(f"{len(found)} comparisons × 4 metrics") and "primary" in note


def test_results_file_round_trips_and_refuses_other_settings(study, tmp_path):
    _, runs, _ = study
    record = results_record(runs, QUICK, FULL, {"commit": "abc"})
    path = write_results(tmp_path / "study.json", record)
    loaded, stored = load_results(path, QUICK, FULL)
    assert loaded["settings_hash"] == record["settings_hash"] and len(stored) == len(runs)
    assert [s.metrics for s in stored] == [r.metrics for r in runs]
    assert study_rows(stored) == study_rows(runs)  # tables read the same from the file
    record["pretraining"] = {"spark-seed0": {"step_s": 60.0}, "spark-seed1": {"step_s": 60.0}}
    fig = plot_pretraining_budgets(record, stored)
    assert [ax.get_title() for ax in fig.axes] == ["100% labels, 1 fine-tune epochs",
                                                   "10% labels, 1 fine-tune epochs"]  # fmt: skip
    labels = {t.get_text() for t in fig.legends[0].get_texts()}
    assert {"spark", "imagenet"} <= labels
    other = dataclasses.replace(FULL, seeds=(0, 1, 2))
    with pytest.raises(ConfigError, match="made under other settings"):
        load_results(path, QUICK, other)
    assert len(load_results(path, QUICK)[1]) == len(runs)  # any design, this profile's settings
    longer = QUICK.with_(finetune=dataclasses.replace(QUICK.finetune, epochs=7))
    with pytest.raises(ConfigError, match="quick profile's: finetune.epochs 2 in the file, 7 here"):
        load_results(path, longer)
    shown, _ = load_results(path, longer, strict=False)  # read anyway, saying what differs
    assert shown["differs"] == ["finetune.epochs 2 in the file, 7 here"]
    older = json.loads(path.read_text())
    del older["finetune"]["log_every"], older["rooms"]  # a file from before those settings existed
    path.write_text(json.dumps(older))
    assert len(load_results(path, QUICK, FULL)[1]) == len(runs)
    with pytest.raises(DataError, match="No study results"):
        load_results(tmp_path / "missing.json")


def test_the_study_key_is_the_data_content_not_its_path(tmp_path, monkeypatch):
    monkeypatch.setenv("DEPTHLIB_RUNS", str(tmp_path / "runs"))
    here = tmp_path / "repo-a" / "rooms.mat"
    here.parent.mkdir()
    here.write_bytes(b"rooms" * 1000)
    moved = tmp_path / "elsewhere" / "copy-of-rooms.mat"
    moved.parent.mkdir()
    shutil.copy(here, moved)  # a moved repository: other path, other mtime, same content
    assert data_identity(here) == data_identity(moved)
    assert study_dir(QUICK, here) == study_dir(QUICK, moved)
    other = tmp_path / "other.mat"
    other.write_bytes(b"rooms" * 999 + b"ROOMS")
    assert study_dir(QUICK, other) != study_dir(QUICK, here)


def test_a_re_rendered_rooms_file_keeps_its_study(tmp_path):
    from depthlib.data.rooms import synthesize

    first = synthesize(tmp_path / "a.mat", 4, (32, 48), 5, workers=1, progress=False)
    again = synthesize(tmp_path / "b.mat", 4, (32, 48), 5, workers=1, progress=False)
    assert data_identity(first) == data_identity(again)  # no write time inside the file


def test_a_study_resumed_across_sessions_keeps_each_sessions_provenance(tmp_path, monkeypatch):
    """bench_transfer's file records every session that ran part of the study, not only the
    last one: a file from before the list becomes its one session."""
    import importlib

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    earlier_sessions = importlib.import_module("bench_transfer").earlier_sessions
    path = tmp_path / "study.json"
    assert earlier_sessions(path) == []
    old = {"commit": "abc", "date": "d", "wall_s": 60, "complete": False, "machine": "m"}
    path.write_text(json.dumps({"provenance": old, "runs": []}))
    assert earlier_sessions(path) == [{"commit": "abc", "date": "d", "machine": "m", "wall_s": 60}]
    sessions = [{"commit": "abc", "wall_s": 60}, {"commit": "def", "cpu": "x", "wall_s": 5}]
    path.write_text(json.dumps({"provenance": old | {"sessions": sessions}, "runs": []}))
    assert earlier_sessions(path) == sessions
