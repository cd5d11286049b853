"""Magic wand: a click floods the connected region whose raw values lie within the
tolerance of the clicked pixel (engine.classic.flood_fill); the region becomes a new
instance or is added to the selected one (Shift+click: always new). The tolerance is a
percentage of the displayed range (the window's width), so 10 % means the same on an
8-bit photo and on a 0…25000 CT slice (engine.editing.wand_tolerance)."""
from __future__ import annotations

from PyQt5 import QtCore

from .base import Tool


class MagicWandTool(Tool):
    name = "wand"
    label = "Magic wand"
    tip = "Click: flood fill from the pixel within the tolerance (% of the displayed range)"
    cursor = QtCore.Qt.PointingHandCursor

    def press(self, event, pos) -> bool:
        if event.button() != QtCore.Qt.LeftButton:
            return False
        x, y = self.pixel(pos)
        tolerance = self.controller.wand_tolerance(self.canvas.tolerance / 100.0)
        self.controller.magic_wand(x, y, tolerance,
                                   new=bool(event.modifiers() & QtCore.Qt.ShiftModifier))
        return True
