"""Progress and cancel: the only way long work reports and stops.

Long functions take `progress` (a callable `progress(done, total, message)`) and
`cancel` (a CancelToken). Both are optional; the engine never prints on its own.
"""
from __future__ import annotations

import sys
import threading
import time
from typing import Callable, Optional

from .errors import CancelledError

ProgressFn = Callable[[int, int, str], None]


class CancelToken:
    """Thread-safe flag a GUI or signal handler sets and the worker polls."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise CancelledError()


def report(progress: Optional[ProgressFn], done: int, total: int, message: str = "") -> None:
    if progress is not None:
        progress(done, total, message)


def check(cancel: Optional[CancelToken]) -> None:
    if cancel is not None:
        cancel.raise_if_cancelled()


class TerminalProgress:
    """A one-line progress bar on stderr; silent when stderr is not a terminal."""

    def __init__(self, label: str = "", stream=None, force: bool = False) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = force or (hasattr(self.stream, "isatty") and self.stream.isatty())
        self.start = time.monotonic()
        self._last = 0.0

    def __call__(self, done: int, total: int, message: str = "") -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if done < total and now - self._last < 0.1:
            return
        self._last = now
        width = 30
        frac = done / total if total else 1.0
        bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
        elapsed = now - self.start
        eta = elapsed / frac - elapsed if frac > 0 else 0.0
        self.stream.write(f"\r{self.label} [{bar}] {done}/{total} eta {eta:5.0f}s {message[:40]:<40}")
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()
