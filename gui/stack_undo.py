"""Stack-wide edits in the GUI as one undo step: link, split, propagate (engine.stack_edits).

The engine works out the changes (off the GUI thread, behind a progress dialog with
Cancel) and writes them to every slice as one engine.stack_history.StackStep. Here the
step becomes one QUndoCommand on the current slice's undo stack, so Ctrl+Z there undoes
the whole stack change and Ctrl+Shift+Z / Ctrl+Y redoes it. Undo and redo write through
the engine too (all or nothing); a slice changed since stops them with a message, and the
step then leaves the history (the slices stay as they are, consistent).

The other slices' own undo histories are dropped when a step rewrites them (as for any
file rewritten elsewhere: controller.item_written); the slice on screen keeps its history,
with this step in it, and is read again from disk.
"""
from __future__ import annotations

from typing import Callable, Optional

from PyQt5 import QtWidgets

from engine.errors import CancelledError, MaskLoopError
from engine.stack_history import StackStep, apply_step, commit_step


class StackCommand(QtWidgets.QUndoCommand):
    """One stack-wide step, already written when pushed (the first redo does nothing)."""

    def __init__(self, edits: "StackEdits", step: StackStep) -> None:
        super().__init__(step.text)
        self.edits, self.step = edits, step
        self.ops = step.ops  # gui.undo renames labels in a command's `ops`: the step's ops are shared
        self._pushed = False

    def redo(self) -> None:
        if not self._pushed:
            self._pushed = True
            return
        if not self.edits.replay(self.step, True):
            self.setObsolete(True)

    def undo(self) -> None:
        if not self.edits.replay(self.step, False):
            self.setObsolete(True)


class StackEdits:
    """Runs a stack edit and records it; `after_change()` is called once slices changed."""

    def __init__(self, window, after_change: Callable[[], None]) -> None:
        self.window = window
        self.controller = window.controller
        self.after_change = after_change

    def compute(self, title: str, fn, *args, **kwargs) -> Optional[dict]:
        """fn(project, ..., progress=, cancel=) behind a progress dialog, after saving the
        slice on screen (the engine reads every slice from disk). None when it could not
        run, failed (the error is shown) or was cancelled."""
        from .background import run_with_progress
        c = self.controller
        if c.project is None or c.item_id is None:
            return None
        if not c.flush():
            c.error.emit("the current slice could not be saved; nothing was changed")
            return None
        try:
            return run_with_progress(self.window, title, fn, c.project, *args, **kwargs)
        except CancelledError:
            c.message.emit(f"{title.lower()}: cancelled, nothing changed")
        except MaskLoopError as e:
            c.error.emit(e.one_line())
        return None

    def commit(self, text: str, changes: Optional[dict], select: Optional[list] = None) -> bool:
        """Write the changes as one step and put it on the current slice's undo stack."""
        c = self.controller
        if not changes:
            return False
        try:
            step, saved = commit_step(c.project, text, changes)
        except MaskLoopError as e:
            c.error.emit(e.one_line())   # nothing was written (engine.stack_history)
            return False
        if not step:
            return False
        c.undo_stack.push(StackCommand(self, step))
        self._show(saved, select)
        return True

    def replay(self, step: StackStep, forward: bool) -> bool:
        """Undo (or redo) a step on every slice; False (shown as an error) when it cannot."""
        c = self.controller
        if c.project is None:
            return False
        if not c.flush():
            c.error.emit("the current slice could not be saved; nothing was changed")
            return False
        try:
            saved = apply_step(c.project, step, forward)
        except MaskLoopError as e:
            c.error.emit(e.one_line() + " (the step leaves the undo history)")
            return False
        self._show(saved)
        c.message.emit(f"{'redid' if forward else 'undid'} {step.text.lower()} on {len(saved)} slice(s)")
        return True

    def _show(self, saved: dict, select: Optional[list] = None) -> None:
        c = self.controller
        for item_id, ann in saved.items():
            if item_id != c.item_id:
                c.item_written(item_id, ann)
        if c.item_id in saved:
            c.reload_current(keep_history=True)
        if select is not None:
            c.set_selection(select)
        if saved:
            self.after_change()
