"""Graphics items that draw a numpy-backed QImage: the image and the mask overlay.

Both draw only the exposed part of themselves (a partial repaint costs what it shows),
bilinear when zoomed out and nearest-neighbour when zoomed in so pixels stay square.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
from PyQt5 import QtCore, QtGui, QtWidgets, sip


def qimage_from_array(arr: np.ndarray) -> QtGui.QImage:
    """A QImage that shares memory with a uint8 (H, W) / (H, W, 3) / (H, W, 4) array.

    The caller keeps `arr` alive as long as the image is used.
    """
    arr = np.ascontiguousarray(arr)
    h, w = arr.shape[:2]
    if arr.ndim == 2:
        fmt, bpl = QtGui.QImage.Format_Grayscale8, w
    elif arr.shape[2] == 3:
        fmt, bpl = QtGui.QImage.Format_RGB888, 3 * w
    elif arr.shape[2] == 4:
        fmt, bpl = QtGui.QImage.Format_RGBA8888, 4 * w
    else:
        raise ValueError(f"cannot show an array of shape {arr.shape}")
    img = QtGui.QImage(sip.voidptr(arr.ctypes.data), w, h, bpl, fmt)
    img._keep = arr  # type: ignore[attr-defined]  # the memory must outlive the image
    return img


class ArrayLayer(QtWidgets.QGraphicsItem):
    """Draws a QImage at scene coordinates (0, 0)-(w, h), one scene unit per pixel."""

    def __init__(self, parent: Optional[QtWidgets.QGraphicsItem] = None) -> None:
        super().__init__(parent)
        self._image: Optional[QtGui.QImage] = None
        self._rect = QtCore.QRectF()
        self.setFlag(QtWidgets.QGraphicsItem.ItemUsesExtendedStyleOption, True)
        self.paint_count = 0

    def set_qimage(self, image: Optional[QtGui.QImage]) -> None:
        rect = QtCore.QRectF(0, 0, image.width(), image.height()) if image is not None else QtCore.QRectF()
        if rect != self._rect:
            self.prepareGeometryChange()
            self._rect = rect
        self._image = image
        self.update()

    @property
    def qimage(self) -> Optional[QtGui.QImage]:
        return self._image

    def boundingRect(self) -> QtCore.QRectF:
        return self._rect

    def paint(self, painter: QtGui.QPainter, option, widget=None) -> None:
        if self._image is None:
            return
        exposed = option.exposedRect.intersected(self._rect)
        if exposed.isEmpty():
            return
        x0, y0 = math.floor(exposed.left()), math.floor(exposed.top())
        x1 = min(self._image.width(), math.ceil(exposed.right()))
        y1 = min(self._image.height(), math.ceil(exposed.bottom()))
        src = QtCore.QRectF(x0, y0, x1 - x0, y1 - y0)
        scale = painter.worldTransform().m11()
        painter.setRenderHint(QtGui.QPainter.SmoothPixmapTransform, scale < 1.0)
        painter.drawImage(src, self._image, src)
        self.paint_count += 1
