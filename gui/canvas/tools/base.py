"""The tool interface. A tool turns mouse and key events on the canvas into controller
intents; it never edits an annotation itself. Handlers return True when they used the event.
"""
from __future__ import annotations

import math

from PyQt5 import QtCore, QtGui


class Tool:
    name = ""           # registry key, e.g. "brush"
    label = ""          # shown in menus and the toolbar
    tip = ""
    cursor = QtCore.Qt.ArrowCursor

    def __init__(self, canvas) -> None:
        self.canvas = canvas

    @property
    def controller(self):
        return self.canvas.controller

    # -- life cycle
    def activate(self) -> None:
        self.canvas.viewport().setCursor(self.cursor)

    def deactivate(self) -> None:
        self.cancel()

    def cancel(self) -> None:
        """Drop work in progress (a polygon being drawn, a stroke)."""

    @property
    def busy(self) -> bool:
        return False

    # -- events; pos is a QPointF in image coordinates (pixel (i, j) spans [i, i+1) x [j, j+1))
    def press(self, event: QtGui.QMouseEvent, pos: QtCore.QPointF) -> bool:
        return False

    def move(self, event: QtGui.QMouseEvent, pos: QtCore.QPointF) -> bool:
        return False

    def release(self, event: QtGui.QMouseEvent, pos: QtCore.QPointF) -> bool:
        return False

    def double_click(self, event: QtGui.QMouseEvent, pos: QtCore.QPointF) -> bool:
        return False

    def key_press(self, event: QtGui.QKeyEvent) -> bool:
        return False

    def leave(self) -> None:
        pass

    # -- helpers
    @staticmethod
    def pixel(pos: QtCore.QPointF) -> tuple[int, int]:
        return int(math.floor(pos.x())), int(math.floor(pos.y()))

    @staticmethod
    def point(pos: QtCore.QPointF) -> tuple[float, float]:
        """Continuous pixel coordinates where pixel centres are integers."""
        return pos.x() - 0.5, pos.y() - 0.5


def cosmetic_pen(color, width: float = 1.5, style=QtCore.Qt.SolidLine) -> QtGui.QPen:
    pen = QtGui.QPen(QtGui.QColor(color), width, style)
    pen.setCosmetic(True)
    return pen
