"""Graceful interruption: Ctrl-C, Jupyter's "interrupt kernel" or ``kill`` during training.

Python's default SIGINT handler raises ``KeyboardInterrupt`` wherever the program happens to be,
possibly in the middle of an optimizer step or a checkpoint write. While :class:`StopSignals` is
active, the first SIGINT or SIGTERM only records a request; the training loop finishes the current
step, writes a checkpoint and returns. A second Ctrl-C still aborts at once (the last complete
checkpoint stays intact because checkpoints are written atomically). The previous handlers are
restored on exit. Handlers can only be installed from the main thread; elsewhere this is inert.
"""

from __future__ import annotations

import signal
import threading

__all__ = ["StopSignals"]


class StopSignals:
    """While active, the first SIGINT/SIGTERM only sets ``reason`` (``"SIGINT"``/``"SIGTERM"``)."""

    def __init__(self):
        self.reason: str | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame):
        if self.reason is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: abort now
        self.reason = signal.Signals(signum).name

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False
