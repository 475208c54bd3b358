"""``depthlib reproduce``: the course's main job as a list of cached stages.

rooms dataset -> pretraining and fine-tuning (the profile's lean study) -> notebooks 00-05
executed (every figure) -> ``figures/RESULTS.md``. Each stage caches its outputs, so a second run
skips what is done; the time per stage is printed (the cpu profile has a 15-minute budget).
``data``: a labelled file (e.g. real NYU) instead of the rooms set, passed to the notebooks in
``$DEPTHLIB_DATASET``.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import torch

from depthlib.atomic import atomic_write_text
from depthlib.course.notebooks import run_notebooks
from depthlib.course.statistics import (
    comparisons_note,
    format_study_table,
    load_results,
    study_rows,
    study_verdicts,
)
from depthlib.course.study import ARMS, pretrained_encoder, run_study, study_dir
from depthlib.data.rooms import rooms_for_profile
from depthlib.errors import ConfigError, DataError
from depthlib.profiles import (
    DATASET_ENV,
    REPO_ROOT,
    Profile,
    figures_dir,
    get_profile,
    printable_path,
)

__all__ = ["STAGES", "reproduce", "results_markdown"]

RESULTS_FILE = "RESULTS.md"
STUDY_FILE = REPO_ROOT / "benchmarks" / "results" / "transfer_study.json"


def _rooms(profile: Profile, state: dict) -> str:
    from depthlib.data import info

    return info.format_dataset_summary(info.dataset_summary(rooms_for_profile(profile)))


def _pretrain(profile: Profile, state: dict) -> str:
    st = profile.study
    arms = [a for a in st.arms if "pretrain" in ARMS[a]]
    seeds = sorted({st.pretrain_seeds[s % len(st.pretrain_seeds)] for s in st.seeds})
    paths = [pretrained_encoder(profile, state["data"], a, p) for a in arms for p in seeds]
    return "pretrained encoders: " + ", ".join(printable_path(p) for p in paths)


def _finetune(profile: Profile, state: dict) -> str:
    state["runs"] = run_study(profile, state["data"])
    return format_study_table(study_rows(state["runs"]))


def _notebooks(profile: Profile, state: dict) -> str:
    inputs = f"{profile.name}:{study_dir(profile, state['data']).name}"
    env = {DATASET_ENV: str(state["data"])}
    results = run_notebooks(profile.name, inputs=inputs, env=env, update=state["update"])
    figures = sorted({f for r in results.values() for f in r["figures"]})
    return f"{len(results)} notebooks; figures written: {len(figures)}"


def _results(profile: Profile, state: dict) -> str:
    runs = run_study(profile, state["data"], progress=False)  # the lean study: all finished
    text = results_markdown(profile, runs, state["timings"], state["data"])
    path = atomic_write_text(figures_dir() / RESULTS_FILE, text)
    return f"wrote {printable_path(path)}"


# stage name -> what it does: (profile, shared state) -> a one-line summary
STAGES = {
    "rooms dataset": _rooms,
    "pretraining": _pretrain,
    "fine-tuning": _finetune,
    "notebooks": _notebooks,
    "results": _results,
}


def _full_study(profile: Profile) -> list[str]:
    """The committed full study of this profile's settings: its table and every verdict."""
    head = ["## The full study (`benchmarks/bench_transfer.py`, committed results file)", ""]
    try:
        record, stored = load_results(STUDY_FILE, profile, strict=False)
    except (ConfigError, DataError) as err:
        return head + [f"Not shown: {err}"]
    prov, design = record["provenance"], record["study"]
    verdicts = study_verdicts(stored, design, record.get("compute_match"))
    if record["differs"]:
        head += [
            f"Made under other settings than this {profile.name} profile's, so compare its arms with "
            f"each other, not with the tables above: {'; '.join(record['differs'])}.",
            "",
        ]
    truth = record.get("ground_truth") or (
        "filled depth (`depths`); the file predates version 3 of the rooms and the rawDepths "
        "default, so compare its arms with each other, not with the tables above"
    )
    return head + [
        f"Commit {prov['commit']}, {prov['date']}, {prov['machine']}, torch {prov['torch']}; "
        f"seeds {design['seeds']}, pretraining seeds {design['pretrain_seeds']}. Intervals: 95%, "
        f"the wider of a paired bootstrap and Student's t over the seeds, fine-tunes of one "
        f"pretraining run resampled together. Ground truth: {truth}.",
        "",
        format_study_table(study_rows(stored)),
        "",
        *[f"- {v['question']}: {v['summary']}" for v in verdicts],
        "",
        comparisons_note(verdicts),
    ]


def _scored_on(runs) -> str:
    """What the runs' tables were scored against, as their evaluations record it."""
    first = runs[0].evaluation if runs else {}
    dbe = first.get("dbe") or {}
    text = f"Ground truth: {first.get('ground_truth', 'not recorded')}."
    if dbe.get("size"):
        text += " DBE at {}×{}, θ = {:.3g} px.".format(*dbe["size"], dbe["theta_px"])
    return text


def results_markdown(profile: Profile, runs, timings: dict[str, float], data) -> str:
    """``RESULTS.md``: the lean study's table and paired verdicts, each course model's protocol
    table beside the baselines, the machine and the time per stage."""
    gpu = f"GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "no GPU"
    lines = [
        f"# Results — profile `{profile.name}`",
        "",
        f"Written by `depthlib reproduce` on {time.strftime('%Y-%m-%d %H:%M')}; data: `{printable_path(data)}`.",
        f"Machine: {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), "
        f"torch {torch.__version__} with {torch.get_num_threads()} threads, {gpu}.",
        "",
        "## Initialisations of the same UNet++ (test split, mean ± std over seeds)",
        "",
        f"The lean study of the profile: {profile.study.epochs} fine-tune epochs, seeds "
        f"{list(profile.study.seeds)}. The full study (more arms and seeds, a budget sweep, "
        "compute-matched scratch, paired confidence intervals) is `benchmarks/bench_transfer.py`'s, "
        "committed in `benchmarks/results/transfer_study.json`. " + _scored_on(runs),
        "",
        format_study_table(study_rows(runs)),
        "",
    ]
    if len(profile.study.seeds) > 1:
        lines += [f"- {v['summary']}" for v in study_verdicts(runs, profile.study)]
    else:
        lines.append("One seed: no interval and no verdict here; the full study below has both.")
    lines += ["", *_full_study(profile), ""]
    lines += ["## Each model beside the baselines (first seed, all labels, all metrics)", ""]
    first = min(r.seed for r in runs)
    for run in runs:
        if run.label_fraction == 1.0 and run.seed == first:
            lines += [f"### {run.label}", "", run.evaluation["table"], ""]
    if timings:
        lines += [
            "## Time per stage",
            "",
            "This invocation of `reproduce`; a stage whose outputs were cached takes about 0 s.",
            "",
            "| stage | seconds |",
            "|---|---|",
        ]
        lines += [f"| {name} | {seconds:.0f} |" for name, seconds in timings.items()]
    return "\n".join(lines) + "\n"


def reproduce(
    profile: str | Profile | None = None,
    *,
    only: list[str] | None = None,
    data: str | os.PathLike | None = None,
    update_notebooks: bool = False,
    echo=print,
) -> dict[str, float]:
    """Run every stage (or those named in ``only``) and return ``{stage: seconds}``."""
    prof = profile if isinstance(profile, Profile) else get_profile(profile)
    unknown = sorted(set(only or ()) - set(STAGES))
    if unknown:
        raise ConfigError(f"Unknown stage(s) {unknown}; the stages are: {', '.join(STAGES)}.")
    stages = [name for name in STAGES if not only or name in only]
    timings: dict[str, float] = {}
    state = {"timings": timings, "update": update_notebooks}
    echo(f"depthlib reproduce — profile {prof.name}, {len(stages)} stage(s)")
    for i, name in enumerate(stages, 1):
        if "data" not in state and name != "rooms dataset":
            state["data"] = Path(data) if data is not None else rooms_for_profile(prof)
        echo(f"[{i}/{len(stages)}] {name} ...")
        start = time.perf_counter()
        summary = STAGES[name](prof, state)
        timings[name] = time.perf_counter() - start
        echo(summary)
        echo(f"[{i}/{len(stages)}] {name}: done in {timings[name]:.1f} s")
    echo("time per stage: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    echo(f"total: {sum(timings.values()):.1f} s")
    return timings
