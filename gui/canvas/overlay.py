"""The mask overlay as one byte per pixel plus a colour table (Indexed8 QImages).

Each pixel holds a palette index: 0 is transparent; label k owns four entries (fill,
outline, selected fill, selected outline). Opacity, colours and the outline switch are
palette changes (no pixel work). The overlay has resolution levels (gui.canvas.levels):
level 1 is one index a pixel, level f is rendered from the masks sampled every f pixels
(at the centre of each level pixel), with outlines one level pixel wide. Levels are rendered tile by tile when shown; a small change (an edit)
is redrawn at once. The buffers are numpy; the QImages wrap the same memory.
"""
from __future__ import annotations

import zlib
from typing import Callable, Iterable, Optional

import cv2
import numpy as np
from PyQt5 import QtGui

from engine.annotations import Instance

from .levels import EAGER_PIXELS, Level, level_box, qimage_from_array

FILL, OUTLINE, SEL_FILL, SEL_OUTLINE = range(4)
SLOTS = 63  # 63 labels x 4 entries + transparent <= 256; more labels share colours
MARGIN = 2  # outline width of a selected instance, and how far an edit can change outlines
_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))


def slot(label_index: int) -> int:
    return 1 + 4 * (label_index % SLOTS)


def instance_colors(n: int = SLOTS) -> list[tuple[int, int, int]]:
    """Distinct hues for colouring by instance."""
    import colorsys
    out = []
    for k in range(n):
        h = (k * 0.618033988749895) % 1.0
        s, v = (0.65, 0.95) if k % 2 else (0.85, 0.85)
        r, g, b = colorsys.hsv_to_rgb(h, s, v)
        out.append((int(r * 255), int(g * 255), int(b * 255)))
    return out


def instance_color_index(inst: Instance) -> int:
    """A stable colour number from the 3-D object id (one colour through the slices), else
    the instance id (survives edits and undo)."""
    key = inst.object_id or inst.id
    try:
        return int(key[:8], 16) % SLOTS
    except ValueError:
        return zlib.crc32(key.encode()) % SLOTS  # hash() differs between runs


def palette(colors: list[tuple[int, int, int]], opacity: float, outlines: bool = True) -> list[int]:
    """256 ARGB entries for labels in `colors` order."""
    table = [QtGui.qRgba(0, 0, 0, 0)] * 256
    a_fill = int(round(255 * max(0.0, min(1.0, opacity))))
    a_sel = min(255, a_fill + 70)
    for k, (r, g, b) in enumerate(colors[:SLOTS]):
        base = slot(k)
        table[base + FILL] = QtGui.qRgba(r, g, b, a_fill)
        table[base + OUTLINE] = QtGui.qRgba(r, g, b, 255) if outlines else table[base + FILL]
        lr, lg, lb = (min(255, int(c + (255 - c) * 0.35)) for c in (r, g, b))
        table[base + SEL_FILL] = QtGui.qRgba(lr, lg, lb, a_sel)
        table[base + SEL_OUTLINE] = QtGui.qRgba(255, 255, 255, 255)
    return table


def reduce_mask(mask: np.ndarray, x0: int, y0: int, f: int) -> tuple[np.ndarray, int, int]:
    """A crop mask at (x0, y0) on level f: (bool mask, level x0, level y0). A level pixel
    takes the mask's value at its centre (nearest neighbour, as a scaled-down label image
    is shown); the result is a strided view, so a coarse level costs no pixel copies."""
    if f == 1:
        return mask, x0, y0
    c = f // 2
    lx0, ly0 = -(-(x0 - c) // f), -(-(y0 - c) // f)   # first level pixel whose centre is inside
    return mask[ly0 * f + c - y0::f, lx0 * f + c - x0::f], lx0, ly0


class Overlay:
    """The overlay's levels for one image size. set_content says what to draw,
    redraw(region) that it changed; render() is both."""

    def __init__(self, height: int, width: int) -> None:
        self.height, self.width = height, width
        self._levels: dict[int, Level] = {}
        self._qimages: dict[int, QtGui.QImage] = {}
        self._table = palette([], 0.5)
        self._shown: list = []            # instances drawn, in drawing order
        self._boxes = np.zeros((0, 4), np.int64)
        self._color_of: Callable[[Instance], int] = lambda inst: 0
        self._selected: set = set()
        self.level(1)

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width

    # -- levels
    def level(self, f: int) -> Level:
        lv = self._levels.get(f)
        if lv is None:
            lv = self._levels[f] = Level(f, (self.height, self.width), (), np.uint8, self._fill)
            img = qimage_from_array(lv.buf, QtGui.QImage.Format_Indexed8)
            img.setColorTable(self._table)
            self._qimages[f] = img
        return lv

    def qimage(self, f: int) -> QtGui.QImage:
        self.level(f)
        return self._qimages[f]

    def ensure(self, f: int, x0: int, y0: int, x1: int, y1: int) -> None:
        self.level(f).ensure(x0, y0, x1, y1)

    def levels(self) -> list[int]:
        return sorted(self._levels)

    @property
    def image(self) -> QtGui.QImage:
        """Level 1 as an Indexed8 QImage (its tiles are rendered when shown)."""
        return self._qimages[1]

    @property
    def buf(self) -> np.ndarray:
        """Level 1, one palette index a pixel, all of it rendered (tests read it)."""
        lv = self._levels[1]
        lv.ensure_all()
        return lv.buf

    def set_palette(self, table: list[int]) -> None:
        self._table = table
        for img in self._qimages.values():
            img.setColorTable(table)

    @property
    def color_table(self) -> list[int]:
        return self._table

    # -- content
    def set_content(self, instances: Iterable[Instance], color_of: Callable[[Instance], int], hidden: set,
                    selected: set) -> None:
        """What to draw: color_of(instance) gives the palette colour number (the label's
        position, or a per-instance number when colouring by instance)."""
        self._shown = [i for i in instances if i.label not in hidden]
        self._boxes = np.array([(i.x0, i.y0, i.x0 + i.width, i.y0 + i.height) for i in self._shown],
                               np.int64).reshape(-1, 4)
        self._color_of = color_of
        self._selected = set(selected)

    def redraw(self, region: Optional[tuple[int, int, int, int]] = None) -> Optional[tuple[int, int, int, int]]:
        """The content changed in region (x0, y0, x1, y1) or everywhere: a small region is
        redrawn now on every level, a large one when shown. Returns the clipped region."""
        H, W = self.height, self.width
        if region is None:
            region = (0, 0, W, H)
        x0, y0 = max(0, int(region[0])), max(0, int(region[1]))
        x1, y1 = min(W, int(region[2])), min(H, int(region[3]))
        if x1 <= x0 or y1 <= y0:
            return None
        eager = (x1 - x0) * (y1 - y0) <= EAGER_PIXELS
        for f, lv in self._levels.items():
            box = level_box(f, (x0, y0, x1, y1), (H, W))
            if eager:
                self._fill(lv, *box)
            else:
                lv.invalidate(box)
        return (x0, y0, x1, y1)

    def render(self, instances: Iterable[Instance], color_of: Callable[[Instance], int], hidden: set,
               selected: set, region: Optional[tuple[int, int, int, int]] = None,
               ) -> Optional[tuple[int, int, int, int]]:
        """set_content, then redraw(region)."""
        self.set_content(instances, color_of, hidden, selected)
        return self.redraw(region)

    def _fill(self, lv: Level, x0: int, y0: int, x1: int, y1: int) -> None:
        """Render the level box [x0, x1) x [y0, y1) of level lv from the content."""
        f = lv.f
        view = lv.buf[y0:y1, x0:x1]
        view[...] = 0
        b = self._boxes
        if not len(b):
            return
        hit = np.flatnonzero((b[:, 0] < x1 * f) & (b[:, 2] > x0 * f) & (b[:, 1] < y1 * f) & (b[:, 3] > y0 * f))
        m = MARGIN
        for k in hit:
            inst = self._shown[k]
            lm, ix0, iy0 = reduce_mask(inst.mask, inst.x0, inst.y0, f)
            ih, iw = lm.shape
            if not ih or not iw:
                continue
            ix1, iy1 = ix0 + iw, iy0 + ih
            ax0, ay0, ax1, ay1 = max(x0, ix0), max(y0, iy0), min(x1, ix1), min(y1, iy1)
            if ax1 <= ax0 or ay1 <= ay0:
                continue
            # the crop plus a margin, so outlines at the box's edge come out right
            bx0, by0, bx1, by1 = ax0 - m, ay0 - m, ax1 + m, ay1 + m
            sub = np.zeros((by1 - by0, bx1 - bx0), np.uint8)
            cx0, cy0 = max(bx0, ix0), max(by0, iy0)
            cx1, cy1 = min(bx1, ix1), min(by1, iy1)
            sub[cy0 - by0:cy1 - by0, cx0 - bx0:cx1 - bx0] = lm[cy0 - iy0:cy1 - iy0, cx0 - ix0:cx1 - ix0]
            is_sel = inst.id in self._selected
            inner = cv2.erode(sub, _CROSS, iterations=2 if is_sel else 1,
                              borderType=cv2.BORDER_CONSTANT, borderValue=0)
            inside = sub[m:-m, m:-m].view(bool)
            edge = inside & ~inner[m:-m, m:-m].view(bool)
            base = slot(self._color_of(inst))
            tgt = view[ay0 - y0:ay1 - y0, ax0 - x0:ax1 - x0]
            tgt[inside] = base + (SEL_FILL if is_sel else FILL)
            tgt[edge] = base + (SEL_OUTLINE if is_sel else OUTLINE)

    def paint_mask(self, mask: np.ndarray, x0: int, y0: int, index: int) -> None:
        """Preview: set pixels of a cropped mask to one palette index on every level
        (brush strokes); the tiles it touches are rendered first so the preview stays."""
        for f, lv in self._levels.items():
            lm, lx0, ly0 = reduce_mask(mask, x0, y0, f)
            h, w = lm.shape
            cx0, cy0, cx1, cy1 = max(0, lx0), max(0, ly0), min(lv.width, lx0 + w), min(lv.height, ly0 + h)
            if cx1 <= cx0 or cy1 <= cy0:
                continue
            lv.ensure(cx0, cy0, cx1, cy1)
            sub = lm[cy0 - ly0:cy1 - ly0, cx0 - lx0:cx1 - lx0]
            lv.buf[cy0:cy1, cx0:cx1][sub] = index
