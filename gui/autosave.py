"""Saving the item on screen: the autosave timer, writes off the GUI thread, and changes
made on disk by another program (never overwritten silently).

An edit reaches disk within AUTOSAVE_MS (plus the write) through Project.save_annotation,
an atomic write. Autosave writes a snapshot on a Background thread so the window never
stalls on PNG encoding; explicit saves (Ctrl+S, switching items, closing) are synchronous.
"""
from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Callable, Optional

from PyQt5 import QtCore

from engine.errors import MaskLoopError

from .background import Background

AUTOSAVE_MS = 1000          # an edit reaches disk at most this long (plus the write) after it
RETRY_MS = 5000             # after a failed save

Stamp = Optional[tuple[int, int, int]]


def file_stamp(path: Path) -> Stamp:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _reason(e: BaseException) -> str:
    return e.one_line() if isinstance(e, MaskLoopError) else str(e)


class Autosave(QtCore.QObject):
    """Saving state of the controller's current item (reads controller.project, item_id,
    annotation; reports through the controller's signals)."""

    def __init__(self, controller, parent: Optional[QtCore.QObject] = None) -> None:
        super().__init__(parent)
        self.c = controller
        self.dirty = False
        self.conflict = False
        self.background = True      # False: autosave writes on the GUI thread (simpler to follow)
        #: Called with the item id when its file changed on disk while there are unsaved
        #: edits; returns "reload" (take theirs), "overwrite" (keep mine) or "later".
        self.conflict_resolver: Optional[Callable[[str], str]] = None
        self._stamp: Stamp = None
        self._edit_seq = 0
        self._pending: Optional[int] = None   # token of the write in flight
        self._pending_future = None
        self._tokens = itertools.count(1)
        self._timer = QtCore.QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self.autosave_now)
        self._watcher = QtCore.QFileSystemWatcher(self)
        self._watcher.fileChanged.connect(self._on_disk_change)
        self._watcher.directoryChanged.connect(self._on_disk_change)
        self._writer = Background("autosave")

    # ------------------------------------------------------------------ state
    @property
    def writing(self) -> bool:
        """A background write is in flight."""
        return self._pending is not None

    def _path(self) -> Path:
        return self.c.project.annotation_path(self.c.item_id)

    def set_dirty(self, value: bool) -> None:
        if value != self.dirty:
            self.dirty = value
            self.c.dirtyChanged.emit(value)

    def loaded(self) -> None:
        """A new item (or its file again) is on screen: remember its file's stamp, watch it."""
        self._timer.stop()
        self.conflict = False
        for f in self._watcher.files():
            self._watcher.removePath(f)
        self._stamp = file_stamp(self._path())
        self._watch()
        self.set_dirty(False)

    def closed(self) -> None:
        self._timer.stop()
        paths = self._watcher.directories() + self._watcher.files()
        if paths:
            self._watcher.removePaths(paths)
        self.conflict = False
        self.set_dirty(False)

    @property
    def save_delay_ms(self) -> int:
        """How long after an edit the pending save was scheduled (the timer's interval)."""
        return self._timer.interval()

    def edited(self) -> None:
        """An edit was applied: save it soon."""
        self._edit_seq += 1
        self.set_dirty(True)
        if not self._timer.isActive():
            self._timer.start(AUTOSAVE_MS)

    # ------------------------------------------------------------------ writing
    def autosave_now(self) -> None:
        """What the timer does: write the current item in the background if it is dirty."""
        c = self.c
        if not self.dirty or c.annotation is None or self.conflict:
            return
        if not self.background:
            if not self.save() and not self.conflict:
                self._timer.start(RETRY_MS)
            return
        if self._pending is not None:  # one write at a time; this edit goes next
            self._timer.start(200)
            return
        if file_stamp(self._path()) != self._stamp:
            self._resolve()
            return
        project, item_id, seq = c.project, c.item_id, self._edit_seq
        snapshot = c.annotation.copy()
        token = next(self._tokens)

        def write():
            try:
                project.save_annotation(snapshot)
            except (MaskLoopError, OSError) as e:
                return (token, item_id, seq, None, _reason(e), snapshot)
            return (token, item_id, seq, file_stamp(project.annotation_path(item_id)), None, snapshot)

        self._pending = token
        self._pending_future = self._writer.submit(write, on_done=self._write_done)

    def finish_pending(self) -> None:
        """Let a background write finish and take its result (before any other save)."""
        if self._pending is not None:
            self._write_done(self._pending_future.result())

    def _write_done(self, result) -> None:
        token, item_id, seq, stamp, err, snapshot = result
        if self._pending != token:
            return  # already taken by finish_pending
        self._pending = self._pending_future = None
        c = self.c
        if err is not None:
            c.saveFailed.emit(item_id, err)
            if item_id == c.item_id and self.dirty and not self._timer.isActive():
                self._timer.start(RETRY_MS)
            return
        if item_id == c.item_id:
            self._stamp = stamp
            self._watch()
            if seq == self._edit_seq:
                self.set_dirty(False)
            elif not self._timer.isActive():
                self._timer.start(AUTOSAVE_MS)
        c.item_written(item_id, snapshot, current=True)
        c.saved.emit(item_id)
        if item_id == c.item_id:
            self._on_disk_change("")  # anything written by others meanwhile?

    def save(self) -> bool:
        """Write the current item if it has unsaved edits; True when nothing is unsaved."""
        self.finish_pending()
        self._timer.stop()
        if not self.dirty or self.c.annotation is None:
            return True
        if self.conflict:
            return False
        if file_stamp(self._path()) != self._stamp:
            return self._resolve()
        return self.write_now()

    def write_now(self) -> bool:
        """Write the current item synchronously, whatever is on disk."""
        c = self.c
        item_id, ann = c.item_id, c.annotation
        try:
            c.project.save_annotation(ann, overwrite=True)
        except (MaskLoopError, OSError) as e:
            c.saveFailed.emit(item_id, _reason(e))
            return False
        self._stamp = file_stamp(self._path())
        self._watch()
        self.set_dirty(False)
        c.item_written(item_id, ann, current=True)
        c.saved.emit(item_id)
        return True

    def _watch(self) -> None:
        path = str(self._path())
        if path not in self._watcher.files() and os.path.exists(path):
            self._watcher.addPath(path)
        ad = str(self.c.project.annotations_dir)
        if ad not in self._watcher.directories() and os.path.isdir(ad):
            self._watcher.addPath(ad)

    # ------------------------------------------------------------------ changes on disk
    def check_disk(self) -> None:
        """Compare the current item's file with what was loaded or saved last."""
        self._on_disk_change("")

    def _on_disk_change(self, _path: str) -> None:
        c = self.c
        if c.project is None or c.item_id is None or self._pending is not None:
            return  # (our own write in flight: checked again when it is done)
        path = self._path()
        if os.path.exists(path) and str(path) not in self._watcher.files():
            self._watcher.addPath(str(path))  # replaced files drop out of the watch list
        if file_stamp(path) == self._stamp or self.conflict:
            return
        if not self.dirty:
            c.reload_current()
            c.externalChange.emit(c.item_id, "reloaded")
            c.message.emit(f"{c.item_id}: changed on disk by another program; reloaded")
        else:
            self._resolve()

    def _resolve(self) -> bool:
        """The file changed under unsaved edits: ask; never overwrite without an answer."""
        c = self.c
        item_id = c.item_id
        self.conflict = True
        answer = self.conflict_resolver(item_id) if self.conflict_resolver else "later"
        if item_id != c.item_id:
            return False
        if answer in ("reload", "overwrite"):
            return self.resolve(answer)
        c.externalChange.emit(item_id, "conflict")
        c.message.emit(f"{item_id}: changed on disk by another program; your edits are not saved "
                       "until you choose (File > Resolve conflict)")
        return False

    def resolve(self, answer: str) -> bool:
        """Answer a held conflict: "reload" (take theirs) or "overwrite" (keep mine)."""
        if not self.conflict:
            return True
        c = self.c
        if answer == "reload":
            self.conflict = False
            c.reload_current()
            c.externalChange.emit(c.item_id, "reloaded")
            return True
        if answer == "overwrite":
            self.conflict = False
            ok = self.write_now()
            if ok:
                c.externalChange.emit(c.item_id, "overwritten")
            return ok
        return False

    def shutdown(self) -> None:
        self.finish_pending()
        self._writer.shutdown()
