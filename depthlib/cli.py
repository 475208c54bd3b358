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


_COMMANDS: list = []


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
