"""The ``depthlib`` command line: one sub-command per job of the course.

Each sub-command is registered by a small ``_add_<name>`` function below and runs a library
function; user mistakes (``DepthlibError``) print a one-paragraph message and exit with status 2.
"""

from __future__ import annotations

import argparse
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
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_synth)


def _run_synth(args) -> int:
    from depthlib.data.rooms import format_summary, parse_knobs, parse_size, summarize, synthesize
    from depthlib.profiles import get_profile

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
        help="describe a labeled.mat-layout file (rooms set or real NYU)",
        description="Print image count, split sizes, image size, depth range over valid pixels, "
        "the raw-depth hole fraction and, for rooms files, the knobs' min/mean/max.",
    )
    p.add_argument("path", help="an HDF5 file in NYU's labeled.mat layout")
    p.add_argument(
        "--max-images",
        type=int,
        default=200,
        help="images read for the depth statistics (default: %(default)s)",
    )
    p.set_defaults(func=_run_info)


def _run_info(args) -> int:
    from depthlib.data.rooms import format_summary, summarize

    print(format_summary(summarize(args.path, max_images=args.max_images)))
    return 0


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
    p.set_defaults(func=_run_reproduce)


def _run_reproduce(args) -> int:
    from depthlib.reproduce import reproduce

    reproduce(args.profile, only=args.only)
    return 0


_COMMANDS: list = [_add_synth, _add_info, _add_reproduce]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
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
