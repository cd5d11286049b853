"""Graphics items that draw a source of resolution levels: the image and the mask overlay.

A source (gui.canvas.image_levels.ImageLevels, gui.canvas.overlay.Overlay) has a shape,
qimage(f) and ensure(f, box). The layers draw only the exposed part of themselves from
the level that matches the zoom (a partial repaint costs what it shows), after asking the
source to fill the tiles it covers: bilinear when zoomed out and nearest-neighbour when
zoomed in so pixels stay square; the overlay is always nearest-neighbour.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
from PyQt5 import QtCore, QtGui, QtWidgets, sip

from .levels import TILE, level_box, level_for, pixels_of, qimage_from_array, wrap_pixels

__all__ = ["LevelLayer", "OverlayLayer", "qimage_from_array", "wrap_pixels", "pixels_of"]


class LevelLayer(QtWidgets.QGraphicsItem):
    """Draws a level source at scene coordinates (0, 0)-(w, h), one scene unit per pixel."""

    def __init__(self, smooth: bool = True, parent: Optional[QtWidgets.QGraphicsItem] = None) -> None:
        super().__init__(parent)
        self._source = None
        self._rect = QtCore.QRectF()
        self._smooth = smooth
        self.setFlag(QtWidgets.QGraphicsItem.ItemUsesExtendedStyleOption, True)
        self.paint_count = 0
        self.last_level = 0   # the level the last paint drew from (tests)

    def set_source(self, source) -> None:
        if source is None:
            rect = QtCore.QRectF()
        else:
            h, w = source.shape
            rect = QtCore.QRectF(0, 0, w, h)
        if rect != self._rect:
            self.prepareGeometryChange()
            self._rect = rect
        self._source = source
        self.update()

    @property
    def source(self):
        return self._source

    def boundingRect(self) -> QtCore.QRectF:
        return self._rect

    def _shape(self) -> tuple[int, int]:
        return int(self._rect.height()), int(self._rect.width())

    def _exposed(self, option) -> Optional[tuple[int, int, int, int]]:
        """The exposed image pixels (x0, y0, x1, y1), or None."""
        exposed = option.exposedRect.intersected(self._rect)
        if exposed.isEmpty():
            return None
        H, W = self._shape()
        x0, y0 = max(0, math.floor(exposed.left())), max(0, math.floor(exposed.top()))
        x1, y1 = min(W, math.ceil(exposed.right())), min(H, math.ceil(exposed.bottom()))
        if x1 <= x0 or y1 <= y0:
            return None
        return x0, y0, x1, y1

    @staticmethod
    def _sub(image: QtGui.QImage, x0: int, y0: int, x1: int, y1: int) -> QtGui.QImage:
        """A view of image's pixels in [x0, x1) x [y0, y1), no copy.

        Qt converts (palette, grey) images to ARGB before a scaled draw; handing it the
        exposed part only keeps that cost proportional to what is on screen.
        """
        arr = pixels_of(image)
        if arr is None or (x0, y0, x1, y1) == (0, 0, image.width(), image.height()):
            return image
        sub = arr[y0:y1, x0:x1]
        img = QtGui.QImage(sip.voidptr(sub.ctypes.data), x1 - x0, y1 - y0, arr.strides[0], image.format())
        if image.format() == QtGui.QImage.Format_Indexed8:
            img.setColorTable(image.colorTable())
        return wrap_pixels(img, sub)

    @staticmethod
    def _draw(painter: QtGui.QPainter, target: QtCore.QRectF, image: QtGui.QImage, smooth: bool) -> None:
        """drawImage, as a plain blit when the image lands 1:1 on device pixels."""
        t = painter.worldTransform()
        if t.type() <= QtGui.QTransform.TxScale and abs(t.m11() * target.width() - image.width()) < 0.5 \
                and abs(t.m22() * target.height() - image.height()) < 0.5:
            dev = t.map(target.topLeft())  # snapped to whole device pixels (< half a pixel)
            painter.save()
            painter.resetTransform()
            painter.drawImage(QtCore.QPoint(round(dev.x()), round(dev.y())), image)
            painter.restore()
            return
        painter.setRenderHint(QtGui.QPainter.SmoothPixmapTransform, smooth)
        painter.drawImage(target, image)

    def _paint_level(self, painter: QtGui.QPainter, f: int, box, scale: float, smooth: bool) -> None:
        """Draw the image box from level f (its tiles filled first)."""
        H, W = self._shape()
        lx0, ly0, lx1, ly1 = level_box(f, box, (H, W))
        if lx1 <= lx0 or ly1 <= ly0:
            return
        self._source.ensure(f, lx0, ly0, lx1, ly1)
        level = self._source.qimage(f)
        lw, lh = level.width(), level.height()
        # the target is the level rectangle mapped back to image coordinates
        tgt = QtCore.QRectF(lx0 * W / lw, ly0 * H / lh, (lx1 - lx0) * W / lw, (ly1 - ly0) * H / lh)
        self.last_level = f
        self._draw(painter, tgt, self._sub(level, lx0, ly0, lx1, ly1), smooth and abs(scale * f - 1.0) > 1e-6)

    def paint(self, painter: QtGui.QPainter, option, widget=None) -> None:
        if self._source is None:
            return
        box = self._exposed(option)
        if box is None:
            return
        scale = painter.worldTransform().m11()
        self.paint_count += 1
        self._paint_level(painter, level_for(scale), box, scale, self._smooth and scale < 1.0)


class OverlayLayer(LevelLayer):
    """The overlay: zoomed out it draws the matching level; at 100% and closer it draws
    from ARGB tiles.

    Qt converts a palette image pixel by pixel on every draw; zoomed in, that costs more
    than the image itself. Tiles of premultiplied ARGB are made from level 1's index
    buffer on demand (a numpy lookup) and dropped when their pixels or the palette change.
    """

    MAX_TILES = 160  # 40 MB; a 1600x1000 viewport at 100% shows at most ~48

    def __init__(self, parent: Optional[QtWidgets.QGraphicsItem] = None) -> None:
        super().__init__(smooth=False, parent=parent)
        self._tiles: "dict[tuple[int, int], QtGui.QImage]" = {}
        self._lut: Optional[np.ndarray] = None

    def set_source(self, source) -> None:
        self.invalidate()
        super().set_source(source)

    def invalidate(self, box=None) -> None:
        """Forget ARGB tiles over box (x0, y0, x1, y1), or all of them (e.g. a new palette)."""
        if box is None:
            self._tiles.clear()
            self._lut = None
            return
        x0, y0, x1, y1 = box
        for ty in range(max(0, y0) // TILE, max(0, y1 - 1) // TILE + 1):
            for tx in range(max(0, x0) // TILE, max(0, x1 - 1) // TILE + 1):
                self._tiles.pop((tx, ty), None)

    def _tile(self, tx: int, ty: int) -> QtGui.QImage:
        img = self._tiles.pop((tx, ty), None)
        if img is None:
            src = self._source
            if self._lut is None:
                table = np.array(src.color_table, dtype=np.uint32)
                a = table >> 24
                r, g, b = (table >> 16) & 255, (table >> 8) & 255, table & 255
                self._lut = ((a << 24) | ((r * a // 255) << 16) | ((g * a // 255) << 8) | (b * a // 255)
                             ).astype(np.uint32)
            H, W = self._shape()
            x0, y0 = tx * TILE, ty * TILE
            x1, y1 = min(W, x0 + TILE), min(H, y0 + TILE)
            src.ensure(1, x0, y0, x1, y1)
            buf = src.level(1).buf
            argb = self._lut[buf[y0:y1, x0:x1]]
            h, w = argb.shape
            img = QtGui.QImage(sip.voidptr(argb.ctypes.data), w, h, 4 * w,
                               QtGui.QImage.Format_ARGB32_Premultiplied)
            wrap_pixels(img, argb)
            while len(self._tiles) >= self.MAX_TILES:
                self._tiles.pop(next(iter(self._tiles)))
        self._tiles[(tx, ty)] = img  # most recently used last
        return img

    def paint(self, painter: QtGui.QPainter, option, widget=None) -> None:
        if self._source is None or painter.worldTransform().m11() < 1.0:
            return super().paint(painter, option, widget)
        box = self._exposed(option)
        if box is None:
            return
        x0, y0, x1, y1 = box
        self.paint_count += 1
        self.last_level = 1
        painter.setRenderHint(QtGui.QPainter.SmoothPixmapTransform, False)
        for ty in range(y0 // TILE, (y1 - 1) // TILE + 1):
            for tx in range(x0 // TILE, (x1 - 1) // TILE + 1):
                tile = self._tile(tx, ty)
                bx0, by0 = tx * TILE, ty * TILE
                cx0, cy0 = max(x0, bx0), max(y0, by0)
                cx1, cy1 = min(x1, bx0 + tile.width()), min(y1, by0 + tile.height())
                if cx1 <= cx0 or cy1 <= cy0:
                    continue
                self._draw(painter, QtCore.QRectF(cx0, cy0, cx1 - cx0, cy1 - cy0),
                           self._sub(tile, cx0 - bx0, cy0 - by0, cx1 - bx0, cy1 - by0), False)
