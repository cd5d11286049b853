"""Select: a click picks the top instance under the cursor; Tab cycles through the ones
overlapping at that point; Shift or Ctrl+click adds or removes (to merge, delete ...)."""
from __future__ import annotations

from PyQt5 import QtCore

from .base import Tool


class SelectTool(Tool):
    name = "select"
    label = "Select"
    tip = "Click: pick the top instance; Tab: next one under the same point; Shift/Ctrl+click: add or remove"
    cursor = QtCore.Qt.ArrowCursor

    def __init__(self, canvas) -> None:
        super().__init__(canvas)
        self._hits: list[str] = []
        self._k = 0

    def press(self, event, pos) -> bool:
        if event.button() != QtCore.Qt.LeftButton:
            return False
        x, y = self.pixel(pos)
        hits = self.canvas.instances_at(x, y)   # instances the score slider hides are not picked
        mods = event.modifiers()
        if mods & (QtCore.Qt.ShiftModifier | QtCore.Qt.ControlModifier):
            if hits:
                sel = list(self.controller.selection)
                if hits[0] in sel:
                    sel.remove(hits[0])
                else:
                    sel.append(hits[0])
                self.controller.set_selection(sel)
            return True
        self._hits, self._k = hits, 0
        self.controller.set_selection(hits[:1])
        return True

    def key_press(self, event) -> bool:
        key = event.key()
        if key not in (QtCore.Qt.Key_Tab, QtCore.Qt.Key_Backtab):
            return False
        step = -1 if key == QtCore.Qt.Key_Backtab or event.modifiers() & QtCore.Qt.ShiftModifier else 1
        ctl = self.controller
        if len(self._hits) > 1 and ctl.selection[:1] == [self._hits[self._k]]:
            self._k = (self._k + step) % len(self._hits)
            ctl.set_selection([self._hits[self._k]])
            return True
        # nothing overlapping under the last click: walk through all instances
        ids = [i.id for i in (ctl.annotation.instances if ctl.annotation else [])]
        if not ids:
            return True
        cur = ctl.selection[0] if ctl.selection and ctl.selection[0] in ids else None
        k = (ids.index(cur) + step) % len(ids) if cur else (0 if step > 0 else len(ids) - 1)
        self._hits = []
        ctl.set_selection([ids[k]])
        return True
