"""The image on screen as 8-bit resolution levels, made from the stored data on demand.

Nothing is converted when an item opens: a level's tile is reduced from the data
(area average, cv2 INTER_AREA) and mapped through the display window only when the
screen shows it, so the first paint of a 16384² image reads the data once at the fit
level instead of converting 256 M pixels and then halving them. The reduced data of
each level is kept apart from its 8-bit form, so a window change re-maps small levels
only. The window mapping itself is engine.imageio.to_uint8 (one rule, applied per tile).
"""
from __future__ import annotations

from typing import Optional

import cv2
import numpy as np
from PyQt5 import QtGui

from engine.imageio import to_uint8

from .levels import Level, qimage_from_array

# dtypes cv2.resize's INTER_AREA takes as they are; others are reduced as float32
_CV_DTYPES = {np.dtype(t) for t in (np.uint8, np.uint16, np.int16, np.float32, np.float64)}


def reduce_area(src: np.ndarray, width: int, height: int) -> np.ndarray:
    """src (h, w[, c]) area-averaged to (height, width[, c])."""
    if src.dtype not in _CV_DTYPES:
        src = src.astype(np.float32)
    return cv2.resize(src, (width, height), interpolation=cv2.INTER_AREA).reshape(
        (height, width) + src.shape[2:])


class ImageLevels:
    """Levels of one image for one window (center, width). window=None shows uint8 data
    as stored (the caller passes already-mapped 8-bit data when it has no window)."""

    def __init__(self, image: np.ndarray, window: Optional[tuple[float, float]]) -> None:
        if window is None and image.dtype != np.uint8:
            raise ValueError("an image that is not uint8 needs a display window")
        self.image = image
        self.window = window
        self.shape = image.shape[:2]
        self._extra = image.shape[2:]
        self._raw: dict[int, Level] = {}     # f >= 2: the data reduced, kept across windows
        self._disp: dict[int, Level] = {}    # the 8-bit levels the screen draws
        self._qimages: dict[int, QtGui.QImage] = {}

    def set_window(self, window: Optional[tuple[float, float]]) -> None:
        """A new display window: every 8-bit tile is re-mapped when next shown."""
        if window is None and self.image.dtype != np.uint8:
            raise ValueError("an image that is not uint8 needs a display window")
        if window == self.window:
            return
        self.window = window
        for lv in self._disp.values():
            lv.invalidate()

    def level(self, f: int) -> Level:
        lv = self._disp.get(f)
        if lv is None:
            lv = self._disp[f] = Level(f, self.shape, self._extra, np.uint8, self._fill_display)
        return lv

    def qimage(self, f: int) -> QtGui.QImage:
        img = self._qimages.get(f)
        if img is None:
            img = self._qimages[f] = qimage_from_array(self.level(f).buf)
        return img

    def ensure(self, f: int, x0: int, y0: int, x1: int, y1: int) -> None:
        self.level(f).ensure(x0, y0, x1, y1)

    def levels(self) -> list[int]:
        """The levels made so far (tests, and a measure of what was drawn)."""
        return sorted(self._disp)

    # -- filling
    def _data(self, f: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """The data of level f in the box (level coordinates)."""
        if f == 1:
            return self.image[y0:y1, x0:x1]
        raw = self._raw.get(f)
        if raw is None:
            probe = reduce_area(self.image[:1, :1], 1, 1)
            raw = self._raw[f] = Level(f, self.shape, self._extra, probe.dtype, self._fill_raw)
        raw.ensure(x0, y0, x1, y1)
        return raw.buf[y0:y1, x0:x1]

    def _fill_raw(self, lv: Level, x0: int, y0: int, x1: int, y1: int) -> None:
        f = lv.f
        lv.buf[y0:y1, x0:x1] = reduce_area(self.image[y0 * f:y1 * f, x0 * f:x1 * f], x1 - x0, y1 - y0)

    def _fill_display(self, lv: Level, x0: int, y0: int, x1: int, y1: int) -> None:
        data = self._data(lv.f, x0, y0, x1, y1)
        lv.buf[y0:y1, x0:x1] = data if self.window is None else to_uint8(data, window=self.window)
