"""Reviewing model output: apply results, score slider, accept / reject, next unreviewed.

Rules:
- Reviewed items are never overwritten by auto-segment.
- Results for the item on the canvas go through the controller as one undoable step
  (Ctrl+Z brings the previous masks back). When the user has already edited that item in
  this session and did not ask for it explicitly, the results wait ("pending") until the
  user applies them, so work in progress is never replaced behind their back.
- Results for other items are written to their annotation files (the engine's atomic
  save), replacing earlier model output and keeping manual, classic and imported
  instances — engine.results' merge rule, the one `maskloop segment` uses too.
- The score slider hides low-score predictions live; "Accept" keeps what is shown:
  predictions hidden by the slider are removed and the item becomes "reviewed".
"""
from __future__ import annotations

from typing import Optional

from PyQt5 import QtCore, QtWidgets

from engine.annotations import Instance, ItemAnnotation
from engine.errors import MaskLoopError
from engine.history import Change
from engine.results import DEFAULT_SCORE, STORE_SCORE, above_floor, merge_results, merged_annotation


def is_prediction(inst: Instance) -> bool:
    return inst.source == "model" and inst.score is not None


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
            self.view.set_instance_filter(self.visible)
        self.scoreThresholdChanged.emit(value)

    def attach_view(self, view) -> None:
        """Make the canvas draw only the instances this review shows (score slider)."""
        self.view = view
        if view is not None:
            view.set_instance_filter(self.visible)

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
        if source == "model":
            instances = above_floor(instances)
        if item_id == ctl.item_id and ctl.annotation is not None:
            if ctl.annotation.status == "reviewed":
                self.message.emit(f"{item_id} is reviewed: auto-segment leaves it as it is")
                return "skipped"
            if not explicit and ctl.has_session_edits(item_id):
                self.pending[item_id] = (list(instances), source)
                self.pendingChanged.emit()
                self.message.emit(f"new {'predictions' if source == 'model' else 'proposals'} for "
                                  f"{item_id} are ready; you are editing it, so they wait: "
                                  f"Model > Apply waiting results")
                return "pending"
            self._apply_current(instances, source)
            return "applied"
        if ctl.has_session_edits(item_id) and not explicit:
            # edited earlier in this session: keep its undo history valid, let the user decide
            if project.status(item_id) == "reviewed":
                return "skipped"
            self.pending[item_id] = (list(instances), source)
            self.pendingChanged.emit()
            return "pending"
        try:
            ann = merged_annotation(project.load_annotation(item_id), instances, source=source)
            if ann is None:
                return "skipped"   # reviewed
            project.save_annotation(ann)
        except (MaskLoopError, OSError) as e:
            self.message.emit(f"{item_id}: results not saved ({e})")
            return "failed"
        ctl.item_written(item_id, ann)
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
        what = "Auto-segment" if source == "model" else "Auto-segment without a model"
        with ctl.macro(what):
            if changes:
                ctl.commit(what, changes, select=[])
            if ann.status != "predicted":
                ctl.set_status("predicted")
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
        with ctl.macro("Accept item"):
            if hidden:
                ctl.commit("Remove hidden predictions", [Change(i, None) for i in hidden])
            changed = ctl.set_status("reviewed")
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
        self.counts.setWordWrap(True)
        self.slider.valueChanged.connect(lambda v: review.set_score_threshold(v / 100.0))
        review.scoreThresholdChanged.connect(self._sync)
        ctl = review.controller
        for sig in (ctl.instancesChanged, ctl.currentItemChanged, ctl.statusChanged):
            sig.connect(self._update_counts)
        review.scoreThresholdChanged.connect(self._update_counts)

        self.accept_button = QtWidgets.QPushButton("Accept item")
        self.accept_button.setObjectName("acceptItem")
        self.accept_button.setToolTip("Keep what is shown and mark the item reviewed (Ctrl+Return)")
        self.reject_button = QtWidgets.QPushButton("Reject")
        self.reject_button.setToolTip("Delete the selected predictions (R)")
        self.reject_button.setObjectName("rejectSelected")
        self.next_button = QtWidgets.QPushButton("Next unreviewed")
        self.next_button.setToolTip("Go to the next item that is not reviewed yet (U)")
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
        text = f"{ann.status} · {len(preds) - hidden} prediction(s) shown"
        if hidden:
            text += f" · {hidden} hidden below {self.review.score_threshold:.2f}"
        if other:
            text += f" · {other} other"
        self.counts.setText(text)
