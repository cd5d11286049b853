"""The cold-start dialog: auto-segment without a model (threshold + watershed proposals,
two sliders, a live preview). The caller runs the chosen parameters through the worker."""
from __future__ import annotations

from typing import Optional

import numpy as np
from PyQt5 import QtCore, QtGui, QtWidgets

from engine.errors import MaskLoopError


def _preview_pixmap(display: np.ndarray, instances: list, max_side: int = 420) -> QtGui.QPixmap:
    """The display image with proposals filled in colour, scaled to max_side."""
    import cv2
    from engine.annotations import default_color
    img = display
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    img = img[..., :3].astype(np.float32)
    over = img.copy()
    lab = np.zeros(img.shape[:2], np.int32)
    for k, inst in enumerate(instances, start=1):
        inst.paste_into(lab, k)
    for k in range(1, len(instances) + 1):
        over[lab == k] = default_color(k)
    out = (0.55 * img + 0.45 * over).astype(np.uint8)
    edges = cv2.morphologyEx((lab > 0).astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    edges |= cv2.morphologyEx(lab.astype(np.float32), cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    out[edges] = (255, 255, 255)
    h, w = out.shape[:2]
    s = max_side / max(h, w)
    if s != 1.0:
        out = cv2.resize(out, (max(1, int(w * s)), max(1, int(h * s))),
                         interpolation=cv2.INTER_AREA if s < 1.0 else cv2.INTER_NEAREST)
    out = np.ascontiguousarray(out)
    qimg = QtGui.QImage(out.data, out.shape[1], out.shape[0], out.strides[0], QtGui.QImage.Format_RGB888)
    return QtGui.QPixmap.fromImage(qimg.copy())


class ClassicDialog(QtWidgets.QDialog):
    """Cold start: threshold + watershed proposals, tuned by two sliders, previewed live.

    The caller runs the chosen parameters through the worker (this item or every
    unreviewed item); `params()` gives them, `scope` says which ("current" | "unreviewed").
    """

    PREVIEW_MAX = 1024  # preview on (at most) the central 1024 x 1024 pixels: instant

    def __init__(self, controller, parent=None, *, has_model: bool = False) -> None:
        super().__init__(parent)
        self.setWindowTitle("Auto-segment without a model")
        self.setObjectName("ClassicDialog")
        self.controller = controller
        self.scope = "current"
        self.instances: list = []
        note = QtWidgets.QLabel(
            ("<b>No model is trained yet.</b> " if not has_model else "")
            + "These proposals come from simple thresholding and a watershed split, not from a "
              "model. Tune the two sliders until most objects are found, apply, correct what is "
              "wrong, <i>Accept</i> the item — and after a few items press <b>Train</b>.")
        note.setObjectName("noModelNote")
        note.setWordWrap(True)
        self.level = QtWidgets.QSlider(QtCore.Qt.Horizontal)
        self.level.setObjectName("levelSlider")
        self.level.setRange(0, 100)
        self.auto_level = QtWidgets.QCheckBox("automatic (Otsu)")
        self.auto_level.setObjectName("autoLevel")
        self.auto_level.setChecked(True)
        self.split = QtWidgets.QSlider(QtCore.Qt.Horizontal)
        self.split.setObjectName("splitSlider")
        self.split.setRange(0, 100)
        self.split.setValue(50)
        self.polarity = QtWidgets.QComboBox()
        self.polarity.addItem("auto", "auto")
        self.polarity.addItem("bright objects", "bright")
        self.polarity.addItem("dark objects", "dark")
        self.preview = QtWidgets.QLabel()
        self.preview.setObjectName("classicPreview")
        self.preview.setFixedSize(380, 380)
        self.preview.setAlignment(QtCore.Qt.AlignCenter)
        self.summary = QtWidgets.QLabel()
        self.summary.setObjectName("classicSummary")
        form = QtWidgets.QFormLayout()
        lv = QtWidgets.QHBoxLayout()
        lv.addWidget(self.level, 1)
        lv.addWidget(self.auto_level)
        form.addRow("Threshold:", lv)
        form.addRow("Split touching objects:", self.split)
        form.addRow("Objects are:", self.polarity)
        buttons = QtWidgets.QDialogButtonBox()
        self.apply_current = buttons.addButton("Apply to this item", QtWidgets.QDialogButtonBox.AcceptRole)
        self.apply_current.setObjectName("applyCurrent")
        self.apply_all = buttons.addButton("Apply to all unreviewed items", QtWidgets.QDialogButtonBox.AcceptRole)
        self.apply_all.setObjectName("applyAll")
        buttons.addButton(QtWidgets.QDialogButtonBox.Cancel)
        self.apply_current.clicked.connect(lambda: self._finish("current"))
        self.apply_all.clicked.connect(lambda: self._finish("unreviewed"))
        buttons.rejected.connect(self.reject)
        lay = QtWidgets.QVBoxLayout(self)
        lay.addWidget(note)
        lay.addLayout(form)
        lay.addWidget(self.preview, 0, QtCore.Qt.AlignHCenter)
        lay.addWidget(self.summary)
        lay.addWidget(buttons)
        self._timer = QtCore.QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(120)
        self._timer.timeout.connect(self.update_preview)
        self.level.valueChanged.connect(self._level_moved)
        self.auto_level.toggled.connect(lambda on: self._timer.start())
        self.split.valueChanged.connect(lambda _v: self._timer.start())
        self.polarity.currentIndexChanged.connect(lambda _v: self._timer.start())
        self._init_level()
        self.update_preview()
        lay.setSizeConstraint(QtWidgets.QLayout.SetMinimumSize)
        self.resize(580, lay.totalMinimumSize().height() + 110)  # room for the wrapped note

    def _crop(self) -> tuple[np.ndarray, Optional[np.ndarray], int, int]:
        ctl = self.controller
        img = ctl.image
        disp = ctl.display_image()
        if img is None:
            return np.zeros((1, 1), np.uint8), None, 0, 0
        H, W = img.shape[:2]
        m = self.PREVIEW_MAX
        y0, x0 = max(0, (H - m) // 2), max(0, (W - m) // 2)
        sl = (slice(y0, y0 + m), slice(x0, x0 + m))
        return img[sl], (disp[sl] if disp is not None else None), x0, y0

    def _init_level(self) -> None:
        from engine.classic_proposals import ProposalParams, foreground
        img, _d, _x, _y = self._crop()
        try:
            level = foreground(img, ProposalParams())[1]
        except Exception:
            level = 0.5
        self.level.blockSignals(True)
        self.level.setValue(int(round(level * 100)))
        self.level.blockSignals(False)

    def _level_moved(self, _v: int) -> None:
        self.auto_level.blockSignals(True)
        self.auto_level.setChecked(False)
        self.auto_level.blockSignals(False)
        self._timer.start()

    def params(self) -> dict:
        return {"level": None if self.auto_level.isChecked() else self.level.value() / 100.0,
                "split": self.split.value() / 100.0, "polarity": self.polarity.currentData()}

    def update_preview(self) -> None:
        from engine.classic_proposals import propose
        img, disp, _x0, _y0 = self._crop()
        try:
            self.instances = propose(img, **self.params())
        except (ValueError, MaskLoopError) as e:
            self.summary.setText(str(e))
            return
        if disp is not None:
            side = 376  # the preview label is at least 380 x 380
            self.preview.setPixmap(_preview_pixmap(disp, self.instances, max_side=side))
        cropped = self.controller.image is not None and self._crop()[0].shape != self.controller.image.shape
        self.summary.setText(f"{len(self.instances)} object(s) found"
                             + (" in the central 1024×1024 pixels (preview)" if cropped else ""))

    def _finish(self, scope: str) -> None:
        self.scope = scope
        self.accept()
