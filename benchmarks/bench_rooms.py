"""Rendering speed of the procedural rooms set: rooms per second, end to end and per room.

Target: NYU's 1449 images at 240x320 in at most 60 s on 2 cores, written to the labeled.mat
layout with splits (what ``depthlib synth`` does). Also times single-process rendering of a few
rooms, so the per-room cost can be compared across machines.

    python benchmarks/bench_rooms.py                     # 1449 rooms at 240x320, all cores
    python benchmarks/bench_rooms.py --n 200 --size 120x160 --workers 1
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from depthlib.data.rooms import default_workers, parse_size, render_room, synthesize

TARGET_SECONDS = 60.0  # for 1449 rooms at 240x320 on 2 cores


def cpu_seconds() -> float:
    """User + system time of this process and its finished children (the render workers)."""
    own, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1449)
    parser.add_argument("--size", default="240x320", help="HEIGHTxWIDTH")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None, help="default: all usable cores")
    parser.add_argument("--single", type=int, default=30, help="rooms timed in one process")
    args = parser.parse_args(argv)
    height, width = parse_size(args.size)
    workers = args.workers or default_workers()

    render_room(args.seed, 0, height, width)  # warm-up (caches the camera grid)
    start = time.perf_counter()
    for i in range(args.single):
        render_room(args.seed, i, height, width)
    per_room = (time.perf_counter() - start) / max(args.single, 1)
    print(f"one process: {1000 * per_room:.1f} ms per room at {height}x{width}")

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rooms.mat"
        start, cpu = time.perf_counter(), cpu_seconds()
        synthesize(path, args.n, (height, width), args.seed, workers=workers, progress=False)
        seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
        size_mb = path.stat().st_size / 2**20
    print(
        f"synthesize: {args.n} rooms at {height}x{width} with {workers} worker(s): "
        f"{seconds:.1f} s, {args.n / seconds:.1f} rooms/s, file {size_mb:.0f} MB"
    )
    print(
        f"CPU time of all processes: {cpu:.1f} s, i.e. >= {cpu / workers:.1f} s wall on "
        f"{workers} otherwise idle core(s)"
    )
    if (args.n, height, width) == (1449, 240, 320):
        verdict = "meets" if seconds <= TARGET_SECONDS else "misses"
        print(f"{verdict} the target of {TARGET_SECONDS:.0f} s (2 cores; shared CPUs run slower)")


if __name__ == "__main__":
    main()
