"""The study a sceptic accepts: does pretraining help UNet++ depth, and which kind?

Five initialisations of the same UNet++ (scratch, ImageNet, SparK, ImageNet -> SparK, zero-out
masked pretraining) at 10% and 1% labels, SparK at three pretraining budgets, frozen-encoder
probes and compute-matched scratch, three pretraining runs per pretrained arm; every comparison a
paired difference whose interval resamples pretraining runs with their fine-tunes. Resumable: every run lives in the profile's study
folder under a hash of its settings (shared with ``depthlib reproduce``), so an interrupted study
continues where it stopped.

    python benchmarks/bench_transfer.py                          # the full study, cpu profile
    python benchmarks/bench_transfer.py --profile quick --out /tmp/study.json   # seconds

Writes ``benchmarks/results/transfer_study_budgets.json`` (``--design cpu-2026-12-02``:
``transfer_study.json``): settings hash, every run's metrics and step times, pretraining loss
curves, and the provenance of each session that ran part of it (commit, date, CPU kind, wall
time, runs finished). Prints the tables and verdicts. Run it alone on the machine: its step
times decide the compute-matched budget.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from provenance import REPO, provenance

from depthlib.course.statistics import (
    comparisons_note,
    format_study_table,
    results_record,
    settings_hash,
    study_rows,
    study_verdicts,
    write_results,
)
from depthlib.course.study import ARMS, course_data, run_study, step_seconds, study_dir
from depthlib.profiles import StudyConfig, get_profile
from depthlib.train.runlog import read_run_rows

RESULTS = REPO / "benchmarks" / "results"
FULL = {
    # Sized to about 5 h on 2 cores (measured: a 1x pretraining ~5.6 min, a 5-epoch fine-tune on the
    # 3449-room pool ~2.4 min): three pretraining runs per pretrained arm, SparK at 1x, 2x and 4x its
    # pretraining budget at 10 % and 1 % labels, frozen-encoder probes, compute-matched scratch at 1x.
    "cpu": StudyConfig(
        arms=("scratch", "imagenet", "spark", "zero-out", "imagenet+spark"),
        label_fractions=(0.1, 0.01), seeds=(0, 1, 2), pretrain_seeds=(0, 1, 2), epochs=5,
        extra_runs=(("spark×2", 0.1), ("spark×2", 0.01), ("spark×4", 0.1), ("spark×4", 0.01),
                    ("scratch (frozen)", 0.1), ("imagenet (frozen)", 0.1), ("spark (frozen)", 0.1),
                    ("spark×4 (frozen)", 0.1)),
        sweep_epochs=(), compute_matched=(0.1,), matched_budgets=(1.0,),
    ),
    # the design of transfer_study.json (1449 rooms, before the budget sweep and the probes)
    "cpu-2026-12-02": StudyConfig(
        arms=tuple(ARMS), label_fractions=(1.0, 0.1), seeds=(0, 1, 2, 3, 4), pretrain_seeds=(0, 1),
        epochs=5, sweep_arms=("scratch", "spark", "imagenet"), sweep_fraction=0.1,
        sweep_epochs=(20,), sweep_seeds=(0, 1, 2), compute_matched=(0.1,), matched_seeds=(0, 1, 2),
    ),
    "quick": StudyConfig(
        arms=tuple(ARMS), seeds=(0, 1), pretrain_seeds=(0, 1), epochs=1,
        sweep_epochs=(2,), sweep_seeds=(0,), compute_matched=(1.0, 0.1),
    ),
}  # fmt: skip


def pretraining_curves(profile, data, study) -> dict:
    """Each pretraining run's loss per epoch and step time: was it still falling?"""
    root = study_dir(profile, data) / "pretrain"
    curves = {}
    for folder in sorted(root.glob("*-seed*")):
        if (folder / "log.jsonl").is_file():
            _, rows = read_run_rows(folder)
            curves[folder.name] = {
                "loss": [round(r["train_loss"], 4) for r in rows],
                "held_out": [round(r["held_out"], 4) for r in rows if "held_out" in r],
                "step_s": round(step_seconds(folder), 1),
                "typical_s": round(step_seconds(folder, typical=True), 1),  # slowed epochs ignored
            }
    return curves


OUT = {"cpu": "transfer_study_budgets.json", "cpu-2026-12-02": "transfer_study.json"}


def earlier_sessions(path: Path) -> list[dict]:
    """The sessions that wrote ``path`` so far: a study that resumes across sessions keeps each
    one's commit, CPU kind and wall time (a file from before this list: its last session only)."""
    if not path.is_file():
        return []
    prov = json.loads(path.read_text())["provenance"]
    keep = ("commit", "date", "machine", "cpu", "torch", "wall_s", "runs_before")
    return prov.get("sessions") or [{k: prov[k] for k in keep if k in prov}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", help="results file (JSON); default: the design's file")
    parser.add_argument("--design", choices=list(FULL), help="default: the profile's name")
    parser.add_argument("--overwrite", action="store_true", help="replace a file of another study")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    profile = get_profile(args.profile)
    study_name = args.design or (profile.name if profile.name in FULL else "cpu")
    study = FULL[study_name]
    out = Path(args.out or RESULTS / OUT.get(study_name, f"transfer_study_{study_name}.json"))
    if out.is_file() and not args.overwrite:  # the same study's partial file grows; another's stays
        made = json.loads(out.read_text()).get("settings_hash")
        if made != settings_hash(profile, study):
            raise SystemExit(f"{out} holds another study (settings {made}); pass --out another file "
                             "or --overwrite.")  # fmt: skip
    print(f"profile {profile.name}; study {study}")
    start = time.monotonic()
    data = course_data(profile)
    matched = study_dir(profile, data) / "compute_match.json"

    sessions = earlier_sessions(out)
    this_session = provenance() | {"runs_before": len(json.loads(out.read_text())["runs"])
                                   if sessions else 0}  # fmt: skip

    def record_of(runs, complete: bool) -> dict:
        now = this_session | {"wall_s": round(time.monotonic() - start)}
        every = sessions + [now]
        extra = now | {"updated": time.strftime("%Y-%m-%d %H:%M"), "complete": complete,
                       "wall_s": sum(s["wall_s"] for s in every), "sessions": every}  # fmt: skip
        record = results_record(runs, profile, study, extra)
        compute_match = json.loads(matched.read_text()) if matched.is_file() else None
        record["pretraining"] = pretraining_curves(profile, data, study)
        record["verdicts"] = study_verdicts(runs, study, compute_match) if complete else []
        record["compute_match"] = compute_match
        return record

    def partial(runs) -> None:  # the file grows with the study: commit it between sessions
        write_results(out, record_of(runs, complete=False))

    runs = run_study(profile, study=study, progress=False, after_each=partial)
    record = record_of(runs, complete=True)
    print(format_study_table(study_rows(runs)))
    for v in record["verdicts"]:
        print("-", v["summary"])
    print(comparisons_note(record["verdicts"]))
    path = write_results(out, record)
    print(f"wrote {path} after {record['provenance']['wall_s'] / 60:.1f} min")


if __name__ == "__main__":
    main()
