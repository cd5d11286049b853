"""Graphics items that draw a numpy-backed QImage: the image and the mask overlay.

Both draw only the exposed part of themselves (a partial repaint costs what it shows),
bilinear when zoomed out and nearest-neighbour when zoomed in so pixels stay square.
"""
from __future__ import annotations

import math
from typing import Optional

import cv2
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
    return wrap_pixels(QtGui.QImage(sip.voidptr(arr.ctypes.data), w, h, bpl, fmt), arr)


def wrap_pixels(img: QtGui.QImage, arr: np.ndarray) -> QtGui.QImage:
    """Tie the numpy buffer a QImage points into to the image (the memory must outlive it)."""
    img.numpy_pixels = arr  # type: ignore[attr-defined]
    return img


def pixels_of(img: Optional[QtGui.QImage]) -> Optional[np.ndarray]:
    """The numpy buffer behind a QImage made by wrap_pixels (None for any other image)."""
    return getattr(img, "numpy_pixels", None)


class ArrayLayer(QtWidgets.QGraphicsItem):
    """Draws a QImage at scene coordinates (0, 0)-(w, h), one scene unit per pixel.

    smooth=True (the image): bilinear when zoomed out, and below 50% it draws from a
    mipmap level (area-averaged halvings, built on first use) so a zoomed-out 8192x8192
    image costs what the screen shows and does not alias. smooth=False (the overlay's
    palette indices): always nearest-neighbour.
    """

    def __init__(self, smooth: bool = True, parent: Optional[QtWidgets.QGraphicsItem] = None) -> None:
        super().__init__(parent)
        self._image: Optional[QtGui.QImage] = None
        self._rect = QtCore.QRectF()
        self._smooth = smooth
        self._levels: dict[int, QtGui.QImage] = {}
        self.setFlag(QtWidgets.QGraphicsItem.ItemUsesExtendedStyleOption, True)
        self.paint_count = 0

    def set_qimage(self, image: Optional[QtGui.QImage]) -> None:
        rect = QtCore.QRectF(0, 0, image.width(), image.height()) if image is not None else QtCore.QRectF()
        if rect != self._rect:
            self.prepareGeometryChange()
            self._rect = rect
        self._image = image
        self._levels = {}
        self.update()

    @property
    def qimage(self) -> Optional[QtGui.QImage]:
        return self._image

    def boundingRect(self) -> QtCore.QRectF:
        return self._rect

    def _level(self, f: int) -> Optional[QtGui.QImage]:
        """The image reduced f times (f a power of two), or None when not possible."""
        if f in self._levels:
            return self._levels[f]
        arr = pixels_of(self._image)
        if arr is None:
            return None
        prev = self._level(f // 2) if f > 2 else self._image
        src = pixels_of(prev)
        if src is None or min(src.shape[:2]) < 4:
            return None
        h, w = src.shape[:2]
        small = cv2.resize(src, ((w + 1) // 2, (h + 1) // 2), interpolation=cv2.INTER_AREA)
        img = qimage_from_array(small)
        self._levels[f] = img
        return img

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
            if True:
                painter.save()
                painter.resetTransform()
                painter.drawImage(QtCore.QPoint(round(dev.x()), round(dev.y())), image)
                painter.restore()
                return
        painter.setRenderHint(QtGui.QPainter.SmoothPixmapTransform, smooth)
        painter.drawImage(target, image)

    def paint(self, painter: QtGui.QPainter, option, widget=None) -> None:
        if self._image is None:
            return
        exposed = option.exposedRect.intersected(self._rect)
        if exposed.isEmpty():
            return
        W, H = self._image.width(), self._image.height()
        x0, y0 = max(0, math.floor(exposed.left())), max(0, math.floor(exposed.top()))
        x1, y1 = min(W, math.ceil(exposed.right())), min(H, math.ceil(exposed.bottom()))
        if x1 <= x0 or y1 <= y0:
            return
        target = QtCore.QRectF(x0, y0, x1 - x0, y1 - y0)
        scale = painter.worldTransform().m11()
        self.paint_count += 1
        f = 2 ** int(math.floor(math.log2(1.0 / scale) + 1e-6)) if self._smooth and scale > 0 else 1
        if f >= 2:
            level = self._level(f)
            if level is not None:
                lw, lh = level.width(), level.height()
                lx0, ly0 = (x0 * lw) // W, (y0 * lh) // H
                lx1, ly1 = min(lw, -(-x1 * lw // W)), min(lh, -(-y1 * lh // H))
                # the target is the level rectangle mapped back to image coordinates
                tgt = QtCore.QRectF(lx0 * W / lw, ly0 * H / lh, (lx1 - lx0) * W / lw, (ly1 - ly0) * H / lh)
                self._draw(painter, tgt, self._sub(level, lx0, ly0, lx1, ly1), abs(scale * f - 1.0) > 1e-6)
                return
        self._draw(painter, target, self._sub(self._image, x0, y0, x1, y1), self._smooth and scale < 1.0)


TILE = 256


class OverlayLayer(ArrayLayer):
    """The overlay's Indexed8 image; at 100% and closer it draws from ARGB tiles.

    Qt converts a palette image pixel by pixel on every draw; zoomed in, that costs more
    than the image itself. Tiles of premultiplied ARGB are made from the index buffer on
    demand (a numpy lookup) and dropped when their pixels or the palette change.
    """

    MAX_TILES = 160  # 40 MB; a 1600x1000 viewport at 100% shows at most ~48

    def __init__(self, parent: Optional[QtWidgets.QGraphicsItem] = None) -> None:
        super().__init__(smooth=False, parent=parent)
        self._tiles: "dict[tuple[int, int], QtGui.QImage]" = {}
        self._lut: Optional[np.ndarray] = None

    def set_qimage(self, image: Optional[QtGui.QImage]) -> None:
        self.invalidate()
        super().set_qimage(image)

    def invalidate(self, box=None) -> None:
        """Forget tiles over box (x0, y0, x1, y1), or all of them (e.g. a new palette)."""
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
            if self._lut is None:
                table = np.array(self._image.colorTable(), dtype=np.uint32)
                a = table >> 24
                r, g, b = (table >> 16) & 255, (table >> 8) & 255, table & 255
                self._lut = ((a << 24) | ((r * a // 255) << 16) | ((g * a // 255) << 8) | (b * a // 255)
                             ).astype(np.uint32)
            buf = pixels_of(self._image)
            argb = self._lut[buf[ty * TILE:(ty + 1) * TILE, tx * TILE:(tx + 1) * TILE]]
            h, w = argb.shape
            img = QtGui.QImage(sip.voidptr(argb.ctypes.data), w, h, 4 * w,
                               QtGui.QImage.Format_ARGB32_Premultiplied)
            wrap_pixels(img, argb)
            while len(self._tiles) >= self.MAX_TILES:
                self._tiles.pop(next(iter(self._tiles)))
        self._tiles[(tx, ty)] = img  # most recently used last
        return img

    def paint(self, painter: QtGui.QPainter, option, widget=None) -> None:
        if self._image is None or painter.worldTransform().m11() < 1.0:
            return super().paint(painter, option, widget)
        exposed = option.exposedRect.intersected(self._rect)
        if exposed.isEmpty():
            return
        W, H = self._image.width(), self._image.height()
        x0, y0 = max(0, math.floor(exposed.left())), max(0, math.floor(exposed.top()))
        x1, y1 = min(W, math.ceil(exposed.right())), min(H, math.ceil(exposed.bottom()))
        self.paint_count += 1
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
