"""A faint outline of the selected 3-D objects as they lie on the previous and next slice.

Drawn as vector paths above the mask overlay (cosmetic pens: one screen pixel wide at any
zoom), so showing them costs nothing per image pixel. Previous slice: cyan, dashed; next:
yellow, dotted — colours that read over any label colour and a grey image, half transparent.
"""
from __future__ import annotations

from typing import Iterable

import cv2
import numpy as np
from PyQt5 import QtCore, QtGui, QtWidgets

ALPHA = 170
COLORS = {-1: (0, 215, 255), +1: (255, 215, 0)}


def outline_path(mask: np.ndarray, x0: int, y0: int) -> QtGui.QPainterPath:
    """The outer and hole boundaries of a cropped mask along pixel edges, in image coordinates."""
    m = np.ascontiguousarray(mask, dtype=np.uint8)
    # contours of the mask scaled 2x run along pixel edges once halved (not through centres)
    big = cv2.resize(m, (m.shape[1] * 2, m.shape[0] * 2), interpolation=cv2.INTER_NEAREST)
    big = np.pad(big, 1)
    contours, _ = cv2.findContours(big, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    path = QtGui.QPainterPath()
    for c in contours:
        pts = (c.reshape(-1, 2).astype(np.float64) - 1 + 0.5) / 2.0
        if len(pts) < 2:
            continue
        path.moveTo(x0 + pts[0, 0], y0 + pts[0, 1])
        for px, py in pts[1:]:
            path.lineTo(x0 + px, y0 + py)
        path.closeSubpath()
    return path


class NeighbourOutlines:
    """Two path items (previous, next slice) in a canvas scene."""

    STYLES = {-1: QtCore.Qt.DashLine, +1: QtCore.Qt.DotLine}

    def __init__(self, scene: QtWidgets.QGraphicsScene, z: float = 2.0) -> None:
        self.items: dict[int, QtWidgets.QGraphicsPathItem] = {}
        for side, style in self.STYLES.items():
            item = QtWidgets.QGraphicsPathItem()
            item.setZValue(z)
            item.setAcceptedMouseButtons(QtCore.Qt.NoButton)
            pen = QtGui.QPen(QtGui.QColor(*COLORS[side], ALPHA), 1.5, style)
            pen.setCosmetic(True)
            item.setPen(pen)
            scene.addItem(item)
            self.items[side] = item

    def show(self, side: int, instances: Iterable) -> None:
        """Outline `instances` (of the slice on `side`: -1 previous, +1 next)."""
        path = QtGui.QPainterPath()
        for inst in instances:
            path.addPath(outline_path(inst.mask, inst.x0, inst.y0))
        item = self.items[side]
        item.setPath(path)
        item.setVisible(not path.isEmpty())

    def clear(self) -> None:
        for item in self.items.values():
            item.setPath(QtGui.QPainterPath())
            item.setVisible(False)

    def is_shown(self, side: int) -> bool:
        return self.items[side].isVisible() and not self.items[side].path().isEmpty()
