"""Polygon: click vertices; double-click or Enter closes, Esc cancels, Backspace drops the
last vertex. The closed polygon becomes a new instance, or is added to the one selected
instance (Shift while closing: always a new instance)."""
from __future__ import annotations

from PyQt5 import QtCore, QtGui, QtWidgets

from ... import theme
from .base import Tool, cosmetic_pen


class PolygonTool(Tool):
    name = "polygon"
    label = "Polygon"
    tip = "Click vertices; double-click or Enter closes; Esc cancels; Backspace removes the last vertex"
    cursor = QtCore.Qt.CrossCursor

    def __init__(self, canvas) -> None:
        super().__init__(canvas)
        self.points: list[QtCore.QPointF] = []
        self._hover: QtCore.QPointF | None = None
        self._item = QtWidgets.QGraphicsPathItem()
        self._item.setZValue(20)
        self._item.setVisible(False)
        canvas.scene().addItem(self._item)

    @property
    def busy(self) -> bool:
        return bool(self.points)

    def _color(self) -> QtGui.QColor:
        ctl = self.controller
        sel = ctl.selected_instances()
        name = sel[0].label if len(sel) == 1 else ctl.current_label
        return QtGui.QColor(*ctl.label_color(name)) if name else theme.color("canvas.line")

    def _redraw(self) -> None:
        if not self.points:
            self._item.setVisible(False)
            return
        path = QtGui.QPainterPath(self.points[0])
        for p in self.points[1:]:
            path.lineTo(p)
        if self._hover is not None:
            path.lineTo(self._hover)
        self._item.setPen(cosmetic_pen(self._color(), 1.5))
        self._item.setPath(path)
        self._item.setVisible(True)

    def press(self, event, pos) -> bool:
        if event.button() != QtCore.Qt.LeftButton:
            return False
        self.points.append(QtCore.QPointF(pos))
        self._redraw()
        return True

    def move(self, event, pos) -> bool:
        if self.points:
            self._hover = QtCore.QPointF(pos)
            self._redraw()
        return False

    def double_click(self, event, pos) -> bool:
        if event.button() != QtCore.Qt.LeftButton:
            return False
        self.finish(new=bool(event.modifiers() & QtCore.Qt.ShiftModifier))
        return True

    def key_press(self, event) -> bool:
        key = event.key()
        if key in (QtCore.Qt.Key_Return, QtCore.Qt.Key_Enter) and self.points:
            self.finish(new=bool(event.modifiers() & QtCore.Qt.ShiftModifier))
            return True
        if key == QtCore.Qt.Key_Escape and self.points:
            self.cancel()
            return True
        if key == QtCore.Qt.Key_Backspace and self.points:
            self.points.pop()
            self._redraw()
            return True
        return False

    def finish(self, new: bool = False) -> bool:
        pts = [self.point(p) for p in self.points]
        # drop repeated vertices (a double-click lands twice on the same spot)
        clean = [p for k, p in enumerate(pts) if k == 0 or p != pts[k - 1]]
        self.cancel()
        if len(clean) < 3:
            return False
        return self.controller.add_polygon(clean, new=new)

    def cancel(self) -> None:
        self.points = []
        self._hover = None
        self._redraw()
