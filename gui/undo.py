"""Undo history: one QUndoStack per item (the most recently visited ones), each command a
list of engine.history ops (bbox-cropped, bit-packed patches) applied when pushed."""
from __future__ import annotations

from collections import OrderedDict
from contextlib import contextmanager
from typing import Callable, Optional

from PyQt5 import QtCore, QtWidgets

from engine.history import Op, rename_label_in_ops

MAX_UNDO_STACKS = 16        # items whose undo history is kept (most recently visited)
UNDO_LIMIT = 300            # commands per item

Replay = Callable[[str, list, bool], None]   # (item id, ops, forward)


class EditCommand(QtWidgets.QUndoCommand):
    """One undo step: ops already applied when pushed (the first redo does nothing)."""

    def __init__(self, replay: Replay, item_id: str, text: str, ops: list[Op]) -> None:
        super().__init__(text)
        self.replay, self.item_id, self.ops = replay, item_id, ops
        self._pushed = False

    def redo(self) -> None:
        if not self._pushed:
            self._pushed = True
            return
        self.replay(self.item_id, self.ops, True)

    def undo(self) -> None:
        self.replay(self.item_id, self.ops, False)


class UndoHistory(QtCore.QObject):
    """The per-item stacks in one QUndoGroup (the window's Undo/Redo actions follow the
    active one). `replay(item_id, ops, forward)` applies a command's ops to the item."""

    def __init__(self, replay: Replay, parent: Optional[QtCore.QObject] = None) -> None:
        super().__init__(parent)
        self.group = QtWidgets.QUndoGroup(self)
        self._replay = replay
        self._stacks: "OrderedDict[str, QtWidgets.QUndoStack]" = OrderedDict()

    def activate(self, item_id: str) -> QtWidgets.QUndoStack:
        """The item's stack (created when new), made the group's active one."""
        stack = self._stacks.get(item_id)
        if stack is None:
            stack = QtWidgets.QUndoStack(self)
            stack.setUndoLimit(UNDO_LIMIT)
            self.group.addStack(stack)
            self._stacks[item_id] = stack
            while len(self._stacks) > MAX_UNDO_STACKS:
                _old_id, old = self._stacks.popitem(last=False)
                self.group.removeStack(old)
                old.deleteLater()
        else:
            self._stacks.move_to_end(item_id)
        self.group.setActiveStack(stack)
        return stack

    def stack(self, item_id: Optional[str]) -> Optional[QtWidgets.QUndoStack]:
        return self._stacks.get(item_id) if item_id else None

    def push(self, item_id: str, text: str, ops: list[Op]) -> None:
        stack = self._stacks.get(item_id) or self.activate(item_id)
        stack.push(EditCommand(self._replay, item_id, text, ops))

    @contextmanager
    def macro(self, item_id: str, text: str):
        """Several commits as one undo step."""
        stack = self._stacks[item_id]
        stack.beginMacro(text)
        try:
            yield
        finally:
            stack.endMacro()

    def has_edits(self, item_id: str) -> bool:
        """True when the item was edited in this session (its history is not empty)."""
        stack = self._stacks.get(item_id)
        return stack is not None and stack.count() > 0

    def forget(self, item_id: str) -> None:
        """The item's file was rewritten elsewhere: its history no longer matches it."""
        stack = self._stacks.get(item_id)
        if stack is not None:
            stack.clear()

    def clear(self) -> None:
        for stack in self._stacks.values():
            self.group.removeStack(stack)
            stack.deleteLater()
        self._stacks.clear()

    def rename_label(self, old: str, new: str) -> None:
        for stack in self._stacks.values():
            for k in range(stack.count()):
                rename_label_in_ops(getattr(stack.command(k), "ops", []), old, new)
                cmd = stack.command(k)
                for j in range(cmd.childCount()):  # macros hold their commands as children
                    rename_label_in_ops(getattr(cmd.child(j), "ops", []), old, new)
