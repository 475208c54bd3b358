"""The ``depthlib`` command line: one sub-command per job of the course, each running a library
function; the training commands get one flag per field of their settings (:mod:`depthlib.profiles`).
User mistakes (``DepthlibError``) print a one-paragraph message and exit with status 2."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from types import NoneType

from depthlib.errors import DepthlibError

PROFILE_HELP = "quick | cpu | paper (default: $DEPTHLIB_PROFILE or cpu)"


def build_parser() -> argparse.ArgumentParser:
    what = "Single-image depth estimation with SparK and UNet++ (NYU Depth V2 protocol)."
    parser = argparse.ArgumentParser(prog="depthlib", description=what)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_synth, _add_info, _add_reproduce, _add_training, _add_evaluate, _add_predict):
        add(sub)
    return parser


def _command(sub, name: str, run, help: str, description: str) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help, description=description)
    parser.set_defaults(func=run)
    return parser


def _add_synth(sub) -> None:
    p = _command(
        sub, "synth", _run_synth, "render the procedural RGB-D rooms set in NYU's labeled.mat layout",
        "Render procedural indoor rooms (RGB, exact depth, Kinect-like raw depth, per-image knobs) "
        "into an HDF5 file in NYU's labeled.mat layout plus <stem>_splits.mat. Unset options come "
        "from the profile's rooms settings.",
    )  # fmt: skip
    p.add_argument("--out", default="data/rooms.mat", help="output file (default: %(default)s)")
    p.add_argument("--n", type=int, help="number of rooms (profile default)")
    p.add_argument("--size", help="HEIGHTxWIDTH in pixels, e.g. 240x320 (profile default)")
    p.add_argument("--seed", type=int, help="dataset seed (profile default)")
    n_train = "training images (default: NYU's 795/1449 share; past 1449 rooms, the first 1449"
    n_train += " split 795/654 and every further room trains)"
    p.add_argument("--n-train", type=int, help=n_train)
    knob = "force a scene factor in every room, e.g. light=0.2 (repeatable)"
    p.add_argument("--knob", action="append", default=[], metavar="NAME=VALUE", help=knob)
    p.add_argument("--workers", type=int, help="rendering processes (default: all usable cores)")
    p.add_argument("--profile", help=PROFILE_HELP)
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _run_synth(args) -> int:
    from depthlib.atomic import refuse_overwrite
    from depthlib.data.info import dataset_summary, format_dataset_summary
    from depthlib.data.rooms import parse_knobs, parse_size, synthesize
    from depthlib.profiles import get_profile

    refuse_overwrite(args.out, args.overwrite, "A typo here could erase a dataset.")
    cfg = get_profile(args.profile).rooms
    size = parse_size(args.size) if args.size else (cfg.height, cfg.width)
    n, seed = cfg.n if args.n is None else args.n, cfg.seed if args.seed is None else args.seed
    knobs, progress = parse_knobs(args.knob), not args.quiet
    path = synthesize(args.out, n, size, seed, n_train=args.n_train, knobs=knobs,
                      workers=args.workers, progress=progress)  # fmt: skip
    print(format_dataset_summary(dataset_summary(path)))
    return 0


def _add_info(sub) -> None:
    p = _command(
        sub, "info", _run_info,
        "describe a dataset: a labeled.mat-layout file or a folder export's list",
        "Print image count, split sizes, image size, depth range over valid pixels, the hole "
        "fraction and, for rooms files, the knobs' min/mean/max; for a DenseDepth CSV or BTS "
        "list: pairs, image size, depth scale, depth range, holes and its test list.",
    )  # fmt: skip
    p.add_argument("path", help="a labeled.mat-layout HDF5 file, a DenseDepth .csv or a BTS .txt")
    reads = "images read for the depth statistics (default: %(default)s)"
    p.add_argument("--max-images", type=int, default=200, help=reads)


def _run_info(args) -> int:
    from depthlib.data.info import dataset_summary, format_dataset_summary

    summary = dataset_summary(args.path, max_images=args.max_images)
    print(format_dataset_summary(summary))
    if summary.get("split_warning"):  # the file prints, but training on it would fail
        print(f"depthlib info: {summary['split_warning']}", file=sys.stderr)
        return 2
    return 0


def _add_reproduce(sub) -> None:
    p = _command(
        sub, "reproduce", _run_reproduce,
        "run the whole course (data, figures, training, evaluation), cached by stage",
        "Run every stage of the course for a profile; finished stages are skipped.",
    )  # fmt: skip
    p.add_argument("--profile", help=PROFILE_HELP)
    only = "run only this stage (repeatable)"
    p.add_argument("--only", action="append", metavar="STAGE", help=only)
    p.add_argument("--data", help="labelled file to train and evaluate on instead of the rooms "
                   "set (real NYU: nyu_depth_v2_labeled.mat with splits.mat beside it)")  # fmt: skip
    p.add_argument("--update-notebooks", action="store_true", help="also write the executed "
                   "notebooks back into notebooks/ (cpu profile only)")  # fmt: skip


def _run_reproduce(args) -> int:
    from depthlib.course.reproduce import reproduce

    reproduce(args.profile, only=args.only, data=args.data, update_notebooks=args.update_notebooks)
    return 0


def _add_training(sub) -> None:
    """``pretrain`` and ``finetune``: a data source, a run folder, the run flags, and one flag per
    scalar field of the job's settings (``--epochs``, ...); unset, it keeps the profile's value."""
    from depthlib.profiles import FinetuneConfig, PretrainConfig

    p = _command(
        sub, "pretrain", _run_pretrain,
        "SparK-pretrain the UNet++ encoder on unlabelled images and export it",
        "Masked image modeling (SparK) of the encoder UNet++ fine-tunes, on the shared training "
        "loop (progress, checkpoints, --resume). Writes <out>/encoder.safetensors for `depthlib "
        "finetune --encoder-weights`. Unset options come from the profile.",
    )  # fmt: skip
    p.add_argument("--data", default="rooms", help="'rooms' (the generator, with a seed of its "
                   "own: never the labelled images), a labelled .mat/.h5 file (its train split's "
                   "RGB), a folder export's list (DenseDepth .csv or BTS .txt) or a folder of "
                   ".png/.jpg images (default: %(default)s)")  # fmt: skip
    _add_run_flags(p, PretrainConfig, "spark")
    p = _command(
        sub, "finetune", _run_finetune,
        "train the UNet++ depth model on a labelled set and print its metric table",
        "Supervised UNet++ depth training on the train split (a labelled file is preloaded, a "
        "folder export streams), validated each epoch on a seeded held-out share of the train "
        "split, checkpointed every epoch (--resume). Ends with the protocol's metrics on the "
        "whole test split beside the train-set mean depth map and median baselines. Unset "
        "options come from the profile.",
    )  # fmt: skip
    p.add_argument("--data", help="a labeled .mat/.h5 with a split file (default: the profile's "
                   "rooms set), or a folder export's train list (DenseDepth nyu2_train.csv, BTS "
                   "train list), streamed")  # fmt: skip
    test = "the folder export's test list (default: the one beside the train list)"
    p.add_argument("--test-data", help=test)
    _add_run_flags(p, FinetuneConfig, "finetune")


def _add_run_flags(p, settings: type, job: str) -> None:
    p.add_argument("--out", help=f"run folder (default: runs/{job}-<encoder>-<profile>)")
    p.add_argument("--profile", help=PROFILE_HELP)
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--overwrite", action="store_true", help="delete a previous run in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    hints = typing.get_type_hints(settings)
    for f in dataclasses.fields(settings):
        kinds = [k for k in typing.get_args(hints[f.name]) or [hints[f.name]] if k is not NoneType]
        if not set(kinds) <= {int, float, str, bool}:
            continue  # tuples (e.g. decoder widths) are set in profiles
        extra = dict(f.metadata)
        flag = extra.pop("flag", f.name).replace("_", "-")
        if kinds == [bool]:
            extra["action"] = argparse.BooleanOptionalAction
        else:
            extra.setdefault("metavar", flag.upper().replace("-", "_"))
            extra["type"] = (lambda s: int(s) if s.isdigit() else s) if len(kinds) > 1 else kinds[0]
        p.add_argument(f"--{flag}", dest=f.name, default=None, **extra)
    p.set_defaults(settings=settings)


def _job_arguments(args) -> dict:
    """The job's keyword arguments: run flags, and the settings given on the command line."""
    settings = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(args.settings)}
    return dict(out=args.out, resume=args.resume, overwrite=args.overwrite,
                progress=not args.quiet, **settings)  # fmt: skip


def _run_pretrain(args) -> int:
    from depthlib.jobs.pretrain import load_reconstructions, pretrain
    from depthlib.viz import save_figure
    from depthlib.viz.training import reconstruction_figure

    result = pretrain(args.data, args.profile, **_job_arguments(args))
    if result.encoder_path is None:  # fit already said why and where the checkpoint is
        return 130 if result.interrupted else 0
    folder = result.run_dir / "reconstructions"
    for epoch, recon in load_reconstructions(result.run_dir).items():
        title = f"SparK reconstructions, epoch {epoch}"
        save_figure(reconstruction_figure(recon, title), f"epoch_{epoch:04d}", folder)
    said = f"Reconstructions of each epoch: {folder}/epoch_*.png"
    print(result.encoder_path if args.quiet else said)
    return 0


def _run_finetune(args) -> int:
    from depthlib.jobs.finetune import finetune

    result = finetune(args.data, args.profile, test_data=args.test_data, **_job_arguments(args))
    if result.interrupted:
        return 130  # fit said where the checkpoint is and how to resume
    if ev := result.evaluation:
        print(f"\n{ev['split']} split of {ev['data']} ({ev['n_images']} images):\n{ev['table']}")
    print(f"run folder: {result.run_dir}")
    return 0


def _add_evaluate(sub) -> None:
    p = _command(
        sub, "evaluate", _run_evaluate,
        "metric table of a checkpoint on a dataset split, beside train-set baselines",
        "NYU protocol: prediction resized to the GT size and clipped, valid (1e-3, 10) m, metrics "
        "per image then averaged; Eigen crop automatic (on for real NYU 480x640, off for the "
        "rooms set). Baselines are fitted on the train split of the data. DBE is scored at the "
        "ground truth's resolution (θ = 10·W/640 px) on the edges of the hole-filled depth.",
    )  # fmt: skip
    p.add_argument("--checkpoint", required=True, help="run folder or one checkpoint folder")
    p.add_argument("--data", required=True, help="labeled .mat/.h5, DenseDepth .csv or BTS .txt")
    p.add_argument("--split", default="test", choices=("train", "test", "all"))
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    p.add_argument("--which", default="latest", choices=("latest", "best"), help="run checkpoint")
    p.add_argument("--eigen-crop", action=argparse.BooleanOptionalAction, help="force on/off")
    p.add_argument("--ground-truth", choices=("raw", "filled"), help="a labelled file's rawDepths, "
                   "holes invalid (default, as BTS/AdaBins) or hole-filled depths (as DenseDepth); "
                   "a folder export is scored on its one depth and takes neither")  # fmt: skip
    p.add_argument(
        "--median-scaling", action="store_true",
        help="scale each prediction to the GT's median first (scale-free; not NYU's protocol)",
    )  # fmt: skip
    p.add_argument("--input-size", help="network input HxW (default: the training size)")
    p.add_argument("--train-data", help="train list for baselines of a one-split folder export")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-images", type=int, help="evenly spaced subset, for a quick look")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _run_evaluate(args) -> int:
    from depthlib.atomic import refuse_overwrite
    from depthlib.jobs.evaluate import evaluate
    from depthlib.jobs.predict import parse_input_size

    if args.json:
        refuse_overwrite(args.json, args.overwrite)
    size = parse_input_size(args.input_size)
    result = evaluate(
        args.checkpoint, args.data, args.split, eigen_crop=args.eigen_crop, out=args.json,
        batch_size=args.batch_size, input_size=size if isinstance(size, tuple) else None,
        which=args.which, train_data=args.train_data, max_images=args.max_images,
        progress=not args.quiet, median_scaling=args.median_scaling, ground_truth=args.ground_truth,
    )  # fmt: skip
    crop = "Eigen crop" if result["eigen_crop"] else "no crop"
    crop += ", median-scaled" if args.median_scaling else ""
    where = f"{args.split} split of {args.data} ({result['n_images']} images, {crop})"
    print(f"{result['checkpoint']} on the {where}:\n{result['table']}")
    for note in result["notes"]:
        print(f"note: {note}")
    return 0


def _add_predict(sub) -> None:
    p = _command(
        sub, "predict", _run_predict,
        "depth maps for images: 16-bit PNG in millimetres + colourised PNG",
        "Writes <name>_depth.png (uint16 mm) and <name>_depth_color.png (turbo, near blue to far "
        "red, per-image 2-98% range) per image, any size. Unreadable files are skipped and "
        "listed; the exit status is 1 if any was skipped.",
    )  # fmt: skip
    p.add_argument("inputs", nargs="+", metavar="IMG_OR_DIR", help="image files or folders")
    p.add_argument("--checkpoint", required=True, help="run folder or one checkpoint folder")
    p.add_argument("--out", required=True, help="output folder")
    size = "'train' (the checkpoint's training size), 'native' or HxW (default: %(default)s)"
    p.add_argument("--input-size", default="train", help=size)
    p.add_argument("--which", default="latest", choices=("latest", "best"), help="run checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace depth maps already in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _run_predict(args) -> int:
    from depthlib.jobs.predict import write_depth_maps

    report = write_depth_maps(
        args.inputs, args.checkpoint, args.out, input_size=args.input_size, which=args.which,
        progress=not args.quiet, overwrite=args.overwrite,
    )  # fmt: skip
    print(report.summary())
    return 1 if report.skipped else 0


def main(argv: list[str] | None = None) -> int:
    from depthlib.train.distributed import torchrun_process

    args = build_parser().parse_args(argv)
    try:
        with torchrun_process():
            result = args.func(args)
    except DepthlibError as err:
        print(f"depthlib {args.command}: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"depthlib {args.command}: interrupted.", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
