"""``depthlib reproduce``: the course's main job as a list of cached stages.

Each stage is a function of the profile that returns a short summary line; stages cache their own
outputs (the rooms file, run folders, figures), so a second run skips what is done. The time spent
in each stage is printed, because the cpu profile has a budget.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from depthlib.profiles import Profile, get_profile


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[Profile], str]


def _rooms(profile: Profile) -> str:
    from depthlib.data.rooms import format_summary, rooms_for_profile, summarize

    path = rooms_for_profile(profile)
    return format_summary(summarize(path))


STAGES: list[Stage] = [Stage("rooms dataset", _rooms)]


def reproduce(profile: str | Profile | None = None, *, only: list[str] | None = None, echo=print):
    """Run every stage (or those named in ``only``) and return ``{stage: seconds}``."""
    prof = profile if isinstance(profile, Profile) else get_profile(profile)
    timings: dict[str, float] = {}
    stages = [s for s in STAGES if not only or s.name in only]
    echo(f"depthlib reproduce — profile {prof.name}, {len(stages)} stage(s)")
    for i, stage in enumerate(stages, 1):
        echo(f"[{i}/{len(stages)}] {stage.name} ...")
        start = time.perf_counter()
        summary = stage.run(prof)
        timings[stage.name] = time.perf_counter() - start
        echo(summary)
        echo(f"[{i}/{len(stages)}] {stage.name}: done in {timings[stage.name]:.1f} s")
    echo("time per stage: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    return timings
