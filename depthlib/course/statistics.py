"""Reading the study as a sceptic would: paired differences, intervals, verdicts, tables, and the
results file that carries a long study's numbers with their provenance.

A difference between two arms is measured per (paired) seed. With five seeds a percentile
bootstrap is too narrow, so a verdict reads the wider of the bootstrap and Student's t interval
of the mean difference: "better" or "worse" when it excludes 0, "no clear difference" otherwise.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from depthlib.atomic import atomic_write_text, to_json
from depthlib.course.study import FROZEN, arm_spec, matched_name, pretrain_name, step_seconds
from depthlib.data.rooms import GENERATOR_VERSION
from depthlib.depth.metrics import MeanDepthBaseline
from depthlib.errors import ConfigError, DataError

__all__ = [
    "METRICS",
    "PRIMARY",
    "bootstrap_ci",
    "comparisons_note",
    "format_study_table",
    "load_results",
    "paired_interval",
    "paired_verdict",
    "pretraining_budget_points",
    "results_record",
    "settings_hash",
    "study_verdicts",
    "study_rows",
    "write_results",
]

METRICS = ("delta1", "abs_rel", "rmse", "dbe_comp")
PRIMARY = "delta1"  # declared before any run: the one metric a verdict rests on
HIGHER_IS_BETTER = {"delta1": True, "abs_rel": False, "rmse": False, "dbe_comp": False}
TITLES = {"delta1": "δ1 ↑", "abs_rel": "AbsRel ↓", "rmse": "RMSE (m) ↓", "dbe_comp": "DBE comp ↓"}


def bootstrap_ci(
    values: Sequence[float], confidence: float = 0.95, n_boot: int = 10_000, seed: int = 0
) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean of ``values`` and its percentile-bootstrap interval
    (resampling the values with replacement, ``n_boot`` times, from a seeded generator)."""
    x = np.asarray([v for v in values if math.isfinite(v)], np.float64)
    if x.size == 0:
        raise DataError("bootstrap_ci got no finite value.")
    means = x[np.random.default_rng(seed).integers(0, x.size, (int(n_boot), x.size))].mean(1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(x.mean()), float(low), float(high)


def paired_interval(
    values: Sequence[float], confidence: float = 0.95, n_boot: int = 10_000, seed: int = 0,
    clusters: Sequence | None = None,
) -> dict:  # fmt: skip
    """Mean of paired differences with its bootstrap and t intervals, and the wider of the two
    (``ci``), which is what verdicts read.

    ``clusters``: for each difference, what it shares with others (the pretraining run its
    fine-tune started from). Fine-tunes of one pretraining run are not independent draws, so the
    bootstrap then resamples whole clusters and the t interval reads the cluster means (one
    degree of freedom less than clusters): shared pretraining runs widen the interval, as they
    should."""
    from scipy import stats

    keep = [i for i, v in enumerate(values) if math.isfinite(v)]
    x = np.asarray([values[i] for i in keep], np.float64)
    if x.size < 2:
        raise DataError("a paired interval needs at least two finite differences.")
    labels = [clusters[i] for i in keep] if clusters is not None else list(range(x.size))
    groups = [x[[j for j, c in enumerate(labels) if c == key]] for key in dict.fromkeys(labels)]
    if len(groups) < 2:
        raise DataError("a clustered interval needs at least two clusters (pretraining runs).")
    mean = float(x.mean())
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(groups), (int(n_boot), len(groups)))
    sums, sizes = np.array([g.sum() for g in groups]), np.array([g.size for g in groups])
    means = sums[picks].sum(1) / sizes[picks].sum(1)
    alpha = (1 - confidence) / 2
    b_low, b_high = (float(q) for q in np.quantile(means, [alpha, 1 - alpha]))
    centres = np.array([g.mean() for g in groups])
    half = stats.t.ppf(0.5 + confidence / 2, centres.size - 1) * centres.std(ddof=1)
    half = float(half) / math.sqrt(centres.size)
    t_ci = (mean - half, mean + half)
    ci = (min(b_low, t_ci[0]), max(b_high, t_ci[1]))
    return {"gain": mean, "ci": ci, "ci_bootstrap": (b_low, b_high), "ci_t": t_ci,
            "clusters": len(groups)}  # fmt: skip


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan


def study_rows(runs: Iterable) -> list[dict]:
    """One row per (label fraction, arm, epochs): mean and sample std over seeds of each metric,
    then one mean-depth baseline row per label fraction."""
    groups: dict[tuple, list] = {}
    for run in runs:
        groups.setdefault((run.label_fraction, run.arm, run.epochs), []).append(run)
    rows = []
    for fraction in sorted({k[0] for k in groups}, reverse=True):
        baseline = None
        for key in [k for k in groups if k[0] == fraction]:
            members = groups[key]
            row = {"label_fraction": fraction, "arm": key[1], "epochs": key[2]}
            row |= {"n_seeds": len(members), "seeds": sorted(r.seed for r in members)}
            for name in METRICS:
                values = [r.metrics.get(name, math.nan) for r in members]
                row[name], row[f"{name}_std"] = _mean_std(values)
            rows.append(row)
            baseline = baseline or members[0].evaluation["rows"].get(MeanDepthBaseline.name)
        if baseline is not None:
            row = {"label_fraction": fraction, "arm": "mean-depth baseline", "epochs": None,
                   "n_seeds": 0, "seeds": [], **{f"{n}_std": math.nan for n in METRICS}}  # fmt: skip
            rows.append(row | {n: baseline.get(n, math.nan) for n in METRICS})
    return rows


def _cell(mean: float, std: float) -> str:
    std_part = f" ± {std:.3f}" if math.isfinite(std) else ""
    return f"{mean:.3f}{std_part}" if math.isfinite(mean) else "–"


def format_study_table(rows: Sequence[dict], metrics: Sequence[str] = METRICS) -> str:
    """Markdown: one line per summary row, mean ± std over seeds."""
    titles = " | ".join(TITLES[m] for m in metrics)
    lines = [
        f"| labels | initialisation | epochs | seeds | {titles} |",
        "|" + "---|" * (4 + len(metrics)),
    ]
    for r in rows:
        cells = [_cell(r[m], r[f"{m}_std"]) for m in metrics]
        seeds = str(r["n_seeds"]) if r["n_seeds"] else "—"
        epochs = "—" if r["epochs"] is None else str(r["epochs"])
        head = f"| {100 * r['label_fraction']:g}% | {r['arm']} | {epochs} | {seeds} | "
        lines.append(head + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_verdict(
    runs: Sequence, arm: str, versus: str = "scratch", *, label_fraction: float,
    epochs: int | None = None, versus_epochs: int | None = None, metrics: Sequence[str] = METRICS,
) -> dict:  # fmt: skip
    """Is ``arm`` better than ``versus`` at ``label_fraction``? Per metric over the seeds both
    arms have: the paired gains (> 0: ``arm`` is better), :func:`paired_interval` and a verdict.
    ``epochs``/``versus_epochs`` pick the budgets (default: the only one present)."""

    def pick(name, budget):
        chosen = [r for r in runs if r.arm == name and r.label_fraction == label_fraction]
        budgets = sorted({r.epochs for r in chosen})
        if budget is None and len(budgets) > 1:
            raise ConfigError(f"{name} has budgets {budgets} at this fraction; pass epochs=.")
        return {r.seed: r for r in chosen if budget is None or r.epochs == budget}

    mine, theirs = pick(arm, epochs), pick(versus, versus_epochs if versus_epochs else epochs)
    seeds = sorted(set(mine) & set(theirs))
    out = {"arm": arm, "versus": versus, "label_fraction": label_fraction, "seeds": seeds}
    out["metrics"], parts = {}, []
    for name in metrics:
        sign = 1.0 if HIGHER_IS_BETTER[name] else -1.0
        gains = [sign * (mine[s].metrics[name] - theirs[s].metrics[name]) for s in seeds]
        shared = [
            (getattr(mine[s], "pretrain_seed", None), getattr(theirs[s], "pretrain_seed", None))
            for s in seeds
        ]
        shared = [c for c, g in zip(shared, gains, strict=True) if math.isfinite(g)]
        gains = [g for g in gains if math.isfinite(g)]
        clusters = shared if any(a is not None or b is not None for a, b in shared) else None
        if len(gains) < 2 or clusters is not None and len(set(clusters)) < 2:
            out["metrics"][name] = {"n": len(gains), "verdict": "too few paired seeds"}
            parts.append(f"{name}: too few paired seeds ({len(gains)}) or pretraining runs")
            continue
        interval = paired_interval(gains, clusters=clusters)
        low, high = interval["ci"]
        word = "better" if low > 0 else "worse" if high < 0 else "no clear difference"
        out["metrics"][name] = {"n": len(gains), **interval, "verdict": word}
        out["clusters"] = interval["clusters"] if clusters is not None else None
        gain = interval["gain"]
        parts.append(f"{name} {word} (gain {gain:+.3f}, 95% CI [{low:+.3f}, {high:+.3f}])")
    runs_note = f" over {out['clusters']} pretraining runs" if out.get("clusters") else ""
    out["summary"] = (
        f"{arm} vs {versus} at {100 * label_fraction:g}% labels, {len(seeds)} paired seeds"
        f"{runs_note}: " + "; ".join(parts)
    )
    return out


def study_verdicts(runs: Sequence, design, compute_match: dict | None = None) -> list[dict]:
    """Every comparison the study was designed for, each a :func:`paired_verdict` with its
    ``question``: arms (and extra runs: budgets, probes) vs scratch (a frozen probe vs frozen
    scratch), a longer SparK pretraining vs SparK ×1, SparK vs zero-out, SparK at each matched
    budget and ImageNet vs compute-matched scratch, the sweep's arms vs scratch per budget. ``design``: a StudyConfig or its dict;
    ``compute_match``: ``compute_match.json``'s content."""
    d = design if isinstance(design, dict) else dataclasses.asdict(design)
    epochs, arms, out = d["epochs"], d["arms"], []
    present = {(r.arm, r.label_fraction) for r in runs}
    pairs = [(f, [(a, f) for a in arms]) for f in d["label_fractions"]]
    pairs += [(None, [tuple(run) for run in d.get("extra_runs", ())])]
    for fraction, group in pairs:
        for arm, at in group:
            frozen = FROZEN if arm.endswith(FROZEN) else ""
            # a longer SparK pretraining also against SparK ×1: does more of it help?
            for versus in ["scratch" + frozen] + ["spark" + frozen] * arm.startswith("spark×"):
                if arm != versus and (versus, at) in present:
                    v = paired_verdict(runs, arm, versus, label_fraction=at, epochs=epochs)
                    out.append(v | {"question": f"{arm} vs {versus}, {epochs} epochs"})
        if fraction is not None and {"spark", "zero-out"} <= set(arms):
            v = paired_verdict(runs, "spark", "zero-out", label_fraction=fraction, epochs=epochs)
            out.append(v | {"question": "sparse vs zero-out masked pretraining"})
    for key, match in (compute_match or {}).items():
        fraction = next(
            (f for f in d["compute_matched"] if key.startswith(f"labels{100 * f:g}-")), None
        )
        budget = match.get("budget", 1.0)
        spark = "spark" if budget == 1 else f"spark×{budget:g}"
        for arm in [spark] + (["imagenet"] if budget == 1 else []):
            if fraction is None or (arm, fraction) not in present:
                continue
            versus = matched_name(budget)
            v = paired_verdict(runs, arm, versus, label_fraction=fraction, epochs=epochs,
                               versus_epochs=match["epochs"])  # fmt: skip
            v["summary"] = v["summary"].replace(versus, f"{versus}, {match['epochs']} epochs")
            out.append(v | {"question": f"{arm} vs compute-matched scratch"})
    for budget in d["sweep_epochs"]:
        for arm in [a for a in d["sweep_arms"] if a != "scratch"]:
            v = paired_verdict(runs, arm, label_fraction=d["sweep_fraction"], epochs=budget)
            v["summary"] = f"at {budget} epochs: " + v["summary"]
            out.append(v | {"question": f"{arm} vs scratch, {budget} epochs"})
    return out


def pretraining_budget_points(record: dict, runs: Sequence, metric: str = PRIMARY) -> dict:
    """``{label fraction: {arm: [(pretraining min, gain, low, high, budget), ...]}}``: paired gains
    over scratch (:func:`paired_verdict`) against the median over the arm's pretraining runs of
    their typical step time (``typical_s``, see :func:`~depthlib.course.study.typical_seconds`;
    the sum of their epochs in older files);
    SparK's budgets are one arm's points, compute-matched scratch sits at the cost it matched."""
    cost: dict[str, list[float]] = {}
    for name, c in (record.get("pretraining") or {}).items():
        cost.setdefault(name.rsplit("-seed", 1)[0], []).append(c.get("typical_s", c["step_s"]))
    epochs, out = record["study"]["epochs"], {}
    for fraction in record["study"]["label_fractions"]:
        present = sorted({r.arm for r in runs if r.label_fraction == fraction})
        asked = [(a, epochs, *arm_spec(a)[:2]) for a in present
                 if not a.startswith("scratch") and not arm_spec(a)[2]]  # no probes  # fmt: skip
        for key, match in (record.get("compute_match") or {}).items():
            if key.startswith(f"labels{100 * fraction:g}-"):
                budget = match.get("budget", 1.0)  # files made before budgets: 1
                asked.append((matched_name(budget), None, "spark", budget))
        lines: dict[str, list[tuple]] = {}
        for arm, at, base, budget in asked:
            v = paired_verdict(runs, arm, label_fraction=fraction, epochs=at, versus_epochs=epochs,
                               metrics=(metric,))["metrics"][metric]  # fmt: skip
            spent = cost.get(pretrain_name(base, budget, 0).rsplit("-seed", 1)[0], [0.0])
            if "ci" in v:
                label = "scratch, compute-matched" if at is None else base
                point = (statistics.median(spent) / 60, v["gain"], *v["ci"], budget)
                lines.setdefault(label, []).append(point)
        out[fraction] = {k: sorted(v) for k, v in sorted(lines.items())}
    return out


def comparisons_note(verdicts: Sequence[dict], metrics: Sequence[str] = METRICS) -> str:
    """How many intervals a set of verdicts holds, and how to read them: δ1 decides, the rest
    describe; at 95 % each, about one null comparison in twenty excludes 0 by chance."""
    n = len(verdicts)
    return (
        f"{n} comparisons × {len(metrics)} metrics = {n * len(metrics)} intervals. "
        f"{TITLES[PRIMARY].split()[0]} is the primary metric, declared before the runs; the other "
        f"metrics are descriptive. Each interval is 95 %, so among {n} comparisons with no real "
        f"difference about {n / 20:.1f} would still exclude 0 by chance."
    )


# ---------------------------------------------------------------- the results file
def study_settings(profile, study=None) -> dict:
    """Everything that decides the study's numbers: fine-tune, pretraining and rooms settings,
    and (if given) the study's design (arms, fractions, seeds, budgets)."""
    settings = {
        "finetune": dataclasses.asdict(profile.finetune),
        "pretrain": dataclasses.asdict(profile.pretrain),
        "rooms": dataclasses.asdict(profile.rooms) | {"generator_version": GENERATOR_VERSION},
    }
    if study is not None:
        settings["study"] = dataclasses.asdict(study)
    return json.loads(json.dumps(settings))  # tuples as JSON lists, as a results file holds them


def settings_hash(profile, study=None) -> str:
    """A short hash of :func:`study_settings`, for provenance."""
    settings = study_settings(profile, study)
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def results_record(runs: Sequence, profile, study, extra: dict | None = None) -> dict:
    """The study as data: provenance, settings and their hash, and every run's metrics."""
    return {
        "provenance": {
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "machine": f"{os.cpu_count()} cores {platform.machine()}, no GPU"
            if not torch.cuda.is_available()
            else f"GPU {torch.cuda.get_device_name(0)}",
            "torch": torch.__version__,
            **(extra or {}),
        },
        "settings_hash": settings_hash(profile, study),
        "profile_hash": settings_hash(profile),
        "profile": profile.name,
        "study": dataclasses.asdict(study),
        "finetune": dataclasses.asdict(profile.finetune),
        "pretrain": dataclasses.asdict(profile.pretrain),
        "rooms": study_settings(profile)["rooms"],
        "ground_truth": runs[0].evaluation.get("ground_truth") if runs else None,
        "runs": [
            {
                "arm": r.arm,
                "label_fraction": r.label_fraction,
                "epochs": r.epochs,
                "seed": r.seed,
                "pretrain_seed": r.pretrain_seed,
                "metrics": r.metrics,
                "baseline": r.evaluation["rows"].get(MeanDepthBaseline.name),
                "step_s": round(step_seconds(r.run_dir), 1),
            }
            for r in runs
        ],  # fmt: skip
    }


def write_results(path: str | os.PathLike, record: dict) -> Path:
    return atomic_write_text(Path(path), to_json(record))


@dataclasses.dataclass(frozen=True)
class _StoredRun:
    """A run read back from a results file: what tables and verdicts need."""

    arm: str
    label_fraction: float
    epochs: int
    seed: int
    pretrain_seed: int | None
    metrics: dict
    baseline: dict | None
    step_s: float = math.nan

    @property
    def evaluation(self) -> dict:
        return {"rows": {MeanDepthBaseline.name: self.baseline}}


def load_results(
    path: str | os.PathLike, profile=None, study=None, *, strict: bool = True
) -> tuple[dict, list]:
    """``(record, runs)`` from a results file. With ``profile`` given, a file made under other
    fine-tune, pretraining or rooms settings is refused (its numbers would not be this profile's);
    with ``study`` too, also one made under another study design. ``strict=False`` reads it
    anyway and lists those settings in ``record["differs"]``, for a reader who says so."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"No study results at {path}; run benchmarks/bench_transfer.py first.")
    record = json.loads(path.read_text(encoding="utf-8"))
    if profile is not None:
        # Every setting the file records must be this profile's (settings added to the
        # library after the file was written are not in it, and not held against it).
        changed = [
            f"{section}.{key} {value!r} in the file, {now[key]!r} here"
            for section, now in study_settings(profile, study).items()
            for key, value in (record.get(section) or {}).items()
            if key in now and value != now[key]
        ]
        record["differs"] = changed
        if changed and strict:
            raise ConfigError(
                f"{path.name} was made under other settings than the {profile.name} profile's: "
                f"{'; '.join(changed[:4])}; run benchmarks/bench_transfer.py again to measure them."
            )
    fields = _StoredRun.__dataclass_fields__
    runs = [_StoredRun(**{k: r[k] for k in fields if k in r}) for r in record["runs"]]
    return record, runs
