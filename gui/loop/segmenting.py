"""Auto-segment, the loop's first step: this item, the selected items or every unreviewed
item, with the active model (gui.loop.inference, off the GUI thread) or without one
(classic proposals, for the cold start). Results go through gui.loop.review."""
from __future__ import annotations

import time
from typing import Optional

from PyQt5 import QtWidgets

from engine.errors import MaskLoopError
from engine.results import STORE_SCORE

from ..dialogs.classic_dialog import ClassicDialog
from ..dialogs.training_view import format_eta


class SegmentProgress(QtWidgets.QWidget):
    """Status-bar widget: progress of auto-segment, ETA, Cancel (hidden when idle)."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("SegmentProgress")
        self.label = QtWidgets.QLabel("")
        self.bar = QtWidgets.QProgressBar()
        self.bar.setMaximumWidth(160)
        self.bar.setMaximumHeight(16)
        self.cancel_button = QtWidgets.QToolButton()
        self.cancel_button.setText("Cancel")
        self.cancel_button.setObjectName("cancelSegment")
        lay = QtWidgets.QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.label)
        lay.addWidget(self.bar)
        lay.addWidget(self.cancel_button)
        self.setVisible(False)

    def show_progress(self, done: int, total: int, eta: float, what: str) -> None:
        self.setVisible(True)
        self.bar.setRange(0, max(1, total))
        self.bar.setValue(done)
        eta_txt = f" · ETA {format_eta(eta)}" if eta >= 0 and done < total else ""
        self.label.setText(f"{what} {done}/{total}{eta_txt}")


class Segmenting:
    """The auto-segment part of gui.loop.Loop (a mixin: it uses the Loop's controller,
    segmenter, review, jobs and status bar)."""

    # ------------------------------------------------------------------ auto-segment
    def segment_current(self) -> Optional[int]:
        c = self.controller
        if c.annotation is None:
            return None
        if c.annotation.status == "reviewed":
            self._status(f"{c.item_id} is reviewed; auto-segment never overwrites reviewed items")
            return None
        if self.active_model_path() is None:
            self._status("No model is trained yet: use Auto-segment without a model, or Train first")
            return self.classic_dialog()
        return self._segment([c.item_id], explicit=True, what="auto-segment")

    def segment_selected(self) -> Optional[int]:
        ids = self.window.images_panel.selected_item_ids()
        return self.segment_items(ids or ([self.controller.item_id] if self.controller.item_id else []))

    def segment_unreviewed(self) -> Optional[int]:
        return self.segment_items(self.review.unreviewed_ids())

    def segment_items(self, ids: list) -> Optional[int]:
        c = self.controller
        ids = [i for i in ids if c.status_of(i) != "reviewed"]
        if not ids:
            self._status("nothing to segment: every chosen item is reviewed")
            return None
        if self.active_model_path() is None:
            self._status("No model is trained yet: use Auto-segment without a model, or Train first")
            return None
        explicit = ids == [c.item_id]
        return self._segment(ids, explicit=explicit, what="auto-segment")

    def _segment(self, ids: list, *, explicit: bool, what: str) -> Optional[int]:
        c = self.controller
        c.flush()
        try:
            jid = self.segmenter.segment(c.project, ids, model_path=self.active_model_path(),
                                         run_id=c.project.active_model, score_threshold=STORE_SCORE)
        except MaskLoopError as e:
            self._status(e.one_line())
            return None
        self.jobs[jid] = {"source": "model", "explicit": explicit, "what": what, "started": time.perf_counter(),
                          "counts": {}, "items": list(ids)}
        self.segment_progress.show_progress(0, len(ids), -1, what)
        return jid

    def classic_dialog(self) -> Optional[int]:
        """Cold start: proposals without a model (two sliders, live preview)."""
        c = self.controller
        if c.annotation is None:
            return None
        dlg = ClassicDialog(c, self.window, has_model=self.active_model_path() is not None)
        self.last_classic_dialog = dlg
        if not self.exec_classic_dialog(dlg):
            return None
        return self.run_classic(dlg.params(), dlg.scope)

    def run_classic(self, params: dict, scope: str = "current") -> Optional[int]:
        c = self.controller
        if c.project is None:
            return None
        if scope == "current":
            if c.annotation is None or c.annotation.status == "reviewed":
                self._status("the item on screen is reviewed; nothing to do")
                return None
            ids = [c.item_id]
        else:
            ids = self.review.unreviewed_ids()
        if not ids:
            return None
        c.flush()
        label = c.ensure_label()
        jid = self.segmenter.propose(c.project, ids, label=label, **params)
        self.jobs[jid] = {"source": "classic", "explicit": scope == "current", "what": "proposals",
                          "started": time.perf_counter(), "counts": {}, "items": list(ids)}
        self.segment_progress.show_progress(0, len(ids), -1, "proposals")
        return jid

    def cancel_segment(self) -> None:
        self.segmenter.cancel()
        self._status("cancelling auto-segment…")

    def _on_item_done(self, jid: int, item_id: str, instances, seconds: float) -> None:
        job = self.jobs.get(jid)
        if job is None or self.controller.project is None:
            return
        outcome = self.review.apply_results(item_id, instances, source=job["source"], explicit=job["explicit"])
        job["counts"][outcome] = job["counts"].get(outcome, 0) + 1

    def _on_segment_progress(self, jid: int, done: int, total: int, eta: float, _msg: str) -> None:
        job = self.jobs.get(jid)
        self.segment_progress.show_progress(done, total, eta, job["what"] if job else "auto-segment")

    def _on_segment_finished(self, jid: int, summary: dict) -> None:
        job = self.jobs.pop(jid, {})
        counts = job.get("counts", {})
        summary = dict(summary, outcomes=counts, wall_s=time.perf_counter() - job.get("started", time.perf_counter()))
        self.last_segment_summary = summary
        if not self.segmenter.busy:
            self.segment_progress.setVisible(False)
        parts = [f"{summary['done']} of {summary['items']} item(s) done in {summary['seconds']:.1f} s"]
        if counts.get("skipped"):
            parts.append(f"{counts['skipped']} reviewed left as they were")
        if counts.get("pending"):
            parts.append(f"{counts['pending']} waiting (being edited: Model › Apply waiting results)")
        if summary.get("failed"):
            parts.append(f"{summary['failed']} failed")
        if summary.get("cancelled"):
            parts.insert(0, "cancelled")
        self._status(f"{job.get('what', 'auto-segment')}: " + "; ".join(parts), 15000)
        self._update_enabled()

    def _on_segment_failed(self, jid: int, message: str) -> None:
        self.jobs.pop(jid, None)
        if not self.segmenter.busy:
            self.segment_progress.setVisible(False)
        self.window.notify(f"Auto-segment stopped: {message}", error=True)

    def _on_active_model(self, run_id) -> None:
        path = self.active_model_path()
        self.segmenter.set_model(path, warm=path is not None)   # reloaded at once, in the worker
        self._update_no_model()
        self._update_enabled()
