"""Window / level: CT presets (soft tissue, bone, lung), auto (percentiles) and sliders for
the centre and width. Display only: the stored data and what the model sees never change."""
from __future__ import annotations

import numpy as np
from PyQt5 import QtCore, QtWidgets

from engine.imageio import format_spacing

PRESETS = ("soft tissue", "bone", "lung")


class WindowLevelPanel(QtWidgets.QWidget):
    def __init__(self, controller, parent=None) -> None:
        super().__init__(parent)
        self.controller = controller
        self.buttons: dict[str, QtWidgets.QPushButton] = {}
        grid = QtWidgets.QGridLayout()
        for k, name in enumerate(PRESETS + ("auto",)):
            b = QtWidgets.QPushButton(name.capitalize() if name != "auto" else "Auto (0.5–99.5%)")
            b.setFocusPolicy(QtCore.Qt.NoFocus)
            b.clicked.connect(lambda _=False, n=name: self.apply(n))
            self.buttons[name] = b
            grid.addWidget(b, k // 2, k % 2)
        self.center = QtWidgets.QSlider(QtCore.Qt.Horizontal)
        self.width = QtWidgets.QSlider(QtCore.Qt.Horizontal)
        self.center_box = QtWidgets.QDoubleSpinBox()
        self.width_box = QtWidgets.QDoubleSpinBox()
        for s in (self.center, self.width):
            s.setRange(0, 1000)
            s.setFocusPolicy(QtCore.Qt.NoFocus)
        for b in (self.center_box, self.width_box):
            b.setDecimals(1)
            b.setKeyboardTracking(False)
        form = QtWidgets.QGridLayout()
        form.addWidget(QtWidgets.QLabel("Level"), 0, 0)
        form.addWidget(self.center, 0, 1)
        form.addWidget(self.center_box, 0, 2)
        form.addWidget(QtWidgets.QLabel("Width"), 1, 0)
        form.addWidget(self.width, 1, 1)
        form.addWidget(self.width_box, 1, 2)
        self.info = QtWidgets.QLabel()
        self.info.setWordWrap(True)
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addLayout(grid)
        lay.addLayout(form)
        lay.addWidget(self.info)
        lay.addStretch(1)
        self._lo, self._hi = 0.0, 1.0
        self._updating = False
        # a slider drag re-maps the image at most every 40 ms
        self._throttle = QtCore.QTimer(self)
        self._throttle.setSingleShot(True)
        self._throttle.setInterval(40)
        self._throttle.timeout.connect(self._push)
        self.center.valueChanged.connect(lambda _v: self._throttle.start() if not self._updating else None)
        self.width.valueChanged.connect(lambda _v: self._throttle.start() if not self._updating else None)
        self.center_box.valueChanged.connect(self._from_boxes)
        self.width_box.valueChanged.connect(self._from_boxes)
        controller.currentItemChanged.connect(self._on_item)
        controller.windowChanged.connect(self._show)
        controller.projectClosed.connect(lambda: self.setEnabled(False))
        self.setEnabled(False)

    def apply(self, name: str) -> None:
        if name == "auto":
            self.controller.auto_window()
        else:
            self.controller.apply_preset(name)

    def _on_item(self, _item_id: str) -> None:
        img = self.controller.image
        if img is None:
            return
        self.setEnabled(True)
        if img.dtype.kind in "ui":
            info = np.iinfo(img.dtype)
            lo, hi = float(info.min), float(info.max)
            if img.dtype.itemsize >= 2:  # use the data's range, not 0..65535
                step = max(1, int(np.sqrt(img.size / 250_000)))
                sub = img[::step, ::step]
                lo, hi = float(sub.min()), float(sub.max())
        else:
            step = max(1, int(np.sqrt(img.size / 250_000)))
            sub = img[::step, ::step]
            sub = sub[np.isfinite(sub)]
            lo, hi = (float(sub.min()), float(sub.max())) if sub.size else (0.0, 1.0)
        src = self.controller.source
        hu = src is not None and src.unit == "HU"  # only what the file's rescale says is HU
        if hu:
            lo, hi = min(lo, -1024.0), max(hi, 3071.0)
        if src is not None and src.window is not None:  # the file's window stays reachable
            c, w = src.window
            lo, hi = min(lo, c - w / 2), max(hi, c + w / 2)
        if hi <= lo:
            hi = lo + 1.0
        self._lo, self._hi = lo, hi
        span = hi - lo
        self._updating = True
        try:
            self.center_box.setRange(lo - span, hi + span)
            self.width_box.setRange(span / 1000.0, 2 * span)
        finally:
            self._updating = False
        ct = hu or (src is not None and (src.modality == "CT" or img.dtype == np.int16))
        for name in PRESETS:
            self.buttons[name].setEnabled(ct)
        text = f"{img.dtype}, values {lo:g} … {hi:g}" + (" HU" if hu else "")
        if src is not None and src.window is not None:
            text += f"\nfile window {src.window[0]:g} / {src.window[1]:g}"
        if src is not None:
            text += "\n" + format_spacing(src.geometry, src.n_slices)
        self.info.setText(text)
        self._show(self.controller.window)

    def _show(self, win) -> None:
        if win is None:
            win = ((self._lo + self._hi) / 2, self._hi - self._lo)
        c, w = win
        span = self._hi - self._lo
        self._updating = True
        try:
            self.center.setValue(int(round(1000 * (c - self._lo) / span)))
            self.width.setValue(int(round(1000 * w / (2 * span))))
            self.center_box.blockSignals(True)
            self.width_box.blockSignals(True)
            self.center_box.setValue(c)
            self.width_box.setValue(w)
        finally:
            self.center_box.blockSignals(False)
            self.width_box.blockSignals(False)
            self._updating = False

    def _push(self) -> None:
        span = self._hi - self._lo
        c = self._lo + span * self.center.value() / 1000.0
        w = max(span / 1000.0, 2 * span * self.width.value() / 1000.0)
        self.controller.set_window(c, w)

    def _from_boxes(self, _v=None) -> None:
        if self._updating:
            return
        self.controller.set_window(self.center_box.value(), self.width_box.value())
