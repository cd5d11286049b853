"""The one way the GUI runs work off its thread (DESIGN.md section 7).

A `Background` is one named worker thread with a queue (a single-worker executor): jobs
run in order, `submit` returns a concurrent.futures.Future, and `on_done`/`on_error`
callbacks — and anything a job `post`s, e.g. progress — run on the GUI thread (a queued
Qt signal). Inference (warm model), image prefetch, autosave writes and project-wide
tasks behind a progress dialog all use it; training is a child process (gui.loop.runner).
"""
from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Optional

from PyQt5 import QtCore, QtWidgets

from engine.jobs import CancelToken


class _Relay(QtCore.QObject):
    """Carries callables to the thread it lives in (the GUI thread) by a queued signal."""
    deliver = QtCore.pyqtSignal(object)


class Background:
    """One worker thread. Not tied to a window's QObjects: the relay it posts through lives
    until shutdown(), so a worker finishing after its window was closed never emits into a
    deleted Qt object."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"maskloop-{name}")
        # parented to the application: deleted on the GUI thread (in shutdown, or at exit),
        # never by the last reference dropping in a worker thread
        self._relay = _Relay(QtCore.QCoreApplication.instance())
        self._relay.deliver.connect(self._run_posted, QtCore.Qt.QueuedConnection)
        self._closed = False
        self._lock = threading.Lock()   # a post never races shutdown's deleteLater

    def submit(self, fn: Callable, *args, on_done: Optional[Callable[[Any], None]] = None,
               on_error: Optional[Callable[[BaseException], None]] = None, **kwargs) -> Future:
        """Queue fn(*args, **kwargs); its result (or exception) goes to the callbacks on the
        GUI thread. A job cancelled before it started calls neither; after shutdown() a job
        is not run (its future comes back cancelled)."""
        try:
            if self._closed:
                raise RuntimeError("closed")
            fut = self._executor.submit(fn, *args, **kwargs)
        except RuntimeError:    # closed, or the executor refuses at interpreter exit
            fut = Future()
            fut.cancel()
            return fut
        if on_done is not None or on_error is not None:
            def finished(f: Future) -> None:
                if f.cancelled():
                    return
                exc = f.exception()
                if exc is None and on_done is not None:
                    self.post(lambda: on_done(f.result()))
                elif exc is not None and on_error is not None:
                    self.post(lambda: on_error(exc))
            fut.add_done_callback(finished)
        return fut

    def post(self, callback: Callable[[], None]) -> None:
        """Run callback on the GUI thread (callable from any thread)."""
        with self._lock:
            if not self._closed:
                self._relay.deliver.emit(callback)

    def _run_posted(self, callback) -> None:
        if not self._closed:
            callback()

    def shutdown(self, wait: bool = False) -> None:
        """Stop taking jobs (queued ones are dropped, nothing more is delivered). Call it
        on the GUI thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._executor.shutdown(wait=wait, cancel_futures=True)
        self._relay.deleteLater()


def run_with_progress(parent: Optional[QtWidgets.QWidget], title: str, fn: Callable, *args, **kwargs):
    """fn(*args, progress=, cancel=, **kwargs) on a Background thread behind a modal progress
    dialog with Cancel; returns its result or raises its exception here. The window keeps
    painting meanwhile (the dialog's own event loop)."""
    cancel = CancelToken()
    worker = Background("task")
    dialog = QtWidgets.QProgressDialog(title, "Cancel", 0, 0, parent)
    dialog.setWindowTitle(title)
    dialog.setWindowModality(QtCore.Qt.WindowModal)
    dialog.setMinimumDuration(400)
    dialog.setAutoClose(False)
    dialog.setAutoReset(False)
    dialog.canceled.connect(cancel.cancel)
    outcome: dict = {}
    loop = QtCore.QEventLoop()

    def on_progress(done: int, total: int, message: str = "") -> None:
        def show() -> None:
            dialog.setMaximum(max(int(total), 0))
            dialog.setValue(min(int(done), int(total)) if total else 0)
            if message:
                dialog.setLabelText(f"{title}\n{message}")
        worker.post(show)

    def finish(key: str, value) -> None:
        outcome[key] = value
        loop.quit()

    worker.submit(fn, *args, progress=on_progress, cancel=cancel, **kwargs,
                  on_done=lambda r: finish("result", r), on_error=lambda e: finish("error", e))
    if not outcome:
        loop.exec_()
    worker.shutdown(wait=True)
    dialog.close()
    dialog.deleteLater()
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("result")
