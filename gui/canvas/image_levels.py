"""The image on screen as 8-bit resolution levels, made from the stored data on demand.

Nothing is converted when an item opens: a level's tile is reduced from the data
(area average, cv2 INTER_AREA) and mapped through the display window only when the
screen shows it, so the first paint of a 16384² image reads the data once at the fit
level instead of converting 256 M pixels and then halving them. The reduced data of
each level is kept apart from its 8-bit form, so a window change re-maps small levels
only. The window mapping itself is engine.imageio.to_uint8 (one rule, applied per tile).

A display tile whose exact fill would area-average more than PREVIEW_PIXELS stored pixels
(the fit view of a 16384² image: all 256 M of them) is first shown from a sample, the
stored pixel at each level pixel's centre, and marked rough; refine() then makes rough
tiles exact one at a time (the canvas calls it from a timer after the paint), so the
first paint reads 1/f² of the data and the picture settles to exactly the area average.
"""
from __future__ import annotations

from typing import Callable, Optional

import cv2
import numpy as np
from PyQt5 import QtGui

from engine.imageio import to_uint8

from .levels import TILE, Level, qimage_from_array

# A tile reducing more stored pixels than this is previewed from a sample first (a
# 4096² area: 16 M pixels, ~30 ms to average). Module-level so a benchmark can turn it off.
PREVIEW_PIXELS = 1 << 24

# dtypes cv2.resize's INTER_AREA takes as they are; others are reduced as float32
_CV_DTYPES = {np.dtype(t) for t in (np.uint8, np.uint16, np.int16, np.float32, np.float64)}


def reduce_area(src: np.ndarray, width: int, height: int) -> np.ndarray:
    """src (h, w[, c]) area-averaged to (height, width[, c])."""
    if src.dtype not in _CV_DTYPES:
        src = src.astype(np.float32)
    return cv2.resize(src, (width, height), interpolation=cv2.INTER_AREA).reshape(
        (height, width) + src.shape[2:])


def reduce_blocks(src: np.ndarray, f: int) -> np.ndarray:
    """src reduced f times: each output pixel the mean of its f x f block, the blocks at
    the bottom and right edge cut by the image. Whole blocks and edge blocks are reduced
    apart (each an integer ratio), so a pixel never depends on how many neighbouring
    blocks one call reduces (tile by tile or a row of tiles at once: the same result)."""
    h, w = src.shape[:2]
    hb, wb = h // f, w // f
    out = np.empty((-(-h // f), -(-w // f)) + src.shape[2:],
                   reduce_area(src[:1, :1], 1, 1).dtype)
    for ys, ye, oy in ((0, hb * f, slice(0, hb)), (hb * f, h, slice(hb, hb + 1))):
        for xs, xe, ox in ((0, wb * f, slice(0, wb)), (wb * f, w, slice(wb, wb + 1))):
            if ye > ys and xe > xs:
                part = src[ys:ye, xs:xe]
                out[oy, ox] = reduce_area(part, -(-(xe - xs) // f), -(-(ye - ys) // f))
    return out


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
        self._rough: dict[int, np.ndarray] = {}   # per display level: tiles shown from a sample
        self.on_rough: Optional[Callable[[], None]] = None  # called when a tile is previewed

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
        lv.buf[y0:y1, x0:x1] = reduce_blocks(self.image[y0 * f:y1 * f, x0 * f:x1 * f], f)

    def _fill_display(self, lv: Level, x0: int, y0: int, x1: int, y1: int) -> None:
        f = lv.f
        raw = self._raw.get(f)
        exact = f == 1 or (raw is not None and raw.is_filled(x0, y0, x1, y1)) or \
            (x1 - x0) * (y1 - y0) * f * f <= PREVIEW_PIXELS
        data = self._data(f, x0, y0, x1, y1) if exact else self._sample(f, x0, y0, x1, y1)
        lv.buf[y0:y1, x0:x1] = self._mapped(data)
        rough = self._rough.get(f)
        if rough is None:
            rough = self._rough[f] = np.zeros_like(lv.stale)
        rough[y0 // TILE:-(-y1 // TILE), x0 // TILE:-(-x1 // TILE)] = not exact
        if not exact and self.on_rough is not None:
            self.on_rough()

    def _mapped(self, data: np.ndarray) -> np.ndarray:
        """Reduced data as the screen draws it (the window's 8-bit mapping, if any)."""
        return data if self.window is None else to_uint8(data, window=self.window)

    def _sample(self, f: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """Level f's box from the stored pixels at the level pixels' centres (the last,
        partial level pixel takes the image's last pixel): reads 1/f² of the data."""
        h, w = self.shape
        ys = np.minimum(np.arange(y0, y1) * f + f // 2, h - 1)
        xs = np.minimum(np.arange(x0, x1) * f + f // 2, w - 1)
        return self.image[np.ix_(ys, xs)]

    def rough(self) -> bool:
        """Some tile on screen is still a preview."""
        return any(r.any() for r in self._rough.values())

    def refine(self) -> Optional[tuple[int, int, int, int]]:
        """Make one rough tile exact (the finest level first: the one zoomed in to);
        returns its image box (x0, y0, x1, y1) to repaint, None when none is left."""
        for f in sorted(self._rough):
            hit = np.argwhere(self._rough[f])
            if not len(hit):
                continue
            ty, tx = (int(v) for v in hit[0])
            lv = self._disp[f]
            x0, y0 = tx * TILE, ty * TILE
            x1, y1 = min(lv.width, x0 + TILE), min(lv.height, y0 + TILE)
            lv.buf[y0:y1, x0:x1] = self._mapped(self._data(f, x0, y0, x1, y1))
            self._rough[f][ty, tx] = False
            h, w = self.shape
            return x0 * f, y0 * f, min(w, x1 * f), min(h, y1 * f)
        return None
