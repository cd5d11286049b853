"""Orthogonal views: the XZ and YZ planes through the cursor, with the masks, for stacks and
series (read-only). Rows are slices (the first at the top), drawn at the stack's physical
proportions: slice spacing against pixel spacing (1 where the data carries none).

The stack is read by gui.stack_volume on a worker thread, nearest slices first; planes fill
in as slices arrive (unread rows are dark) and a bar shows how far reading has got. A click
on a plane opens that slice at that position.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
from PyQt5 import QtCore, QtGui, QtWidgets

from engine.imageio import to_uint8

from ..canvas.overlay import instance_color_index, instance_colors
from ..stack_volume import StackVolume

MASK_ALPHA = 0.45
UNREAD = 28     # grey level of rows not read yet
RENDER_MS = 30  # cursor moves and edits coalesce into one render per this interval
LOADING_MS = 400  # while slices arrive, the planes fill in at this pace


class PlaneView(QtWidgets.QWidget):
    """One plane (an RGB array) drawn at a physical aspect ratio, with crosshair lines."""
    clicked = QtCore.pyqtSignal(int, int)  # position along the plane, slice

    def __init__(self, title: str, parent=None) -> None:
        super().__init__(parent)
        self.title = title
        self.caption = title
        self._image: Optional[QtGui.QImage] = None
        self._phys = (1.0, 1.0)          # physical width, height
        self._marks = (-1, -1)           # along, slice
        self.setMinimumSize(160, 100)
        self.setSizePolicy(QtWidgets.QSizePolicy.Expanding, QtWidgets.QSizePolicy.Expanding)

    def set_plane(self, rgb: Optional[np.ndarray], phys: tuple[float, float], marks: tuple[int, int],
                  caption: str) -> None:
        if rgb is None:
            self._image = None
        else:
            rgb = np.ascontiguousarray(rgb)
            h, w = rgb.shape[:2]
            self._image = QtGui.QImage(rgb.data, w, h, 3 * w, QtGui.QImage.Format_RGB888).copy()
        self._phys, self._marks, self.caption = phys, marks, caption
        self.update()

    def target_rect(self) -> QtCore.QRectF:
        pw, ph = self._phys
        area = QtCore.QRectF(self.rect()).adjusted(4, 18, -4, -4)
        if pw <= 0 or ph <= 0 or area.width() <= 0 or area.height() <= 0:
            return QtCore.QRectF()
        s = min(area.width() / pw, area.height() / ph)
        w, h = pw * s, ph * s
        return QtCore.QRectF(area.center().x() - w / 2, area.top() + (area.height() - h) / 2, w, h)

    def paintEvent(self, _event) -> None:
        p = QtGui.QPainter(self)
        p.fillRect(self.rect(), QtGui.QColor(38, 38, 42))
        p.setPen(QtGui.QColor(220, 220, 220))
        p.drawText(QtCore.QRectF(6, 1, self.width() - 12, 16), QtCore.Qt.AlignLeft | QtCore.Qt.AlignVCenter,
                   self.caption)
        img = self._image
        if img is None:
            return
        t = self.target_rect()
        p.setRenderHint(QtGui.QPainter.SmoothPixmapTransform, t.width() < img.width())
        p.drawImage(t, img)
        along, z = self._marks
        pen = QtGui.QPen(QtGui.QColor(255, 220, 0, 140), 1, QtCore.Qt.DashLine)
        p.setPen(pen)
        if 0 <= z < img.height():
            y = t.top() + (z + 0.5) * t.height() / img.height()
            p.drawLine(QtCore.QPointF(t.left(), y), QtCore.QPointF(t.right(), y))
        if 0 <= along < img.width():
            x = t.left() + (along + 0.5) * t.width() / img.width()
            p.drawLine(QtCore.QPointF(x, t.top()), QtCore.QPointF(x, t.bottom()))
        p.end()

    def mousePressEvent(self, event) -> None:
        img, t = self._image, self.target_rect()
        if img is None or not t.contains(QtCore.QPointF(event.pos())):
            return
        along = int((event.pos().x() - t.left()) * img.width() / t.width())
        z = int((event.pos().y() - t.top()) * img.height() / t.height())
        self.clicked.emit(min(along, img.width() - 1), min(z, img.height() - 1))


class OrthogonalPanel(QtWidgets.QWidget):
    def __init__(self, controller, canvas=None, parent=None) -> None:
        super().__init__(parent)
        self.controller = controller
        self.volume = StackVolume(controller, self)
        self.xz = PlaneView("XZ")
        self.yz = PlaneView("YZ")
        self.info = QtWidgets.QLabel()
        self.info.setWordWrap(True)
        self.bar = QtWidgets.QProgressBar()
        self.bar.setTextVisible(True)
        self.bar.setFormat("reading slices %v / %m")
        self.bar.setMaximumHeight(14)
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.addWidget(self.xz, 1)
        lay.addWidget(self.yz, 1)
        lay.addWidget(self.bar)
        lay.addWidget(self.info)
        self.active = False
        self.pos: Optional[tuple[int, int]] = None   # (x, y) the planes go through
        self._timer = QtCore.QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(RENDER_MS)
        self._timer.timeout.connect(self.render)
        c = controller
        c.currentItemChanged.connect(self._on_item)
        c.instancesChanged.connect(self.schedule)
        c.windowChanged.connect(self.schedule)
        c.labelsChanged.connect(self.schedule)
        c.projectClosed.connect(self.render)
        self.volume.updated.connect(lambda: self.schedule(delay=LOADING_MS))
        self.volume.progressed.connect(self._on_progress)
        self.canvas = canvas
        if canvas is not None:
            canvas.cursorMoved.connect(self.set_position)
            canvas.overlayOptionsChanged.connect(self.schedule)
        self.xz.clicked.connect(lambda x, z: self._jump(z, x=x))
        self.yz.clicked.connect(lambda y, z: self._jump(z, y=y))
        self.bar.hide()

    # ------------------------------------------------------------------ state
    def set_active(self, on: bool) -> None:
        """Read and draw only while shown (the dock's visibility)."""
        self.active = bool(on)
        if self.active:
            self.volume.load()
            self.render()

    def set_position(self, x: int, y: int) -> None:
        if x < 0 or y < 0:
            return  # the cursor left the image: keep the planes where they were
        if self.pos != (x, y):
            self.pos = (x, y)
            self.schedule()

    def schedule(self, *_args, delay: int = RENDER_MS) -> None:
        if self.active and not self._timer.isActive():
            self._timer.start(delay)

    def _on_item(self, item_id: str) -> None:
        if self.active:
            self.volume.load()
        elif self.volume.ids and item_id not in self.volume.ids:
            self.volume.stop()  # hidden and on another stack: free the memory
        self.schedule()

    def _on_progress(self, done: int, total: int) -> None:
        self.bar.setMaximum(total)
        self.bar.setValue(done)
        self.bar.setVisible(done < total)

    def _jump(self, z: int, x: Optional[int] = None, y: Optional[int] = None) -> None:
        v = self.volume
        if not 0 <= z < v.n:
            return
        px, py = self.pos or (0, 0)
        self.pos = (px if x is None else x, py if y is None else y)
        if v.ids[z] != self.controller.item_id:
            self.controller.request_item(v.ids[z])
        self.schedule()

    # ------------------------------------------------------------------ drawing
    def _rgb(self, raw: np.ndarray, rows: np.ndarray, masks: np.ndarray, colors: np.ndarray) -> np.ndarray:
        win = self.controller.window
        grey = to_uint8(raw, window=win) if (win is not None or raw.dtype != np.uint8) else raw
        rgb = np.repeat(grey[..., None], 3, axis=2) if grey.ndim == 2 else grey[..., :3].copy()
        rgb[~rows] = UNREAD
        hit = masks > 0
        if hit.any():
            col = colors[masks[hit] - 1].astype(np.float32)
            rgb[hit] = (rgb[hit] * (1 - MASK_ALPHA) + col * MASK_ALPHA).astype(np.uint8)
        return rgb

    def _colors(self):
        """(colour number of an instance, RGB table): as the canvas colours (label or object)."""
        c = self.controller
        if getattr(self.canvas, "color_by", "label") == "instance":
            return instance_color_index, np.array(instance_colors(), np.uint8)
        labels = c.labels.names() if c.labels is not None else []
        index = {name: k for k, name in enumerate(labels)}
        colors = np.array([c.label_color(nm) for nm in labels] or [(255, 0, 0)], np.uint8)
        return (lambda inst: index.get(inst.label, 0)), colors

    def render(self) -> None:
        c, v = self.controller, self.volume
        if not self.active:
            return
        if c.item_id is None or v.n == 0 or v.volume is None:
            msg = v.error or ("Orthogonal views show stacks and series." if c.item_id else "")
            if v.n and not v.error:
                msg = "reading slices …"
            for view in (self.xz, self.yz):
                view.set_plane(None, (1, 1), (-1, -1), view.title)
            self.info.setText(msg)
            return
        n, H, W = v.volume.shape[:3]
        x, y = self.pos if self.pos is not None else (W // 2, H // 2)
        x, y = min(max(0, x), W - 1), min(max(0, y), H - 1)
        z = v.ids.index(c.item_id) if c.item_id in v.ids else -1
        dz, dy, dx = v.spacing()
        color_of, colors = self._colors()
        hidden = c.hidden_labels()

        def masks(axis, pos):
            return v.mask_plane(axis, pos, color_of, hidden)

        rows = np.repeat(v.filled[:, None], W, axis=1)
        self.xz.set_plane(self._rgb(v.plane("xz", y), rows, masks("xz", y), colors),
                          (W * dx, n * dz), (x, z), f"XZ  (y = {y})")
        rows = np.repeat(v.filled[:, None], H, axis=1)
        self.yz.set_plane(self._rgb(v.plane("yz", x), rows, masks("yz", x), colors),
                          (H * dy, n * dz), (y, z), f"YZ  (x = {x})")
        unit = "mm" if v.spacing() != (1.0, 1.0, 1.0) else "px"
        self.info.setText(f"{n} slices · spacing z {dz:g}, y {dy:g}, x {dx:g} {unit}"
                          + (f" · {v.error}" if v.error else ""))
