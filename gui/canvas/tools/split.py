"""Split: drag a line across an instance to cut it in two (or more). Cuts the selected
instances, else every instance the line crosses. Esc cancels a line being drawn."""
from __future__ import annotations

from PyQt5 import QtCore, QtGui, QtWidgets

from ... import theme
from .base import Tool, cosmetic_pen


class SplitTool(Tool):
    name = "split"
    label = "Split"
    tip = "Drag a line across an instance to cut it"
    cursor = QtCore.Qt.CrossCursor

    def __init__(self, canvas) -> None:
        super().__init__(canvas)
        self.points: list[QtCore.QPointF] = []
        self._item = QtWidgets.QGraphicsPathItem()
        self._item.setZValue(20)
        self._item.setPen(cosmetic_pen(theme.color("canvas.line"), 1.5, QtCore.Qt.DashLine))
        self._item.setVisible(False)
        canvas.scene().addItem(self._item)

    @property
    def busy(self) -> bool:
        return bool(self.points)

    def _redraw(self) -> None:
        if len(self.points) < 2:
            self._item.setVisible(False)
            return
        path = QtGui.QPainterPath(self.points[0])
        for p in self.points[1:]:
            path.lineTo(p)
        self._item.setPath(path)
        self._item.setVisible(True)

    def press(self, event, pos) -> bool:
        if event.button() != QtCore.Qt.LeftButton:
            return False
        self.points = [QtCore.QPointF(pos)]
        return True

    def move(self, event, pos) -> bool:
        if not self.points or not (event.buttons() & QtCore.Qt.LeftButton):
            return False
        last = self.points[-1]
        if abs(pos.x() - last.x()) + abs(pos.y() - last.y()) >= 0.5:
            self.points.append(QtCore.QPointF(pos))
            self._redraw()
        return True

    def release(self, event, pos) -> bool:
        if event.button() != QtCore.Qt.LeftButton or not self.points:
            return False
        if self.points[-1] != pos:
            self.points.append(QtCore.QPointF(pos))
        pts = [self.point(p) for p in self.points]
        self.cancel()
        if len(pts) >= 2:
            self.controller.split_line(pts)
        return True

    def key_press(self, event) -> bool:
        if event.key() == QtCore.Qt.Key_Escape and self.points:
            self.cancel()
            return True
        return False

    def cancel(self) -> None:
        self.points = []
        self._redraw()
