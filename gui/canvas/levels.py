"""Resolution levels filled tile by tile on demand: what lets a 16384² image open fast.

A level f (a power of two) is the picture reduced f times. Its numpy buffer is allocated
with np.zeros, which the OS backs with memory only where it is written, so a level costs
what was shown of it; a grid of flags says which tiles (TILE² level pixels) are filled.
The image (gui.canvas.image_levels) and the mask overlay (gui.canvas.overlay) are both
such levels; the layers (gui.canvas.layers) ask for the tiles the screen shows.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import numpy as np
from PyQt5 import QtGui, sip

TILE = 256
# A region this large or smaller is redrawn at once when it changes (an edit, a small
# image); a larger one is only marked stale and drawn when it is shown.
EAGER_PIXELS = 2048 * 2048


def wrap_pixels(img: QtGui.QImage, arr: np.ndarray) -> QtGui.QImage:
    """Tie the numpy buffer a QImage points into to the image (the memory must outlive it)."""
    img.numpy_pixels = arr  # type: ignore[attr-defined]
    return img


def pixels_of(img: Optional[QtGui.QImage]) -> Optional[np.ndarray]:
    """The numpy buffer behind a QImage made by wrap_pixels (None for any other image)."""
    return getattr(img, "numpy_pixels", None)


def qimage_from_array(arr: np.ndarray, fmt: Optional[int] = None) -> QtGui.QImage:
    """A QImage that shares memory with a uint8 (H, W) / (H, W, 3) / (H, W, 4) array
    (or any format given with `fmt`, one byte a pixel). Rows may be strided (a view)."""
    if arr.strides[-1] != arr.itemsize or (arr.ndim == 3 and arr.strides[1] != arr.shape[2]):
        arr = np.ascontiguousarray(arr)
    h, w = arr.shape[:2]
    if fmt is None:
        if arr.ndim == 2:
            fmt = QtGui.QImage.Format_Grayscale8
        elif arr.shape[2] == 3:
            fmt = QtGui.QImage.Format_RGB888
        elif arr.shape[2] == 4:
            fmt = QtGui.QImage.Format_RGBA8888
        else:
            raise ValueError(f"cannot show an array of shape {arr.shape}")
    return wrap_pixels(QtGui.QImage(sip.voidptr(arr.ctypes.data), w, h, arr.strides[0], fmt), arr)


def level_for(scale: float) -> int:
    """The level to draw at a view scale: the coarsest one still at least as fine as the
    screen (scale 0.5 -> 2, 0.3 -> 2, 0.06 -> 16, above 0.5 -> 1)."""
    if scale <= 0 or scale > 0.5 + 1e-9:
        return 1
    return 2 ** int(math.floor(math.log2(1.0 / scale) + 1e-6))


def level_box(f: int, box, shape) -> tuple[int, int, int, int]:
    """Image box (x0, y0, x1, y1) -> the level-f pixels that cover it, clipped to the level."""
    h, w = -(-shape[0] // f), -(-shape[1] // f)
    x0, y0, x1, y1 = box
    return (max(0, int(x0) // f), max(0, int(y0) // f),
            min(w, -(-int(x1) // f)), min(h, -(-int(y1) // f)))


class Level:
    """One level's buffer, (ceil(H/f), ceil(W/f)) + extra dims, and which tiles are filled.

    fill(level, x0, y0, x1, y1) writes buf[y0:y1, x0:x1] (level coordinates).
    """

    def __init__(self, f: int, shape: tuple[int, int], extra: tuple = (), dtype=np.uint8,
                 fill: Optional[Callable] = None) -> None:
        self.f = f
        self.height, self.width = -(-shape[0] // f), -(-shape[1] // f)
        self.buf = np.zeros((self.height, self.width) + tuple(extra), dtype)
        self.stale = np.ones((-(-self.height // TILE), -(-self.width // TILE)), bool)
        self.fill = fill
        self.filled_tiles = 0   # how many tile fills ran (tests: proof of laziness)

    def ensure(self, x0: int, y0: int, x1: int, y1: int) -> None:
        """Fill the stale tiles that meet [x0, x1) x [y0, y1); a row of neighbouring stale
        tiles is filled by one call."""
        if x1 <= x0 or y1 <= y0:
            return
        ty0, ty1 = max(0, y0 // TILE), min(self.stale.shape[0], -(-y1 // TILE))
        tx0, tx1 = max(0, x0 // TILE), min(self.stale.shape[1], -(-x1 // TILE))
        grid = self.stale[ty0:ty1, tx0:tx1]
        if not grid.any():
            return
        for r in range(grid.shape[0]):
            row = grid[r]
            c = 0
            while c < row.size:
                if not row[c]:
                    c += 1
                    continue
                e = c
                while e < row.size and row[e]:
                    e += 1
                ty, a, b = ty0 + r, tx0 + c, tx0 + e
                self.fill(self, a * TILE, ty * TILE, min(self.width, b * TILE),
                          min(self.height, (ty + 1) * TILE))
                self.filled_tiles += e - c
                self.stale[ty, a:b] = False
                c = e

    def ensure_all(self) -> None:
        self.ensure(0, 0, self.width, self.height)

    def invalidate(self, box=None) -> None:
        """Mark tiles stale: those meeting box (level coordinates), or all."""
        if box is None:
            self.stale[...] = True
            return
        x0, y0, x1, y1 = box
        if x1 <= x0 or y1 <= y0:
            return
        self.stale[max(0, y0 // TILE):-(-y1 // TILE), max(0, x0 // TILE):-(-x1 // TILE)] = True

    def is_filled(self, x0: int, y0: int, x1: int, y1: int) -> bool:
        """No stale tile meets the box (tests and the overlay's eager redraw use this)."""
        if x1 <= x0 or y1 <= y0:
            return True
        return not self.stale[max(0, y0 // TILE):-(-y1 // TILE), max(0, x0 // TILE):-(-x1 // TILE)].any()
