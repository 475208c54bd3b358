"""The course's central question: does pretraining help UNet++ learn depth, and which kind?

Every arm fine-tunes the same UNet++ (the profile's encoder, depth, decoder and recipe); they differ
only in where the encoder starts:

- ``scratch``: random weights;
- ``imagenet``: the packaged ImageNet weights (the course report's recipe);
- ``spark``: SparK pretraining on unlabelled rooms, from random weights;
- ``imagenet+spark``: SparK continued from the ImageNet weights (the kind of transfer SparK's
  paper is about);
- ``zero-out``: the same masked pretraining with a dense encoder on zero-filled patches (same
  masks, densifier, decoder, loss and budget): notebook 02's lesson, tested downstream;
- ``scratch (compute-matched)``: scratch fine-tuned for as many extra epochs as SparK's
  pretraining cost in training-step time, measured (median step times over runs).

An arm's name can say more: ``spark×4`` pretrains for 4 times the profile's epochs (the
pretraining-budget sweep), and ``... (frozen)`` trains only the decoder on the encoder as it
starts (the probe of what a representation holds, free of the fine-tuning confound).

Runs are paired: fine-tune seed ``k`` fixes the decoder start, label subset and batch order in
every arm, and uses pretraining seed ``pretrain_seeds[k % n]``. Runs live in a folder named after
a hash of what decides their result (settings and data), so reproduce, notebooks and the
benchmark share them, an interrupted study resumes, and other settings are never mixed in::

    runs/study-<profile>-<hash>/pretrain/<arm>-seed<p>/              encoder.safetensors
    runs/study-<profile>-<hash>/<arm>-labels<pct>-epochs<E>-seed<k>/  evaluation.json
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from depthlib.atomic import atomic_write_text, to_json
from depthlib.errors import ConfigError, DataError
from depthlib.profiles import DATASET_ENV, Profile, StudyConfig, get_profile, runs_dir

__all__ = [
    "ARMS",
    "FROZEN",
    "MATCHED",
    "arm_spec",
    "StudyRun",
    "compute_matched_epochs",
    "curve_groups",
    "course_data",
    "data_identity",
    "finished_course_run",
    "course_runs",
    "pretrained_encoder",
    "run_name",
    "run_study",
    "study_dir",
]

# arm -> the pretraining it starts from (PretrainConfig changes), or the weights it loads directly
ARMS: dict[str, dict] = {
    "scratch": {"weights": "random"},
    "imagenet": {"weights": "imagenet"},
    "spark": {"pretrain": {"masking": "sparse", "encoder_weights": "random"}},
    "imagenet+spark": {"pretrain": {"masking": "sparse", "encoder_weights": "imagenet"}},
    "zero-out": {"pretrain": {"masking": "zero-out", "encoder_weights": "random"}},
}
MATCHED = "scratch (compute-matched)"
FROZEN = " (frozen)"


def arm_spec(arm: str) -> tuple[str, float, bool]:
    """An arm's name read: ``"spark×4 (frozen)"`` → ``("spark", 4.0, True)``: the initialisation,
    its pretraining budget (times the profile's pretraining epochs) and whether the encoder
    stays frozen while the decoder trains."""
    frozen = arm.endswith(FROZEN)
    name = arm[: -len(FROZEN)] if frozen else arm
    base, times, budget = name.partition("×")
    try:
        budget_value = float(budget) if times else 1.0
    except ValueError:
        budget_value = -1.0
    if base not in ARMS or budget_value <= 0 or (times and "pretrain" not in ARMS[base]):
        pretrained = [a for a in ARMS if "pretrain" in ARMS[a]]
        raise ConfigError(
            f"Unknown study arm {arm!r}: use one of {list(ARMS)}, a pretrained one with a budget "
            f"(e.g. '{pretrained[0]}×4' for {pretrained}), optionally followed by '{FROZEN}'."
        )
    return base, budget_value, frozen


def matched_name(budget: float) -> str:
    """The compute-matched scratch arm for SparK at ``budget``."""
    return MATCHED if budget == 1 else f"scratch (compute-matched to spark×{budget:g})"


@dataclass(frozen=True)
class StudyRun:
    """One fine-tune run of the study (finished once its ``evaluation.json`` exists)."""

    arm: str
    label_fraction: float
    epochs: int
    seed: int
    pretrain_seed: int | None
    run_dir: Path

    @property
    def done(self) -> bool:
        return (self.run_dir / "evaluation.json").is_file()

    @property
    def evaluation(self) -> dict:
        if not self.done:
            raise DataError(
                f"{self.run_dir / 'evaluation.json'} is missing: the run did not finish. Run the "
                "study again (finished runs are reused, this one resumes)."
            )
        return json.loads((self.run_dir / "evaluation.json").read_text())

    @property
    def metrics(self) -> dict[str, float]:
        return self.evaluation["rows"]["model"]

    @property
    def label(self) -> str:
        return f"{self.arm}, {100 * self.label_fraction:g}% labels"


def data_identity(path: str | os.PathLike) -> str:
    """What the data file *is*, not where it lies: a SHA-256 of its content (cached per size and
    modification time). A moved file keeps its study; a rewritten one starts a new one."""
    path = Path(path).resolve()
    stat = path.stat()
    return _content_digest(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _content_digest(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def study_dir(profile: Profile, data: str | os.PathLike) -> Path:
    """``runs/study-<profile>-<hash of the fine-tune and pretraining settings and the data>``."""
    settings = {
        "finetune": dataclasses.asdict(profile.finetune),
        "pretrain": dataclasses.asdict(profile.pretrain),
        "data": data_identity(data),
    }
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
    return runs_dir() / f"study-{profile.name}-{digest}"


def course_data(profile: Profile, data: str | os.PathLike | None = None, *, progress=True) -> Path:
    """The labelled file the course trains on: ``data``, else ``$DEPTHLIB_DATASET`` (what
    ``reproduce --data`` sets for the notebooks), else the profile's rooms set."""
    from depthlib.data.rooms import rooms_for_profile

    chosen = data if data is not None else os.environ.get(DATASET_ENV)
    return Path(chosen) if chosen else rooms_for_profile(profile, progress=progress)


def _check_same_encoder(profile: Profile) -> None:
    pre, fine = profile.pretrain, profile.finetune
    if (pre.encoder, pre.encoder_depth) != (fine.encoder, fine.encoder_depth):
        raise ConfigError(
            f"Profile {profile.name!r} pretrains {pre.encoder} with encoder_depth "
            f"{pre.encoder_depth} but fine-tunes {fine.encoder} with encoder_depth "
            f"{fine.encoder_depth}; a pretrained encoder only transfers when both match."
        )


def pretrained_encoder(
    profile: str | Profile | None,
    data: str | os.PathLike | None = None,
    arm: str = "spark",
    seed: int = 0,
    *,
    progress: bool = True,
) -> Path:
    """The encoder file of ``arm``'s pretraining with ``seed`` (pretrained now unless done).
    Unlabelled images: the rooms generator when ``data`` is a rooms set, else its train RGB."""
    from depthlib.data.rooms import is_rooms_file
    from depthlib.jobs.pretrain import ENCODER_FILENAME, pretrain

    prof = profile if isinstance(profile, Profile) else get_profile(profile)
    _check_same_encoder(prof)
    base, budget, _ = arm_spec(arm)
    if "pretrain" not in ARMS[base]:
        pretrained = [name for name, a in ARMS.items() if "pretrain" in a]
        raise ConfigError(f"{arm!r} is not a pretrained arm; choose one of {pretrained}.")
    data_path = course_data(prof, data, progress=progress)
    run_dir = study_dir(prof, data_path) / "pretrain" / pretrain_name(base, budget, seed)
    if (run_dir / ENCODER_FILENAME).is_file():
        return run_dir / ENCODER_FILENAME
    source = "rooms" if is_rooms_file(data_path) else data_path
    epochs = max(1, round(prof.pretrain.epochs * budget))
    changes = ARMS[base]["pretrain"] | {"seed": seed, "epochs": epochs}
    result = pretrain(source, prof, out=run_dir, resume=True, progress=progress, **changes)
    if result.encoder_path is None:
        raise DataError(
            f"Pretraining in {run_dir} stopped early ({result.train.stop_reason}); run the study "
            "again to resume it."
        )
    return result.encoder_path


def pretrain_name(base: str, budget: float, seed: int) -> str:
    """A pretraining run's folder: ``spark-seed0`` at the profile's budget, ``spark-x4-seed0``."""
    return f"{base}-seed{seed}" if budget == 1 else f"{base}-x{budget:g}-seed{seed}"


def step_seconds(run_dir: Path, typical: bool = False) -> float:
    """Training-step time of a finished run: the sum of its epochs' step time (no validation);
    ``typical``: the median epoch's × the epochs (see :func:`typical_seconds`)."""
    from depthlib.train.runlog import read_run_rows

    times = [row["epoch_time_s"] for row in read_run_rows(run_dir)[1]]
    return typical_seconds(times) if typical else float(sum(times))


def typical_seconds(epoch_times) -> float:
    """What a run costs when nothing else runs: its median epoch time × its epochs. Another job
    on the machine slows some epochs of a run, and the median of its epochs ignores them."""
    return float(statistics.median(epoch_times) * len(epoch_times)) if epoch_times else 0.0


def compute_matched_epochs(epochs: int, pretrain_s: float, finetune_epoch_s: float) -> int:
    """Fine-tune epochs that give scratch the step time of pretraining + ``epochs`` epochs."""
    if finetune_epoch_s <= 0 or pretrain_s < 0:
        raise ConfigError(f"need measured step times, got {pretrain_s} s and {finetune_epoch_s} s.")
    return int(epochs + round(pretrain_s / finetune_epoch_s))


def _matched_epochs(root: Path, runs: list[StudyRun], fraction: float, epochs: int,
                    budget: float = 1.0) -> int:  # fmt: skip
    """Measured once per study, label fraction and SparK budget, from the median step times of
    scratch's runs and of SparK's pretraining runs at that budget, then kept in
    ``compute_match.json`` (a new timing would move the matched runs to another epoch count)."""
    path = root / "compute_match.json"
    known = json.loads(path.read_text()) if path.is_file() else {}
    key = f"labels{100 * fraction:g}-epochs{epochs}" + ("" if budget == 1 else f"-spark×{budget:g}")
    if key not in known:
        scratch = [
            r for r in runs if (r.arm, r.label_fraction, r.epochs) == ("scratch", fraction, epochs)
        ]
        spark = sorted({r.pretrain_seed for r in runs if r.pretrain_seed is not None
                        and arm_spec(r.arm)[:2] == ("spark", budget)})  # fmt: skip
        if not scratch or not spark:
            raise ConfigError(
                f"compute matching needs scratch and spark×{budget:g} runs at "
                f"{100 * fraction:g}% labels in the study."
            )
        # medians over epochs and runs: another job on the machine slows some; they move nothing
        per_epoch = statistics.median(step_seconds(r.run_dir, True) / epochs for r in scratch)
        pretrain_s = statistics.median(
            step_seconds(root / "pretrain" / pretrain_name("spark", budget, p), True) for p in spark
        )
        known[key] = {
            "pretrain_step_s": round(pretrain_s, 1),
            "finetune_epoch_step_s": round(per_epoch, 2),
            "epochs": compute_matched_epochs(epochs, pretrain_s, per_epoch),
            "budget": budget,
        }
        atomic_write_text(path, to_json(known))
    return int(known[key]["epochs"])


def run_name(arm: str, fraction: float, epochs: int, seed: int) -> str:
    """A study run's folder name, e.g. ``imagenet-labels100-epochs5-seed0``."""
    return f"{arm}-labels{100 * fraction:g}-epochs{epochs}-seed{seed}".replace(" ", "_")


def finished_course_run(profile: Profile, arm: str = "imagenet", data=None) -> Path | None:
    """The course's ``arm`` model (all labels, first seed, main budget) if the study has
    finished it, else None: nothing is trained (notebook 00 shows a picture instead)."""
    st = profile.study
    path = course_data(profile, data, progress=False)
    run = study_dir(profile, path) / run_name(arm, 1.0, st.epochs, st.seeds[0])
    return run if StudyRun(arm, 1.0, st.epochs, st.seeds[0], None, run).done else None


def run_study(
    profile: str | Profile | None = None,
    data: str | os.PathLike | None = None,
    study: StudyConfig | None = None,
    *,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    after_each: Callable[[list[StudyRun]], None] | None = None,
) -> list[StudyRun]:
    """Run (or reuse) every fine-tune of ``study`` (default: ``profile.study``, the lean version
    ``reproduce`` runs): the main table (arms x label fractions x seeds at ``epochs``), the extra
    runs (budgets, probes), the fine-tune budget sweep (``sweep_arms`` x ``sweep_epochs`` x
    ``sweep_seeds`` at ``sweep_fraction``) and, if asked, compute-matched scratch runs. Returns
    them, main table first; ``after_each(runs so far)`` is called after every run."""
    from depthlib.jobs.finetune import finetune

    prof = profile if isinstance(profile, Profile) else get_profile(profile)
    st = study or prof.study
    if not st.arms or not st.seeds or not st.label_fractions:
        raise ConfigError(f"A study needs arms, seeds and label fractions; got {st}.")
    specs = {a: arm_spec(a) for a in (*st.arms, *st.sweep_arms, *(a for a, _ in st.extra_runs))}
    if any("pretrain" in ARMS[base] for base, _, _ in specs.values()):
        _check_same_encoder(prof)
    if any(f not in st.label_fractions for f in st.compute_matched):
        raise ConfigError(f"compute_matched {st.compute_matched} must be among label_fractions.")
    data_path = course_data(prof, data, progress=progress)
    root = study_dir(prof, data_path)

    def run(arm: str, fraction: float, epochs: int, seed: int) -> StudyRun:
        base, _, frozen = arm_spec(arm)
        pretrained = "pretrain" in ARMS[base]
        name = run_name(arm, fraction, epochs, seed)
        p_seed = st.pretrain_seeds[seed % len(st.pretrain_seeds)] if pretrained else None
        result = StudyRun(arm, float(fraction), int(epochs), int(seed), p_seed, root / name)
        if result.done:
            return result
        weights = ARMS[base].get("weights")
        if weights is None:
            weights = str(pretrained_encoder(prof, data_path, arm, p_seed, progress=progress))
        echo(f"fine-tune {result.label}, {epochs} epochs, seed {seed} -> {name}")
        job = finetune(data_path, prof, out=result.run_dir, resume=True, encoder_weights=weights,
                       label_fraction=fraction, seed=seed, epochs=epochs, progress=progress,
                       freeze_encoder=frozen or None)  # fmt: skip
        if job.interrupted:  # a stop signal ends the study too, not just this run
            raise KeyboardInterrupt(f"study stopped during {name}; run it again to continue")
        return result

    plan = [(a, f, st.epochs, s) for f in st.label_fractions for a in st.arms for s in st.seeds]
    plan += [(a, f, st.epochs, s) for a, f in st.extra_runs for s in st.seeds]
    plan += [(a, st.sweep_fraction, e, s) for e in st.sweep_epochs for a in st.sweep_arms
             for s in st.sweep_seeds]  # fmt: skip
    runs: list[StudyRun] = []
    for step in dict.fromkeys(plan):
        runs.append(run(*step))
        if after_each is not None:
            after_each(runs)  # e.g. write the partial results file: a long study survives a stop
    for fraction in st.compute_matched:
        for budget in st.matched_budgets:
            matched = _matched_epochs(root, runs, fraction, st.epochs, budget)
            for seed in st.seeds if st.matched_seeds is None else st.matched_seeds:
                done = run("scratch", fraction, matched, seed)
                runs.append(dataclasses.replace(done, arm=matched_name(budget)))
                if after_each is not None:
                    after_each(runs)
    return runs


def course_runs(
    profile: str | Profile | None = None, data=None, arms: Sequence[str] = ("scratch", "spark", "imagenet"),
    *, progress: bool = True,
) -> dict[str, Path]:  # fmt: skip
    """The models the course looks at: ``{arm: run folder}`` with all labels, the study's first
    seed and main budget (trained now unless the study already made them)."""
    prof = profile if isinstance(profile, Profile) else get_profile(profile)
    lean = dataclasses.replace(prof.study, arms=tuple(arms), label_fractions=(1.0,),
                               seeds=prof.study.seeds[:1], sweep_epochs=(), compute_matched=())  # fmt: skip
    return {run.arm: run.run_dir for run in run_study(prof, data, lean, progress=progress)}


def curve_groups(runs: Sequence[StudyRun]) -> dict[str, list[Path]]:
    """Run folders grouped by "arm, labels" (one budget each) — the input of
    :func:`depthlib.viz.training.plot_learning_curves`."""
    groups: dict[str, list[Path]] = {}
    for run in sorted(runs, key=lambda r: (-r.label_fraction, list(ARMS).index(r.arm)
                                           if r.arm in ARMS else 99, r.epochs, r.seed)):  # fmt: skip
        groups.setdefault(f"{run.label}, {run.epochs} epochs", []).append(run.run_dir)
    return groups
