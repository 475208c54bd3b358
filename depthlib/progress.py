"""Progress bars that suit where the output goes.

In a terminal or a notebook: tqdm's live bar. Written to a log file or a pipe (CI, ``nohup``,
``| tee``) a live bar is thousands of carriage-return frames in one line, so there the same calls
print one plain line every tenth of the way (and at the end) instead.
"""

from __future__ import annotations

import sys
import time

from tqdm.auto import tqdm

__all__ = ["progress_bar", "write"]


def _live() -> bool:
    return "ipykernel" in sys.modules or sys.stderr.isatty()


def progress_bar(iterable=None, **kwargs):
    """``tqdm(iterable, **kwargs)`` on a terminal or in a notebook, else a :class:`LineBar`."""
    if kwargs.get("disable") or _live():
        return tqdm(iterable, **kwargs)
    return LineBar(iterable, **kwargs)


def write(message: str) -> None:
    """Print a line without breaking a live bar."""
    if _live():
        tqdm.write(message)
    else:
        print(message, flush=True)


class LineBar:
    """The part of tqdm's interface the course uses, printing a line per tenth of ``total``."""

    def __init__(self, iterable=None, total=None, desc="", unit="it", initial=0, **_ignored):
        self.iterable, self.desc, self.unit = iterable, desc or "", unit
        self.total = len(iterable) if total is None and hasattr(iterable, "__len__") else total
        self.n = self.start_n = int(initial)
        self.postfix, self.t0 = "", time.monotonic()
        self.next_tenth = self._tenth() + 1

    def _tenth(self) -> int:
        return int(10 * self.n / self.total) if self.total else 0

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.total and self._tenth() >= self.next_tenth:
            self.next_tenth = self._tenth() + 1
            self._print()

    def _print(self) -> None:
        rate = (self.n - self.start_n) / max(time.monotonic() - self.t0, 1e-9)
        share = f"{100 * self.n / self.total:3.0f}% " if self.total else ""
        count = f"{self.n}/{self.total}" if self.total else str(self.n)
        tail = f", {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {share}{count} {self.unit}, {rate:.2f} {self.unit}/s{tail}",
              file=sys.stderr, flush=True)  # fmt: skip

    def set_description(self, desc: str) -> None:
        self.desc = desc

    def set_postfix(self, **values) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def write(self, message: str) -> None:
        print(message, flush=True)  # messages on stdout, like tqdm.write; bars on stderr

    def close(self) -> None:
        if self.total and self.n < self.total and self.n > self.start_n:
            self._print()  # where it stopped
