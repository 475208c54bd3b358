"""Failure modes under control: sweep one rooms knob, score models per value, compute each verdict.

A picture cannot tell "worse in the dark" from "worse in this room". So each claim of the course
report gets the rooms knob that controls its factor, the *same* rooms are rendered at every knob
value (paired: the room-to-room spread cancels), and each claim is read on the pixels it talks
about (objects, object boundaries, objects standing out in depth: :mod:`.failure_regions`).

    rows = knob_sweep({"model": run_dir, "baseline": mean_map}, "light", (0.15, 1.0), n_rooms=8)
    claim_verdict(rows, "dark", model="model")["sentence"]
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from depthlib.course.failure_regions import boundary_band, relief_detection, render_labelled_room
from depthlib.course.statistics import bootstrap_ci
from depthlib.data.rooms.scene import DRAW_RANGES, RoomKnobs
from depthlib.depth.metrics import MeanDepthBaseline, MetricAccumulator
from depthlib.errors import ConfigError, DataError
from depthlib.jobs.evaluate import MODEL_ROW
from depthlib.jobs.predict import Predictor
from depthlib.seeds import UNLABELLED_ROOMS

__all__ = [
    "CLAIMS",
    "SWEEP_ROOMS",
    "SWEEP_SEED_OFFSET",
    "Claim",
    "claim_verdict",
    "in_training_draws",
    "knob_sweep",
    "paired_change",
    "prediction_rows",
    "results_rows",
    "rows_by_model",
    "sweep_rooms_for_profile",
    "sweep_rooms_seed",
    "sweep_summary",
    "sweep_table",
]

# Labelled rooms use seed s, the unlabelled pretraining pool s + 1_000_003; sweeps use their own.
SWEEP_SEED_OFFSET = 2 * UNLABELLED_ROOMS + 23  # 2_000_029
# Rooms per knob value: quick keeps nbval under a minute; cpu gives paired CIs of useful width.
SWEEP_ROOMS = {"quick": 4, "cpu": 40, "paper": 100}
MIN_EFFECT = 0.1  # a "material" change: 10% of the measure at the reference value
MEASURE_LABELS = {
    "abs_rel": "AbsRel (whole image)",
    "objects_abs_rel": "AbsRel on object pixels",
    "boundary_abs_rel": "AbsRel at object boundaries",
    "detected": "objects detected (share)",
}
MEASURES = tuple(MEASURE_LABELS)


@dataclasses.dataclass(frozen=True)
class Claim:
    """A claim of the report and its test: the model fails at ``knob=stress`` compared with
    ``reference`` on ``measure`` (a row key); ``fixed`` knobs are forced in every room."""

    key: str
    text: str
    knob: str
    values: tuple[float, ...]
    stress: float
    reference: float
    measure: str
    higher_is_worse: bool = True
    fixed: tuple[tuple[str, float], ...] = ()


CLAIMS: dict[str, Claim] = {
    "dark": Claim(
        "dark", "fails on dark objects in dark regions (the whole room dimmed)", "light",
        (0.15, 0.3, 0.6, 1.0), stress=0.15, reference=1.0, measure="objects_abs_rel",
    ),
    "dark_objects": Claim(
        "dark_objects", "fails on dark objects in dark regions (dark furniture, dim room)",
        "object_albedo", (0.15, 0.3, 0.6, 1.0), stress=0.15, reference=1.0,
        measure="objects_abs_rel", fixed=(("light", 0.3),),
    ),
    "small": Claim(
        "small", "misses small objects", "size_scale",
        (0.5, 0.7, 1.0, 1.3), stress=0.5, reference=1.0, measure="detected",
        higher_is_worse=False,
    ),
    "similar_colour": Claim(
        "similar_colour", "does not separate objects whose colour is similar to the background",
        "contrast", (0.0, 0.25, 0.5, 1.0), stress=0.0, reference=1.0, measure="boundary_abs_rel",
    ),
}  # fmt: skip


def in_training_draws(knob: str, value: float) -> bool:
    """Whether the training rooms' default draws cover ``value`` of ``knob`` (a sweep value
    outside them is an out-of-distribution test as well as a test of the factor)."""
    if knob not in DRAW_RANGES:
        raise ValueError(f"Unknown room knob {knob!r}; the knobs are {', '.join(DRAW_RANGES)}.")
    lo, hi = DRAW_RANGES[knob]
    return lo - 1e-9 <= float(value) <= hi + 1e-9


def sweep_rooms_seed(labelled_seed: int = 0) -> int:
    """Seed of the sweep rooms: disjoint from the labelled set's and the pretraining pool's."""
    return int(labelled_seed) + SWEEP_SEED_OFFSET


def sweep_rooms_for_profile(profile) -> int:
    """Rooms per knob value for a profile (name or Profile); unknown names get the cpu count."""
    return SWEEP_ROOMS.get(getattr(profile, "name", profile), SWEEP_ROOMS["cpu"])


def _image_metrics(pred, gt, region=None) -> dict:
    """abs_rel, delta1 and rmse of one image on ``region`` (NaN when it has no valid pixel)."""
    acc = MetricAccumulator()
    acc.update(pred[None], gt[None], None if region is None else region[None])
    m = acc.per_image[0]
    return {k: math.nan if m is None else m[k] for k in ("abs_rel", "delta1", "rmse")}


def knob_sweep(
    model,
    knob: str,
    values: Sequence[float],
    *,
    n_rooms: int = 8,
    size: tuple[int, int] = (240, 320),
    input_size: tuple[int, int] | None = None,
    fixed: Mapping[str, float] | Sequence[tuple[str, float]] = (),
) -> list[dict]:
    """One row per (model, knob value, room): sweep rooms ``0..n_rooms-1`` rendered at ``size``
    with ``knob`` forced to each value and the ``fixed`` knobs in all of them.

    ``model``: a model, run folder, fitted baseline or :class:`Predictor`, or {name: any of
    these}. ``input_size``: what the networks see (default: a run's training size). Object
    boundaries are one input pixel of the first network wide, the same band for every model.
    Row keys: model, knob, value, room, abs_rel, delta1, rmse, objects_* and boundary_* (the
    same on those pixels), detected (see :func:`relief_detection`), n_counted, object_fraction,
    luminance.
    """
    if knob not in RoomKnobs.names():
        raise ConfigError(
            f"Unknown room knob {knob!r}; choose one of {', '.join(RoomKnobs.names())}."
        )
    values = tuple(float(v) for v in values)
    as_knob = int if knob == "n_objects" else float
    if not values:
        raise ConfigError(f"Give at least one value to sweep {knob!r} over, e.g. (0.2, 1.0).")
    for v in values:  # fails before any rendering, with the valid range in the message
        RoomKnobs(**{knob: as_knob(v)}).validated()
    if int(n_rooms) < 1:
        raise ConfigError(f"n_rooms must be at least 1, got {n_rooms}.")
    models = dict(model) if isinstance(model, Mapping) else {MODEL_ROW: model}
    if not models:
        raise ConfigError("knob_sweep needs at least one model.")
    predictors = {
        name: m if isinstance(m, Predictor) else Predictor(m, input_size or "train")
        for name, m in models.items()
    }
    height, width = (int(v) for v in size)
    sizes = [p.input_size for p in predictors.values() if p.input_size is not None]
    band = max(1, math.ceil(max(height / sizes[0][0], width / sizes[0][1]))) if sizes else 1
    rows, seed = [], sweep_rooms_seed(0)
    for value in values:
        knobs = RoomKnobs(**dict(fixed), **{knob: as_knob(value)})
        rooms = [render_labelled_room(seed, i, height, width, knobs) for i in range(n_rooms)]
        edges = [boundary_band(room["objects"], band) for room in rooms]
        for name, predictor in predictors.items():
            preds = predictor([room["rgb"] for room in rooms])
            for index, (room, pred, edge) in enumerate(zip(rooms, preds, edges, strict=True)):
                gt, objects = room["depth"], room["objects"]
                found, counted = relief_detection(pred, gt, objects, band=band)
                row = {"model": name, "knob": knob, "value": value, "room": index}
                regions = {"": None, "objects_": objects >= 0, "boundary_": edge}
                for prefix, region in regions.items():
                    row |= {prefix + k: v for k, v in _image_metrics(pred, gt, region).items()}
                rows.append(
                    row
                    | {
                        "detected": found / counted if counted else math.nan,
                        "n_counted": counted,
                        "object_fraction": float((objects >= 0).mean()),
                        "luminance": float(room["rgb"].mean() / 255),
                    }
                )
    return rows


def rows_by_model(rows: Sequence[Mapping]) -> dict[str, list[dict]]:
    """Sweep rows grouped by their ``model`` name, in first-seen order."""
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(r["model"], []).append(dict(r))
    return out


def sweep_summary(rows: Sequence[Mapping], measures: Sequence[str] = MEASURES) -> list[dict]:
    """Per (model, value): mean and (unpaired) standard error of each measure over its rooms
    (NaN rooms left out, counted in ``n_<measure>``)."""
    groups: dict[tuple, list[Mapping]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["value"]), []).append(r)
    out = []
    for (name, value), rs in groups.items():
        row = {"model": name, "knob": rs[0]["knob"], "value": value, "n_rooms": len(rs)}
        for m in measures:
            x = np.array([r[m] for r in rs], float)
            x = x[np.isfinite(x)]
            row[m] = float(x.mean()) if x.size else math.nan
            row[m + "_se"] = float(x.std(ddof=1) / np.sqrt(x.size)) if x.size > 1 else math.nan
            row["n_" + m] = int(x.size)
        out.append(row)
    return out


def sweep_table(rows: Sequence[Mapping], measures: Sequence[str] = ("abs_rel",)) -> str:
    """A markdown table: one line per knob value, one column per (model, measure) mean."""
    summary = sweep_summary(rows, measures)
    models = list(dict.fromkeys(r["model"] for r in summary))
    values = sorted({r["value"] for r in summary})
    cell = {(r["model"], r["value"]): r for r in summary}
    knob = summary[0]["knob"] if summary else "value"
    head = [knob] + [f"{m}: {MEASURE_LABELS.get(k, k)}" for m in models for k in measures]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["--:"] * len(head)) + "|"]
    for v in values:
        got = [cell.get((m, v), {}).get(k, math.nan) for m in models for k in measures]
        lines.append("| " + " | ".join([f"{v:g}"] + [f"{x:.3f}" for x in got]) + " |")
    return "\n".join(lines)


def _paired(rows, model, knob, measure, stress, reference) -> dict[int, tuple[float, float]]:
    """room -> (measure at stress, at reference), for rooms with a finite value at both."""
    mine = [r for r in rows if r["knob"] == knob and (model is None or r["model"] == model)]
    models = {r["model"] for r in mine}
    if len(models) > 1:
        raise ConfigError(f"Rows hold several models {sorted(models)}; pass model=one of them.")
    at = {v: {r["room"]: r[measure] for r in mine if r["value"] == v} for v in (stress, reference)}
    for v, by_room in at.items():
        if not by_room:
            present = sorted({r["value"] for r in mine})
            raise DataError(
                f"No {knob}={v} rows{f' for model {model!r}' if model else ''} (values present: "
                f"{present}); sweep over both the stress and the reference value."
            )
    pairs = {k: (at[stress][k], at[reference][k]) for k in set(at[stress]) & set(at[reference])}
    return {k: p for k, p in sorted(pairs.items()) if np.isfinite(p).all()}


def claim_verdict(
    rows: Sequence[Mapping],
    claim: str | Claim,
    *,
    model: str | None = None,
    versus: str | None = None,
    measure: str | None = None,
    min_effect: float = MIN_EFFECT,
) -> dict:
    """Confirmed / detected / refuted / inconclusive from paired rooms, with the numbers.

    d = measure(stress) - measure(reference) per room, signed so that d > 0 means worse; the
    material size is ``min_effect`` times the reference mean. Confirmed: the whole 95% bootstrap
    CI of mean d clears the material size. Refuted: the CI lies below it. Detected: the CI lies
    above 0 but includes the material size (a worsening, of unsettled size). Else inconclusive.
    ``versus``: another model of the rows (e.g. the mean-depth baseline); d is then how much
    more ``model`` gets worse than it in the same room (removes what a knob that changes the
    ground truth does to the measure alone). ``measure``: read another row key than the claim's.
    """
    c = CLAIMS[claim] if isinstance(claim, str) and claim in CLAIMS else claim
    if not 0.0 <= float(min_effect) < 1.0:
        raise ConfigError(
            f"min_effect is a share of the reference value in [0, 1), got {min_effect!r}."
        )
    if not isinstance(c, Claim):
        raise ConfigError(f"Unknown claim {claim!r}; choose one of {', '.join(CLAIMS)}.")
    if measure is not None:
        c = dataclasses.replace(c, measure=measure)
    args = (c.knob, c.measure, float(c.stress), float(c.reference))
    pairs = _paired(rows, model, *args)
    other = _paired(rows, versus, *args) if versus is not None else {}
    rooms = [k for k in pairs if versus is None or k in other]
    stress, ref = (np.array([pairs[k][i] for k in rooms], float) for i in (0, 1))
    sign = 1.0 if c.higher_is_worse else -1.0
    d = sign * (stress - ref)
    if versus is not None:
        d = d - sign * np.array([other[k][0] - other[k][1] for k in rooms], float)
    n = int(d.size)
    out = {
        "claim": c.key, "text": c.text, "knob": c.knob, "measure": c.measure,
        "stress": c.stress, "reference": c.reference, "n_rooms": n, "min_effect": min_effect,
        "versus": versus,
    }  # fmt: skip
    if n < 2:
        out |= {"verdict": "inconclusive", "sentence": f"inconclusive: only {n} paired room(s)."}
        return out
    _, lo, hi = bootstrap_ci(d, n_boot=2000)
    mean_ref, mean_stress = float(ref.mean()), float(stress.mean())
    material = min_effect * abs(mean_ref)
    effect = float(d.mean())
    verdict = "inconclusive"
    if lo > 0 and lo >= material:  # with a material size of 0, still above 0
        verdict = "confirmed"
    elif hi < material or hi <= 0:  # no worsening at all is refuted at any material size
        verdict = "refuted"
    elif lo > 0:
        verdict = "detected"
    out |= {
        "verdict": verdict,
        "mean_reference": mean_ref,
        "mean_stress": mean_stress,
        "mean_worse": effect,  # mean of d: > 0 = worse under stress
        "ci_worse": (lo, hi),
        "paired_std": float(d.std(ddof=1)),
        "relative_change": (mean_stress - mean_ref) / mean_ref if mean_ref else math.nan,
        "stress_in_training": in_training_draws(c.knob, c.stress),
    }
    label = MEASURE_LABELS.get(c.measure, c.measure)
    why = {
        "confirmed": "the whole CI clears the material size",
        "detected": "the CI excludes 0 but includes the material size",
        "refuted": "a worsening of the material size or more lies outside the CI",
        "inconclusive": "the CI includes both 0 and the material size",
    }[verdict]
    if not out["stress_in_training"]:
        why += f"; {c.knob}={c.stress:g} lies outside the training draws"
    change = out["relative_change"]
    out["sentence"] = (
        f"{verdict} ({why}): {label} {mean_ref:.3f} at {c.knob}={c.reference:g} vs "
        f"{mean_stress:.3f} at {c.knob}={c.stress:g} "
        f"({'n/a' if math.isnan(change) else f'{change:+.0%}'}); "
        f"worse-by {effect:+.3f}{f' beyond {versus}' if versus else ''}, 95% "
        f"bootstrap CI [{lo:+.3f}, {hi:+.3f}], paired std {out['paired_std']:.3f}, n={n} rooms; "
        f"material size = {min_effect:.0%} of the reference ({material:.3f})."
    )
    return out


def paired_change(rows, model: str | None, knob: str, measure: str, value: float, reference: float):
    """Mean change of ``measure`` from ``reference`` to ``value``, room by room, with its 95%
    bootstrap CI: ``(mean, low, high)`` (what a sweep figure should draw, not unpaired bars)."""
    pairs = _paired(rows, model, knob, measure, float(value), float(reference))
    if len(pairs) < 2:
        return math.nan, math.nan, math.nan
    return bootstrap_ci([a - b for a, b in pairs.values()], n_boot=2000)


def prediction_rows(models: Mapping, source, indices: Sequence[int]) -> list[dict]:
    """One row per test image for Figures 5-6: ``index``, ``rgb``, ``depth`` (GT), ``valid`` and
    ``predictions`` = {model name: (depth map at GT size, AbsRel)}. ``models``: name -> model,
    run folder or :class:`Predictor`; ``source``: e.g. ``open_depth_dataset(rooms_file, "test")``.
    """
    predictors = {
        name: m if isinstance(m, Predictor) else Predictor(m) for name, m in models.items()
    }
    rows = []
    for i in indices:
        sample = source[int(i)]
        row = {k: sample[k] for k in ("rgb", "depth", "valid")} | {"index": int(sample["index"])}
        row["predictions"] = {}
        for name, predictor in predictors.items():
            pred = predictor([sample["rgb"]])[0]
            abs_rel = _image_metrics(pred, sample["depth"], sample["valid"])["abs_rel"]
            row["predictions"][name] = (pred, abs_rel)
        rows.append(row)
    return rows


def results_rows(runs: Mapping[str, str | os.PathLike], baseline_run: str | None = None) -> dict:
    """Results-table rows (for ``format_table``) from each run's ``evaluation.json``: the model
    row of every run under its name, then the train mean-depth-map baseline of ``baseline_run``
    (default: the first run), which every run evaluates on the same test split."""
    baseline_run = baseline_run or next(iter(runs), None)
    if baseline_run not in runs:
        raise ConfigError(f"baseline_run {baseline_run!r} is not one of the runs {list(runs)}.")
    rows, baseline = {}, None
    for name, run in runs.items():
        path = Path(run) / "evaluation.json"
        if not path.is_file():
            raise DataError(
                f"{path} does not exist: run {name!r} has no final evaluation. Finish its "
                "training (finetune writes it) or run `depthlib evaluate --checkpoint RUN --data FILE --json RUN/evaluation.json`."
            )
        result = json.loads(path.read_text())
        rows[name] = result["rows"][MODEL_ROW]
        if name == baseline_run:
            baseline = result["rows"].get(MeanDepthBaseline.name)
    if baseline is not None:
        rows["mean-depth baseline"] = baseline
    return rows
