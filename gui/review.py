"""Reviewing model output: apply results, score slider, accept / reject, next unreviewed,
and the cold-start "auto-segment without a model" dialog.

Rules (issue 5):
- Reviewed items are never overwritten by auto-segment.
- Results for the item on the canvas go through the controller as one undoable step
  (Ctrl+Z brings the previous masks back). When the user has already edited that item in
  this session and did not ask for it explicitly, the results wait ("pending") until the
  user applies them, so work in progress is never replaced behind their back.
- Results for other items are written to their annotation files (the engine's atomic
  save), replacing earlier model output and keeping manual, classic and imported
  instances — the same rule as `maskloop segment` (Predictor.predict_items).
- The score slider hides low-score predictions live; "Accept" keeps what is shown:
  predictions hidden by the slider are removed and the item becomes "reviewed".
"""
from __future__ import annotations

from typing import Optional

import numpy as np
from PyQt5 import QtCore, QtGui, QtWidgets

from engine.annotations import Instance, ItemAnnotation
from engine.errors import MaskLoopError

from .edits import Change

DEFAULT_SCORE = 0.5      # the slider's start
STORE_SCORE = 0.25       # predictions below this are not kept at all (the slider's floor)


# --------------------------------------------------------------------------------------
# pure helpers
# --------------------------------------------------------------------------------------

def merge_results(ann: ItemAnnotation, results: list[Instance], replace_source: str) -> tuple[list, list]:
    """(instances to remove, instances to add) when `results` (all of `replace_source`)
    arrive for `ann`: earlier instances of that source go, other instances stay, and
    results that duplicate a kept instance (mask IoU >= 0.5) are left out."""
    from engine.masks import iou
    remove = [i for i in ann.instances if i.source == replace_source]
    kept = [i for i in ann.instances if i.source != replace_source]
    add = []
    for p in results:
        dup = False
        for q in kept:
            if (p.x0 < q.x0 + q.width and q.x0 < p.x0 + p.width and p.y0 < q.y0 + q.height
                    and q.y0 < p.y0 + p.height and iou(p, q) >= 0.5):
                dup = True
                break
        if not dup:
            add.append(p)
    return remove, add


def is_prediction(inst: Instance) -> bool:
    return inst.source == "model" and inst.score is not None


def note_external_write(controller, ann: ItemAnnotation) -> None:
    """Tell the controller an item other than the current one was rewritten on disk:
    its status and count change in the views, and its undo history (which no longer
    matches the file) is dropped."""
    hook = getattr(controller, "item_written", None)
    if callable(hook):  # a public hook, when the controller offers one
        hook(ann.item_id, ann)
        return
    # The controller keeps per-item caches; update them the way its own save does.
    statuses = getattr(controller, "_statuses", None)
    if isinstance(statuses, dict) and statuses.get(ann.item_id) != ann.status:
        statuses[ann.item_id] = ann.status
        controller.statusChanged.emit(ann.item_id, ann.status)
    counts = getattr(controller, "_counts", None)
    n = len(ann.instances)
    if isinstance(counts, dict) and counts.get(ann.item_id) != n:
        counts[ann.item_id] = n
        controller.countChanged.emit(ann.item_id, n)
    stacks = getattr(controller, "_stacks", None)
    if isinstance(stacks, dict) and ann.item_id in stacks:
        stacks[ann.item_id].clear()


def has_session_edits(controller, item_id: str) -> bool:
    stacks = getattr(controller, "_stacks", None)
    stack = stacks.get(item_id) if isinstance(stacks, dict) else None
    return bool(stack is not None and stack.count() > 0) or (
        item_id == controller.item_id and bool(getattr(controller, "dirty", False)))


# --------------------------------------------------------------------------------------
# review logic (no widgets of its own)
# --------------------------------------------------------------------------------------

class Review(QtCore.QObject):
    """Applies results and carries out review intents through the controller."""

    scoreThresholdChanged = QtCore.pyqtSignal(float)
    pendingChanged = QtCore.pyqtSignal()
    message = QtCore.pyqtSignal(str)

    def __init__(self, controller, parent=None) -> None:
        super().__init__(parent)
        self.controller = controller
        self.score_threshold = DEFAULT_SCORE
        self.pending: dict[str, tuple[list, str]] = {}   # item id -> (instances, source)
        self.view = None
        controller.projectClosed.connect(self._on_closed)
        controller.currentItemChanged.connect(lambda *_: self.pendingChanged.emit())

    def _on_closed(self) -> None:
        self.pending.clear()
        self.pendingChanged.emit()

    # -- score filter -------------------------------------------------------------------
    def visible(self, inst: Instance) -> bool:
        return not (is_prediction(inst) and inst.score < self.score_threshold - 1e-9)

    def hidden_ids(self, ann: Optional[ItemAnnotation] = None) -> set:
        ann = ann if ann is not None else self.controller.annotation
        if ann is None:
            return set()
        return {i.id for i in ann.instances if not self.visible(i)}

    def set_score_threshold(self, value: float) -> None:
        value = float(min(1.0, max(0.0, value)))
        if abs(value - self.score_threshold) < 1e-9:
            return
        self.score_threshold = value
        ctl = self.controller
        if ctl.annotation is not None:
            # drop hidden instances from the selection so edits cannot touch what is unseen
            hidden = self.hidden_ids()
            if any(i in hidden for i in ctl.selection):
                ctl.set_selection([i for i in ctl.selection if i not in hidden])
        if self.view is not None:
            self.view.rerender(None)
        self.scoreThresholdChanged.emit(value)

    def attach_view(self, view) -> None:
        """Make the canvas draw only instances this review shows (score slider).

        Uses the view's `instance_filter` hook when it has one; otherwise wraps its
        rerender with the same drawing call filtered by score.
        """
        self.view = view
        if view is None:
            return
        if hasattr(view, "set_instance_filter"):
            view.set_instance_filter(self.visible)
            return
        from .canvas.overlay import MARGIN
        ctl = self.controller
        review = self

        def rerender(region) -> None:
            ann = ctl.annotation
            if view.overlay is None or ann is None:
                return
            if region is not None:
                region = (region[0] - MARGIN, region[1] - MARGIN, region[2] + MARGIN, region[3] + MARGIN)
            shown = [i for i in ann.instances if review.visible(i)]
            drawn = view.overlay.render(shown, view.color_index, ctl.hidden_labels(),
                                        getattr(view, "_selected", set()), region)
            if drawn is not None:
                view.overlay_changed(drawn)

        view.rerender = rerender

    # -- results ------------------------------------------------------------------------
    def apply_results(self, item_id: str, instances: list, *, source: str = "model",
                      explicit: bool = False) -> str:
        """Put results of auto-segment (source "model") or proposals ("classic") into an item.

        Returns "applied" (current item, undoable), "written" (another item's file),
        "pending" (the current item has edits in progress), "skipped" (reviewed) or "failed".
        """
        ctl = self.controller
        project = ctl.project
        if project is None:
            return "failed"
        instances = [i for i in instances if source != "model" or i.score is None
                     or i.score >= STORE_SCORE]
        if item_id == ctl.item_id and ctl.annotation is not None:
            if ctl.annotation.status == "reviewed":
                self.message.emit(f"{item_id} is reviewed: auto-segment leaves it as it is")
                return "skipped"
            if not explicit and has_session_edits(ctl, item_id):
                self.pending[item_id] = (list(instances), source)
                self.pendingChanged.emit()
                self.message.emit(f"new {'predictions' if source == 'model' else 'proposals'} for "
                                  f"{item_id} are ready; you are editing it, so they wait: "
                                  f"Model > Apply waiting results")
                return "pending"
            self._apply_current(instances, source)
            return "applied"
        if has_session_edits(ctl, item_id) and not explicit:
            # edited earlier in this session: keep its undo history valid, let the user decide
            if project.status(item_id) == "reviewed":
                return "skipped"
            self.pending[item_id] = (list(instances), source)
            self.pendingChanged.emit()
            return "pending"
        try:
            ann = project.load_annotation(item_id)
            if ann.status == "reviewed":
                return "skipped"
            remove, add = merge_results(ann, instances, source)
            gone = {i.id for i in remove}
            ann.instances = [i for i in ann.instances if i.id not in gone] + add
            if ann.status == "new" or source == "model":
                ann.status = "predicted"
            project.save_annotation(ann)
        except (MaskLoopError, OSError) as e:
            self.message.emit(f"{item_id}: results not saved ({e})")
            return "failed"
        note_external_write(ctl, ann)
        return "written"

    def _apply_current(self, instances: list, source: str) -> None:
        ctl = self.controller
        ann = ctl.annotation
        remove, add = merge_results(ann, instances, source)
        changes = [Change(i, None) for i in remove] + [Change(None, i) for i in add]
        self.pending.pop(ctl.item_id, None)
        if not changes and ann.status == "predicted":
            self.pendingChanged.emit()
            return
        stack = ctl.undo_stack
        what = "Auto-segment" if source == "model" else "Auto-segment without a model"
        stack.beginMacro(what)
        try:
            if changes:
                ctl.commit(what, changes, select=[])
            if ann.status != "predicted":
                ctl.set_status("predicted")
        finally:
            stack.endMacro()
        self.pending.pop(ctl.item_id, None)
        self.pendingChanged.emit()

    def has_pending(self, item_id: Optional[str] = None) -> bool:
        return (item_id or self.controller.item_id) in self.pending

    def apply_pending(self) -> bool:
        """Apply waiting results to the current item (one undoable step)."""
        ctl = self.controller
        entry = self.pending.pop(ctl.item_id, None)
        if entry is None:
            return False
        if ctl.annotation is None or ctl.annotation.status == "reviewed":
            self.pendingChanged.emit()
            return False
        self._apply_current(*entry)
        return True

    # -- intents --------------------------------------------------------------------------
    def accept_item(self) -> bool:
        """Keep what is shown: remove predictions hidden by the slider, mark reviewed."""
        ctl = self.controller
        ann = ctl.annotation
        if ann is None:
            return False
        hidden = [i for i in ann.instances if not self.visible(i)]
        if not hidden and ann.status == "reviewed":
            self.message.emit(f"{ctl.item_id} is already reviewed")
            return False
        stack = ctl.undo_stack
        stack.beginMacro("Accept item")
        try:
            if hidden:
                ctl.commit("Remove hidden predictions", [Change(i, None) for i in hidden])
            changed = ctl.set_status("reviewed")
        finally:
            stack.endMacro()
        self.pending.pop(ctl.item_id, None)
        ctl.flush()
        self.message.emit(f"{ctl.item_id} accepted ({len(ann.instances)} instance(s))"
                          + (f"; {len(hidden)} low-score prediction(s) removed" if hidden else ""))
        return changed or bool(hidden)

    def reject_selected(self) -> int:
        """Delete the selected instances that are model (or classic) output."""
        ctl = self.controller
        sel = [i for i in ctl.selected_instances() if i.source in ("model", "classic")]
        if not sel:
            self.message.emit("select model predictions to reject (click, Shift+click)")
            return 0
        ctl.commit("Reject predictions", [Change(i, None) for i in sel], select=[])
        return len(sel)

    def reject_hidden(self) -> int:
        """Delete every prediction below the score threshold on the current item."""
        ctl = self.controller
        ann = ctl.annotation
        if ann is None:
            return 0
        hidden = [i for i in ann.instances if not self.visible(i)]
        if hidden:
            ctl.commit("Reject low-score predictions", [Change(i, None) for i in hidden])
        return len(hidden)

    def next_unreviewed(self, step: int = 1) -> bool:
        """Go to the next item (in project order, wrapping) that is not reviewed."""
        ctl = self.controller
        ids = [it.id for it in ctl.items]
        if not ids:
            return False
        start = ids.index(ctl.item_id) if ctl.item_id in ids else -1
        n = len(ids)
        for k in range(1, n + 1):
            cand = ids[(start + step * k) % n]
            if cand == ctl.item_id:
                continue
            if ctl.status_of(cand) != "reviewed":
                return ctl.set_current_item(cand)
        self.message.emit("every item is reviewed")
        return False

    def unreviewed_ids(self) -> list[str]:
        return [it.id for it in self.controller.items if self.controller.status_of(it.id) != "reviewed"]


# --------------------------------------------------------------------------------------
# widgets
# --------------------------------------------------------------------------------------

class ReviewBar(QtWidgets.QWidget):
    """Score slider plus Accept / Reject / Next unreviewed buttons (a dock's content)."""

    def __init__(self, review: Review, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("ReviewBar")
        self.review = review
        self.slider = QtWidgets.QSlider(QtCore.Qt.Horizontal)
        self.slider.setObjectName("scoreSlider")
        self.slider.setRange(int(STORE_SCORE * 100), 100)
        self.slider.setValue(int(round(review.score_threshold * 100)))
        self.slider.setToolTip("Hide model predictions scoring below this")
        self.value = QtWidgets.QLabel()
        self.value.setMinimumWidth(36)
        self.counts = QtWidgets.QLabel()
        self.counts.setObjectName("reviewCounts")
        self.slider.valueChanged.connect(lambda v: review.set_score_threshold(v / 100.0))
        review.scoreThresholdChanged.connect(self._sync)
        ctl = review.controller
        for sig in (ctl.instancesChanged, ctl.currentItemChanged, ctl.statusChanged):
            sig.connect(self._update_counts)
        review.scoreThresholdChanged.connect(self._update_counts)

        self.accept_button = QtWidgets.QPushButton("Accept item")
        self.accept_button.setObjectName("acceptItem")
        self.accept_button.setToolTip("Keep what is shown and mark the item reviewed (Ctrl+Return)")
        self.reject_button = QtWidgets.QPushButton("Reject selected")
        self.reject_button.setObjectName("rejectSelected")
        self.next_button = QtWidgets.QPushButton("Next unreviewed")
        self.next_button.setObjectName("nextUnreviewed")
        self.accept_button.clicked.connect(review.accept_item)
        self.reject_button.clicked.connect(review.reject_selected)
        self.next_button.clicked.connect(lambda: review.next_unreviewed())

        row = QtWidgets.QHBoxLayout()
        row.addWidget(QtWidgets.QLabel("Min. score"))
        row.addWidget(self.slider, 1)
        row.addWidget(self.value)
        buttons = QtWidgets.QHBoxLayout()
        buttons.addWidget(self.accept_button)
        buttons.addWidget(self.reject_button)
        buttons.addWidget(self.next_button)
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addLayout(row)
        lay.addWidget(self.counts)
        lay.addLayout(buttons)
        lay.addStretch(1)
        self._sync(review.score_threshold)
        self._update_counts()

    def _sync(self, value: float) -> None:
        self.value.setText(f"{value:.2f}")
        v = int(round(value * 100))
        if self.slider.value() != v:
            self.slider.blockSignals(True)
            self.slider.setValue(v)
            self.slider.blockSignals(False)

    def _update_counts(self, *_args) -> None:
        ctl = self.review.controller
        ann = ctl.annotation
        if ann is None:
            self.counts.setText("")
            return
        preds = [i for i in ann.instances if is_prediction(i)]
        hidden = sum(1 for i in preds if not self.review.visible(i))
        other = len(ann.instances) - len(preds)
        text = f"{ann.status}: {len(preds) - hidden} prediction(s) shown"
        if hidden:
            text += f", {hidden} hidden below {self.review.score_threshold:.2f}"
        if other:
            text += f", {other} other instance(s)"
        self.counts.setText(text)


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
