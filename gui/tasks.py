"""Run a long engine call off the GUI thread behind a progress dialog with Cancel.

The callable gets `progress` and `cancel` keyword arguments (engine.jobs conventions).
The window keeps painting meanwhile; the call's exception is re-raised here.
"""
from __future__ import annotations

from typing import Any, Callable

from PyQt5 import QtCore, QtWidgets

from engine.jobs import CancelToken


class _Worker(QtCore.QObject):
    progressed = QtCore.pyqtSignal(int, int, str)
    done = QtCore.pyqtSignal()

    def __init__(self, fn: Callable, args, kwargs, cancel: CancelToken) -> None:
        super().__init__()
        self.fn, self.args, self.kwargs, self.cancel = fn, args, kwargs, cancel
        self.result: Any = None
        self.exc: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.fn(*self.args, progress=self._progress, cancel=self.cancel, **self.kwargs)
        except BaseException as e:  # re-raised on the GUI thread
            self.exc = e
        self.done.emit()

    def _progress(self, done: int, total: int, message: str = "") -> None:
        self.progressed.emit(int(done), int(total), str(message))


def run_with_progress(parent: QtWidgets.QWidget | None, title: str, fn: Callable, *args, **kwargs):
    cancel = CancelToken()
    dialog = QtWidgets.QProgressDialog(title, "Cancel", 0, 0, parent)
    dialog.setWindowTitle(title)
    dialog.setWindowModality(QtCore.Qt.WindowModal)
    dialog.setMinimumDuration(400)
    dialog.setAutoClose(False)
    dialog.setAutoReset(False)
    dialog.canceled.connect(cancel.cancel)
    worker = _Worker(fn, args, kwargs, cancel)
    thread = QtCore.QThread()
    worker.moveToThread(thread)
    loop = QtCore.QEventLoop()

    def on_progress(done: int, total: int, message: str) -> None:
        dialog.setMaximum(max(total, 0))
        dialog.setValue(min(done, total) if total else 0)
        if message:
            dialog.setLabelText(f"{title}\n{message}")

    worker.progressed.connect(on_progress, QtCore.Qt.QueuedConnection)
    worker.done.connect(loop.quit, QtCore.Qt.QueuedConnection)
    thread.started.connect(worker.run)
    thread.start()
    loop.exec_()
    thread.quit()
    thread.wait()
    dialog.close()
    dialog.deleteLater()
    if worker.exc is not None:
        raise worker.exc
    return worker.result
