"""The course's experiment: does SparK pretraining help UNet++ learn depth?

UNet++ is fine-tuned twice under the same budget (the profile's fine-tune recipe with
``TransferConfig.epochs`` epochs; a label subset is repeated so that every epoch has the same
number of steps): once from random weights ("scratch"), once with its encoder initialised from
SparK pretraining on unlabelled images ("spark"). Both are run with all labels and with a small
fraction of them, for several seeds, and scored on the whole test split beside the mean-depth
baseline.

Every run lives in one experiment folder named after a hash of everything that decides its
result (profile sections, data file), so a re-run reuses finished runs, resumes interrupted ones
and never mixes runs made under other settings:

    runs/transfer-<profile>-<hash>/spark/               the pretraining run + encoder.safetensors
    runs/transfer-<profile>-<hash>/<init>-labels<pct>-seed<k>/   one fine-tune run each
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from depthlib.depth.metrics import MeanDepthBaseline
from depthlib.errors import ConfigError, DataError
from depthlib.profiles import DATASET_ENV, Profile, get_profile, runs_dir

__all__ = [
    "INITS",
    "TransferRun",
    "course_data",
    "course_runs",
    "curve_groups",
    "experiment_dir",
    "format_transfer_table",
    "spark_encoder",
    "summarize_transfer",
    "transfer_runs",
    "transfer_verdict",
]

INITS = ("scratch", "spark")
METRICS = ("delta1", "abs_rel", "rmse")
HIGHER_IS_BETTER = {"delta1": True, "abs_rel": False, "rmse": False}


@dataclass(frozen=True)
class TransferRun:
    """One fine-tune run of the experiment (finished: its ``evaluation.json`` exists)."""

    init: str
    label_fraction: float
    seed: int
    run_dir: Path

    @property
    def evaluation(self) -> dict:
        path = self.run_dir / "evaluation.json"
        if not path.is_file():
            raise DataError(
                f"{path} is missing: the run in {self.run_dir} did not finish. Run the "
                "experiment again (finished runs are reused, this one resumes)."
            )
        return json.loads(path.read_text())

    @property
    def metrics(self) -> dict[str, float]:
        return self.evaluation["rows"]["model"]

    @property
    def label(self) -> str:
        return f"{self.init}, {_percent(self.label_fraction)} labels"


def _percent(fraction: float) -> str:
    return f"{100 * fraction:g}%"


def _run_name(init: str, fraction: float, seed: int) -> str:
    return f"{init}-labels{100 * fraction:g}-seed{seed}"


def experiment_dir(profile: Profile, data: str | os.PathLike) -> Path:
    """The experiment's folder: ``runs/transfer-<profile>-<hash of settings and data>``."""
    settings = {
        "finetune": dataclasses.asdict(profile.finetune),
        "pretrain": dataclasses.asdict(profile.pretrain),
        "epochs": profile.transfer.epochs,
        "data": str(Path(data).resolve()),
    }
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
    return runs_dir() / f"transfer-{profile.name}-{digest}"


def course_data(profile: Profile, data: str | os.PathLike | None = None, *, progress=True) -> Path:
    """The labelled file the course trains on: ``data``, else ``$DEPTHLIB_DATASET`` (what
    ``reproduce --data`` sets for the notebooks), else the profile's rooms set."""
    from depthlib.data.rooms import rooms_for_profile

    chosen = data if data is not None else os.environ.get(DATASET_ENV)
    return Path(chosen) if chosen else rooms_for_profile(profile, progress=progress)


def _check_depths(profile: Profile) -> None:
    pre, fine = profile.pretrain, profile.finetune
    if (pre.encoder, pre.encoder_depth) != (fine.encoder, fine.encoder_depth):
        raise ConfigError(
            f"Profile {profile.name!r} pretrains {pre.encoder} with encoder_depth "
            f"{pre.encoder_depth} but fine-tunes {fine.encoder} with encoder_depth "
            f"{fine.encoder_depth}; the SparK encoder only transfers when both match."
        )


def spark_encoder(
    profile: str | Profile | None = None,
    data: str | os.PathLike | None = None,
    *,
    out: str | os.PathLike | None = None,
    progress: bool = True,
) -> Path:
    """The experiment's SparK encoder file, pretrained now unless a finished run exists.

    Unlabelled images: the rooms generator (with its own seed) when ``data`` is the rooms set,
    else the labelled file's train RGB (for real NYU the only in-domain images at hand)."""
    from depthlib.data.rooms import is_rooms_file
    from depthlib.jobs.pretrain import ENCODER_FILENAME, pretrain

    prof = profile if isinstance(profile, Profile) else get_profile(profile)
    _check_depths(prof)
    data_path = course_data(prof, data, progress=progress)
    run_dir = Path(out) if out is not None else experiment_dir(prof, data_path) / "spark"
    encoder = run_dir / ENCODER_FILENAME
    if encoder.is_file():
        return encoder
    source = "rooms" if is_rooms_file(data_path) else data_path
    result = pretrain(source, prof, out=run_dir, resume=True, progress=progress)
    if result.encoder_path is None:
        raise DataError(
            f"SparK pretraining in {run_dir} stopped early ({result.train.stop_reason}); run "
            "the experiment again to resume it."
        )
    return result.encoder_path


def transfer_runs(
    profile: str | Profile | None = None,
    data: str | os.PathLike | None = None,
    *,
    seeds: Sequence[int] | None = None,
    label_fractions: Sequence[float] | None = None,
    inits: Sequence[str] = INITS,
    include_finished: bool = False,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> list[TransferRun]:
    """Run (or reuse) every (label fraction, seed, init) fine-tune of the experiment.

    Defaults come from ``profile.transfer``; ``data`` defaults to :func:`course_data`. With
    ``include_finished`` the seeds also include every seed whose runs all finished earlier
    (e.g. the benchmark's extra seeds), so tables show everything measured."""
    from depthlib.jobs.finetune import finetune

    prof = profile if isinstance(profile, Profile) else get_profile(profile)
    unknown = sorted(set(inits) - set(INITS))
    if unknown or not inits:
        raise ConfigError(f"inits must be some of {INITS}, got {list(inits)}.")
    if "spark" in inits:
        _check_depths(prof)
    seeds = tuple(prof.transfer.seeds if seeds is None else seeds)
    fractions = tuple(prof.transfer.label_fractions if label_fractions is None else label_fractions)
    if not seeds or not fractions:
        raise ConfigError("The experiment needs at least one seed and one label fraction.")
    data_path = course_data(prof, data, progress=progress)
    root = experiment_dir(prof, data_path)
    if include_finished:
        seeds = tuple(sorted(set(seeds) | set(_finished_seeds(root, fractions, inits))))
    encoder = spark_encoder(prof, data_path, progress=progress) if "spark" in inits else None
    runs = []
    for fraction in fractions:
        for seed in seeds:
            for init in inits:
                run = TransferRun(
                    init, float(fraction), int(seed), root / _run_name(init, fraction, seed)
                )
                if not (run.run_dir / "evaluation.json").is_file():
                    echo(f"fine-tune {run.label}, seed {seed} -> {run.run_dir}")
                    finetune(
                        data_path,
                        prof,
                        encoder_weights=encoder if init == "spark" else None,
                        out=run.run_dir,
                        resume=True,
                        label_fraction=fraction,
                        seed=seed,
                        epochs=prof.transfer.epochs,
                        progress=progress,
                    )
                runs.append(run)
    return runs


def _finished_seeds(root: Path, fractions, inits) -> list[int]:
    """Seeds whose runs under ``root`` all finished, for every fraction and init."""
    found = set()
    for path in root.glob("*-seed*/evaluation.json"):
        found.add(int(path.parent.name.rsplit("-seed", 1)[1]))
    return [
        seed
        for seed in found
        if all(
            (root / _run_name(i, f, seed) / "evaluation.json").is_file()
            for f in fractions
            for i in inits
        )
    ]


def course_runs(profile: str | Profile | None = None, data=None, *, progress: bool = True):
    """The two models the course looks at: ``{"scratch": run_dir, "spark": run_dir}``, all
    labels, the profile's first seed (trained now unless the experiment already made them)."""
    prof = profile if isinstance(profile, Profile) else get_profile(profile)
    runs = transfer_runs(
        prof, data, seeds=prof.transfer.seeds[:1], label_fractions=(1.0,), progress=progress
    )
    return {run.init: run.run_dir for run in runs}


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else math.nan
    return mean, std


def summarize_transfer(runs: Iterable[TransferRun]) -> list[dict]:
    """One row per (label fraction, init) — mean and sample std over seeds of each metric — and
    one mean-depth baseline row per label fraction (fitted on the whole train split)."""
    groups: dict[tuple[float, str], list[TransferRun]] = {}
    for run in runs:
        groups.setdefault((run.label_fraction, run.init), []).append(run)
    rows = []
    for fraction in sorted({f for f, _ in groups}, reverse=True):
        baseline = None
        for init in INITS:
            members = groups.get((fraction, init))
            if not members:
                continue
            row = {"label_fraction": fraction, "init": init, "n_seeds": len(members)}
            row["seeds"] = sorted(r.seed for r in members)
            for name in METRICS:
                row[name], row[f"{name}_std"] = _mean_std([r.metrics[name] for r in members])
            rows.append(row)
            baseline = baseline or members[0].evaluation["rows"].get(MeanDepthBaseline.name)
        if baseline is not None:
            row = {"label_fraction": fraction, "init": "mean-depth baseline", "n_seeds": 0}
            row |= {name: baseline[name] for name in METRICS}
            row |= {f"{name}_std": math.nan for name in METRICS}
            rows.append(row)
    return rows


def _cell(mean: float, std: float) -> str:
    return f"{mean:.3f}" if math.isnan(std) else f"{mean:.3f} ± {std:.3f}"


def format_transfer_table(rows: Sequence[dict]) -> str:
    """The experiment's table in Markdown (mean ± std over seeds)."""
    lines = [
        "| labels | initialisation | seeds | δ1 ↑ | AbsRel ↓ | RMSE (m) ↓ |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        cells = [_cell(row[m], row[f"{m}_std"]) for m in METRICS]
        seeds = str(row["n_seeds"]) if row["n_seeds"] else "—"
        lines.append(
            f"| {_percent(row['label_fraction'])} | {row['init']} | {seeds} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines)


def transfer_verdict(rows: Sequence[dict], label_fraction: float) -> dict:
    """Is SparK-init better than scratch by more than one standard deviation (the larger of the
    two groups' stds) on each metric, at ``label_fraction``? Needs at least 2 seeds per group."""
    by_init = {r["init"]: r for r in rows if r["label_fraction"] == label_fraction}
    if not {"scratch", "spark"} <= set(by_init):
        raise ConfigError(
            f"No scratch and SparK rows at {_percent(label_fraction)} labels; run the experiment "
            "with that label fraction."
        )
    scratch, spark = by_init["scratch"], by_init["spark"]
    result = {"label_fraction": label_fraction, "metrics": {}}
    for name in METRICS:
        gain = spark[name] - scratch[name]
        if not HIGHER_IS_BETTER[name]:
            gain = -gain
        std = max(scratch[f"{name}_std"], spark[f"{name}_std"])
        result["metrics"][name] = {
            "scratch": scratch[name],
            "spark": spark[name],
            "gain": gain,  # > 0: SparK better
            "std": std,
            "beyond_one_std": bool(not math.isnan(std) and gain > std),
        }
    checks = [m["beyond_one_std"] for m in result["metrics"].values()]
    result["spark_better_beyond_one_std"] = all(checks)
    if min(scratch["n_seeds"], spark["n_seeds"]) < 2:
        result["summary"] = (
            f"{_percent(label_fraction)} labels: one seed per group, so no standard deviation "
            "and no verdict (run more seeds: benchmarks/bench_transfer.py)"
        )
    else:
        verdict = "better" if all(checks) else "not better"
        result["summary"] = (
            f"SparK-init is {verdict} than scratch by more than one std at "
            f"{_percent(label_fraction)} labels ("
            + ", ".join(
                f"{n}: {m['spark']:.3f} vs {m['scratch']:.3f} ± {m['std']:.3f}"
                for n, m in result["metrics"].items()
            )
            + ")"
        )
    return result


def curve_groups(runs: Iterable[TransferRun]) -> dict[str, list[Path]]:
    """Run folders grouped by "init, labels" — the input of
    :func:`depthlib.viz.training.plot_learning_curves`."""
    groups: dict[str, list[Path]] = {}
    for run in sorted(runs, key=lambda r: (-r.label_fraction, INITS.index(r.init), r.seed)):
        groups.setdefault(run.label, []).append(run.run_dir)
    return groups
