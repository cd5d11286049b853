"""Magic wand: a click floods the connected region whose raw values lie within the
tolerance of the clicked pixel (engine.classic.flood_fill); the region becomes a new
instance or is added to the selected one (Shift+click: always new)."""
from __future__ import annotations

from PyQt5 import QtCore

from .base import Tool


class MagicWandTool(Tool):
    name = "wand"
    label = "Magic wand"
    shortcut = "W"
    tip = "Click: flood fill from the pixel within the tolerance (raw units, HU for CT)"
    cursor = QtCore.Qt.PointingHandCursor

    def press(self, event, pos) -> bool:
        if event.button() != QtCore.Qt.LeftButton:
            return False
        x, y = self.pixel(pos)
        self.controller.magic_wand(x, y, self.canvas.tolerance,
                                   new=bool(event.modifiers() & QtCore.Qt.ShiftModifier))
        return True
