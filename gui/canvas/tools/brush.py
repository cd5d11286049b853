"""Brush: paint with a disk of the current size ([ and ] change it); a drag puts the disk
on every pixel along the path (as engine.masks.paint_disk). A stroke that touches the one
selected instance grows it (Shift: grow it wherever the stroke is); any other stroke starts
a new instance of the current label (engine.editing.brush_stroke). While dragging,
only the touched pixels of the overlay are repainted; on release the whole stroke becomes
one undo step."""
from __future__ import annotations

from typing import Optional

import cv2
import numpy as np
from PyQt5 import QtCore, QtGui, QtWidgets

from ... import theme
from ..overlay import FILL, SEL_FILL, slot
from .base import Tool, cosmetic_pen


def path_points(xa: int, ya: int, xb: int, yb: int) -> list[tuple[int, int]]:
    """Integer points from a to b, one pixel apart: the brush puts a disk on each."""
    n = max(abs(xb - xa), abs(yb - ya))
    if n == 0:
        return [(xa, ya)]
    return [(xa + int(np.floor(k * (xb - xa) / n + 0.5)), ya + int(np.floor(k * (yb - ya) / n + 0.5)))
            for k in range(n + 1)]


class StrokePixels:
    """The pixels a stroke painted, in an array that grows (with a margin) to cover them:
    a press on a 16384² image allocates a few hundred pixels square, not a 256 MB mask."""

    MARGIN = 256

    def __init__(self, height: int, width: int) -> None:
        self.shape = (height, width)
        self.buf = np.zeros((0, 0), bool)
        self.x0 = self.y0 = 0

    def add(self, m: np.ndarray, x0: int, y0: int) -> None:
        """OR the mask m (inside the image) in at (x0, y0)."""
        x1, y1 = x0 + m.shape[1], y0 + m.shape[0]
        bh, bw = self.buf.shape
        if not (self.buf.size and self.x0 <= x0 and self.y0 <= y0 and x1 <= self.x0 + bw and y1 <= self.y0 + bh):
            H, W = self.shape
            e = self.MARGIN
            nx0, ny0 = max(0, min(x0, self.x0 if bw else x0) - e), max(0, min(y0, self.y0 if bh else y0) - e)
            nx1 = min(W, max(x1, self.x0 + bw) + e)
            ny1 = min(H, max(y1, self.y0 + bh) + e)
            buf = np.zeros((ny1 - ny0, nx1 - nx0), bool)
            buf[self.y0 - ny0:self.y0 - ny0 + bh, self.x0 - nx0:self.x0 - nx0 + bw] = self.buf
            self.buf, self.x0, self.y0 = buf, nx0, ny0
        self.buf[y0 - self.y0:y1 - self.y0, x0 - self.x0:x1 - self.x0] |= m

    def crop(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """A copy of the box (inside what was painted)."""
        return self.buf[y0 - self.y0:y1 - self.y0, x0 - self.x0:x1 - self.x0].copy()


class BrushTool(Tool):
    name = "brush"
    label = "Brush"
    tip = "Paint a new instance, or onto the selected one where the stroke touches it (Shift: always onto it); [ and ] change the size"
    cursor = QtCore.Qt.CrossCursor
    erase = False

    def __init__(self, canvas) -> None:
        super().__init__(canvas)
        self._ring = QtWidgets.QGraphicsEllipseItem()
        self._ring.setZValue(30)
        self._ring.setPen(cosmetic_pen(theme.color("canvas.ring"), 1.0))
        self._ring.setVisible(False)
        canvas.scene().addItem(self._ring)
        self._stroke: Optional[StrokePixels] = None
        self._box: Optional[list[int]] = None
        self._last: Optional[tuple[int, int]] = None
        self._index = 0
        self._targets: Optional[list] = None
        self._extend = False

    @property
    def busy(self) -> bool:
        return self._stroke is not None

    @property
    def radius(self) -> int:
        return max(0, int(self.canvas.brush_size) // 2)

    def activate(self) -> None:
        super().activate()

    def deactivate(self) -> None:
        self.finish()
        self._ring.setVisible(False)

    def leave(self) -> None:
        self._ring.setVisible(False)

    def update_ring(self, pos: Optional[QtCore.QPointF] = None) -> None:
        if pos is None:
            pos = self._ring.data(0)
            if pos is None:
                return
        x, y = self.pixel(pos)
        r = self.radius + 0.5
        self._ring.setRect(QtCore.QRectF(x + 0.5 - r, y + 0.5 - r, 2 * r, 2 * r))
        self._ring.setData(0, QtCore.QPointF(pos))
        self._ring.setVisible(True)

    # -- stroke
    def press(self, event, pos) -> bool:
        if event.button() != QtCore.Qt.LeftButton:
            return False
        ctl = self.controller
        if ctl.annotation is None:
            return True
        H, W = ctl.annotation.shape
        self._stroke = StrokePixels(H, W)
        self._box = None
        self._extend = bool(event.modifiers() & QtCore.Qt.ShiftModifier)
        if self.erase:
            sel = ctl.selected_instances()
            self._targets = sel or None
        else:
            sel = ctl.selected_instances()
            x, y = self.pixel(pos)
            # preview in the colour of where the stroke will most likely go (decided on release)
            if len(sel) == 1 and (self._extend or sel[0].id in ctl.instances_at(x, y)):
                self._index = slot(self.canvas.color_index(sel[0])) + SEL_FILL
            else:
                self._index = slot(self.canvas.label_index(ctl.ensure_label())) + FILL
        x, y = self.pixel(pos)
        self._last = (x, y)
        self._dab(x, y, x, y)
        return True

    def move(self, event, pos) -> bool:
        self.update_ring(pos)
        if self._stroke is None or not (event.buttons() & QtCore.Qt.LeftButton):
            return False
        x, y = self.pixel(pos)
        if (x, y) != self._last:
            lx, ly = self._last
            self._dab(lx, ly, x, y)
            self._last = (x, y)
        return True

    def release(self, event, pos) -> bool:
        if event.button() != QtCore.Qt.LeftButton or self._stroke is None:
            return False
        self.finish()
        return True

    def _dab(self, xa: int, ya: int, xb: int, yb: int) -> None:
        """Paint the segment a-b (a disk at each end) into the stroke and the overlay."""
        stroke = self._stroke
        H, W = stroke.shape
        r = self.radius
        bx0, by0 = max(0, min(xa, xb) - r), max(0, min(ya, yb) - r)
        bx1, by1 = min(W, max(xa, xb) + r + 1), min(H, max(ya, yb) + r + 1)
        if bx1 <= bx0 or by1 <= by0:
            return
        local = np.zeros((by1 - by0, bx1 - bx0), np.uint8)
        for px, py in path_points(xa, ya, xb, yb):
            cv2.circle(local, (px - bx0, py - by0), r, 1, -1)
        m = local.view(bool)
        stroke.add(m, bx0, by0)
        box = self._box
        self._box = [bx0, by0, bx1, by1] if box is None else \
            [min(box[0], bx0), min(box[1], by0), max(box[2], bx1), max(box[3], by1)]
        overlay = self.canvas.overlay
        if overlay is None:
            return
        if self.erase:
            if self._targets is None:
                overlay.paint_mask(m, bx0, by0, 0)
            else:
                from engine.history import window_of
                cover = np.zeros_like(m)
                for inst in self._targets:
                    cover |= window_of(inst, (bx0, by0, bx1, by1))
                overlay.paint_mask(m & cover, bx0, by0, 0)
        else:
            overlay.paint_mask(m, bx0, by0, self._index)
        self.canvas.overlay_changed((bx0, by0, bx1, by1))

    def finish(self) -> bool:
        stroke, box = self._stroke, self._box
        self._stroke = self._box = self._last = self._targets = None
        if stroke is None or box is None:
            return False
        x0, y0, x1, y1 = box
        mask = stroke.crop(x0, y0, x1, y1)
        done = self.controller.paint_stroke(mask, x0, y0, erase=self.erase, extend=self._extend)
        if not done:  # nothing changed: take the preview away
            self.canvas.rerender((x0, y0, x1, y1))
        return done

    def cancel(self) -> None:
        box = self._box
        self._stroke = self._box = self._last = self._targets = None
        if box is not None:
            self.canvas.rerender(tuple(box))
