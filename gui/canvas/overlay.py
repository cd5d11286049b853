"""The mask overlay as one byte per pixel plus a colour table (an Indexed8 QImage).

Each pixel holds a palette index: 0 is transparent; label k owns four entries (fill,
outline, selected fill, selected outline). Opacity, colours and the outline switch are
palette changes (no pixel work); an edit re-renders only its rectangle; the full render
happens once per item. The buffer is numpy; the QImage wraps the same memory.
"""
from __future__ import annotations

import zlib
from typing import Callable, Iterable, Optional

import cv2
import numpy as np
from PyQt5 import QtGui, sip

from engine.annotations import Instance

from .layers import wrap_pixels

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


class Overlay:
    """Index buffer (H, W) uint8 and its Indexed8 QImage."""

    def __init__(self, height: int, width: int) -> None:
        self.height, self.width = height, width
        self.buf = np.zeros((height, width), np.uint8)
        self.image = QtGui.QImage(sip.voidptr(self.buf.ctypes.data), width, height, width,
                                  QtGui.QImage.Format_Indexed8)
        wrap_pixels(self.image, self.buf)
        self.image.setColorTable(palette([], 0.5))

    def set_palette(self, table: list[int]) -> None:
        self.image.setColorTable(table)

    def render(self, instances: Iterable[Instance], color_of: Callable[[Instance], int], hidden: set,
               selected: set, region: Optional[tuple[int, int, int, int]] = None,
               ) -> Optional[tuple[int, int, int, int]]:
        """Redraw `region` (x0, y0, x1, y1) or everything; returns the clipped region drawn.

        color_of(instance) gives the palette colour number (the label's position, or a
        per-instance number when colouring by instance).
        """
        H, W = self.height, self.width
        if region is None:
            region = (0, 0, W, H)
        x0, y0 = max(0, int(region[0])), max(0, int(region[1]))
        x1, y1 = min(W, int(region[2])), min(H, int(region[3]))
        if x1 <= x0 or y1 <= y0:
            return None
        view = self.buf[y0:y1, x0:x1]
        view[...] = 0
        for inst in instances:
            if inst.label in hidden:
                continue
            ix0, iy0 = inst.x0, inst.y0
            ix1, iy1 = ix0 + inst.width, iy0 + inst.height
            ax0, ay0, ax1, ay1 = max(x0, ix0), max(y0, iy0), min(x1, ix1), min(y1, iy1)
            if ax1 <= ax0 or ay1 <= ay0:
                continue
            # the crop plus a margin, so outlines at the region's edge come out right
            m = MARGIN
            bx0, by0, bx1, by1 = ax0 - m, ay0 - m, ax1 + m, ay1 + m
            sub = np.zeros((by1 - by0, bx1 - bx0), np.uint8)
            cx0, cy0 = max(bx0, ix0), max(by0, iy0)
            cx1, cy1 = min(bx1, ix1), min(by1, iy1)
            sub[cy0 - by0:cy1 - by0, cx0 - bx0:cx1 - bx0] = \
                inst.mask[cy0 - iy0:cy1 - iy0, cx0 - ix0:cx1 - ix0]
            is_sel = inst.id in selected
            inner = cv2.erode(sub, _CROSS, iterations=2 if is_sel else 1,
                              borderType=cv2.BORDER_CONSTANT, borderValue=0)
            inside = sub[m:-m, m:-m].view(bool)
            edge = inside & ~inner[m:-m, m:-m].view(bool)
            base = slot(color_of(inst))
            tgt = view[ay0 - y0:ay1 - y0, ax0 - x0:ax1 - x0]
            tgt[inside] = base + (SEL_FILL if is_sel else FILL)
            tgt[edge] = base + (SEL_OUTLINE if is_sel else OUTLINE)
        return (x0, y0, x1, y1)

    def paint_mask(self, mask: np.ndarray, x0: int, y0: int, index: int) -> None:
        """Preview: set pixels of a cropped mask to one palette index (brush strokes)."""
        H, W = self.height, self.width
        h, w = mask.shape
        cx0, cy0, cx1, cy1 = max(0, x0), max(0, y0), min(W, x0 + w), min(H, y0 + h)
        if cx1 <= cx0 or cy1 <= cy0:
            return
        sub = mask[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
        self.buf[cy0:cy1, cx0:cx1][sub] = index
