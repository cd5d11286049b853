"""The human-in-the-loop workflow on top of the canvas window (issue 5).

`install_workflow(window)` (alias `install`, which gui.main_window calls for modules in
EXTENSION_MODULES) adds to the main window:

- a Model menu and toolbar: auto-segment this item / the selected items / every
  unreviewed item (a QThread worker with a warm model, progress, ETA and Cancel in the
  status bar), auto-segment without a model (classic threshold + watershed, for the
  cold start), apply waiting results, Train… and Cancel training;
- Item menu entries: Accept item (A, Ctrl+Return), Reject selected predictions (R),
  Next unreviewed (U);
- docks: Review (score slider, accept / reject / next), Models (runs, make active),
  Training (live loss and validation AP plot, ETA, Cancel);
- File menu entries: Import annotations…, Export annotations…, Open demo project…;
- the first-start dialog (new / open / demo) when the window opens without a project.

Everything long runs off the GUI thread: inference in gui.workers.SegmentService,
training in a child process (gui.workers.TrainingRunner). Results reach the project
only through gui.review.Review (the controller for the item on screen; the engine's
atomic save for the others; reviewed items never).
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Optional

from PyQt5 import QtCore, QtWidgets

from engine.errors import MaskLoopError

from .dialogs.training_view import TrainingView, format_eta
from .panels.models_panel import ModelsPanel
from .review import STORE_SCORE, ClassicDialog, Review, ReviewBar
from .workers import SegmentService, TrainingRunner


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


class Workflow(QtCore.QObject):
    """The model workflow of one main window (window.workflow)."""

    def __init__(self, window, *, predictor_factory=None, segment_device: str = "auto") -> None:
        super().__init__(window)
        self.window = window
        self.controller = window.controller
        kw = {"predictor_factory": predictor_factory} if predictor_factory is not None else {}
        self.segmenter = SegmentService(self, device=segment_device, **kw)
        self.runner = TrainingRunner(self)
        self.review = Review(self.controller, self)
        self.review.attach_view(window.canvas)
        self.jobs: dict[int, dict] = {}
        self.train_options: Optional[dict] = None
        self.train_started_at = 0.0
        self.last_train_seconds: Optional[float] = None   # Train click -> new model active
        self._train_clicked_at = 0.0
        self.last_segment_summary: Optional[dict] = None
        self.confirm_quit = self._confirm_quit
        self.confirm_resume = self._confirm_resume
        self._can_resume = False  # a cancelled run waits (see _refresh_resumable)
        #: (TrainDialog) -> bool; replaced by tests to drive the dialog without exec_()
        self.exec_train_dialog = lambda dlg: dlg.exec_() == QtWidgets.QDialog.Accepted
        self.exec_classic_dialog = lambda dlg: dlg.exec_() == QtWidgets.QDialog.Accepted
        self.first_run_dialog = None
        self._build_docks()
        self._build_actions()
        self._connect()
        window.installEventFilter(self)
        app = QtWidgets.QApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.shutdown)
        if self.controller.project is not None:
            self._on_project(self.controller.project)
        self._update_enabled()

    # ------------------------------------------------------------------ construction
    def _build_docks(self) -> None:
        w = self.window
        self.review_bar = ReviewBar(self.review)
        self.models_panel = ModelsPanel()
        self.training_view = TrainingView()
        self.training_view.attach(self.runner)
        self.review_dock = w.add_dock("review", "Review", self.review_bar, QtCore.Qt.RightDockWidgetArea)
        self.models_dock = w.add_dock("models", "Models", self.models_panel, QtCore.Qt.RightDockWidgetArea)
        self.training_dock = w.add_dock("training", "Training", self.training_view, QtCore.Qt.BottomDockWidgetArea)
        self.training_dock.setVisible(False)
        self.segment_progress = SegmentProgress()
        self.segment_progress.cancel_button.clicked.connect(self.cancel_segment)
        w.statusBar().addWidget(self.segment_progress)
        self.no_model_label = QtWidgets.QLabel("")
        self.no_model_label.setObjectName("noModelLabel")
        w.statusBar().addWidget(self.no_model_label)

    def _build_actions(self) -> None:
        w = self.window
        A = w.add_action
        w.menu("model", "&Model")
        self.act_segment = A("model", "Auto-segment this item", self.segment_current, "Ctrl+R",
                             name="segment current", toolbar="model",
                             tip="Run the active model on the item on screen")
        self.act_segment_selected = A("model", "Auto-segment selected items", self.segment_selected,
                                      name="segment selected",
                                      tip="Run the active model on the items selected in the image list")
        self.act_segment_all = A("model", "Auto-segment all unreviewed items", self.segment_unreviewed,
                                 "Ctrl+Shift+R", name="segment unreviewed", toolbar="model")
        self.act_classic = A("model", "Auto-segment without a model…", self.classic_dialog,
                             name="segment classic", toolbar="model",
                             tip="Threshold + watershed proposals for the first annotations")
        self.act_cancel_segment = A("model", "Cancel auto-segment", self.cancel_segment, name="cancel segment")
        self.act_apply_pending = A("model", "Apply waiting results", self.review.apply_pending,
                                   name="apply pending",
                                   tip="Results that arrived while you were editing this item")
        w.menu("model").addSeparator()
        self.act_train = A("model", "&Train…", self.train_dialog, "Ctrl+T", name="train", toolbar="model",
                           tip="Fine-tune a model on the reviewed items (a child process)")
        self.act_cancel_train = A("model", "Cancel training", self.cancel_training, name="cancel training")
        self.act_resume_train = A("model", "Resume cancelled training", self.resume_training,
                                  name="resume training",
                                  tip="Continue the newest cancelled run where it stopped (same data and settings)")
        w.menu("model").aboutToShow.connect(self._refresh_resumable)  # e.g. a run cancelled from the shell
        w.menu("model").addSeparator()
        for dock in (self.models_dock, self.training_dock, self.review_dock):
            w.menu("model").addAction(dock.toggleViewAction())
        # review intents in the Item menu
        w.menu("item").addSeparator()
        self.act_accept = A("item", "&Accept item (mark reviewed)", self.review.accept_item,
                            ["A", "Ctrl+Return"], name="accept item", toolbar="model",
                            tip="Keep what is shown (predictions above the score slider) and mark reviewed")
        self.act_reject = A("item", "&Reject selected predictions", self.review.reject_selected, "R",
                            name="reject predictions")
        self.act_reject_low = A("item", "Reject predictions below the score slider", self.review.reject_hidden,
                                name="reject hidden")
        self.act_next_unreviewed = A("item", "Next &unreviewed item", lambda: self.review.next_unreviewed(),
                                     "U", name="next unreviewed", toolbar="model")
        # file menu: import / export / demo
        file_menu = w.menu("file")
        quit_act = w.actions.get("quit")
        imp = QtWidgets.QAction("&Import annotations…", w)
        imp.triggered.connect(self.import_dialog)
        exp = QtWidgets.QAction("&Export annotations…", w)
        exp.setShortcut("Ctrl+E")
        exp.triggered.connect(self.export_dialog)
        demo = QtWidgets.QAction("Open &demo project…", w)
        demo.triggered.connect(self.open_demo)
        welcome = QtWidgets.QAction("&Welcome…", w)
        welcome.triggered.connect(self.show_first_run)
        for act, key in ((imp, "import"), (exp, "export"), (demo, "open demo"), (welcome, "welcome")):
            w.addAction(act)
            w.actions[key] = act
        before = quit_act
        if before is not None:
            file_menu.insertSeparator(before)
            for act in (imp, exp, demo):
                file_menu.insertAction(before, act)
        else:
            for act in (imp, exp, demo):
                file_menu.addAction(act)
        help_menu = w.menus.get("help")
        if help_menu is not None:
            help_menu.addAction(welcome)

    def _connect(self) -> None:
        c = self.controller
        c.projectOpened.connect(self._on_project)
        c.projectClosed.connect(self._on_project_closed)
        c.currentItemChanged.connect(lambda *_: self._update_enabled())
        c.statusChanged.connect(lambda *_: self._update_enabled())
        c.selectionChanged.connect(lambda *_: self._update_enabled())
        self.review.message.connect(self._status)
        self.review.pendingChanged.connect(self._update_enabled)
        self.models_panel.activeModelChanged.connect(self._on_active_model)
        self.models_panel.message.connect(self._status)
        s = self.segmenter
        s.itemDone.connect(self._on_item_done)
        s.itemFailed.connect(lambda jid, item, msg: self._status(f"{item}: {msg}"))
        s.progress.connect(self._on_segment_progress)
        s.jobFinished.connect(self._on_segment_finished)
        s.failed.connect(self._on_segment_failed)
        s.busyChanged.connect(lambda busy: self._update_enabled())
        s.modelLoading.connect(lambda p: self._status("loading the model…"))
        s.modelLoaded.connect(lambda p, secs: self._status(f"model loaded in {secs:.1f} s", 4000))
        r = self.runner
        r.finished.connect(self._on_train_finished)
        r.runningChanged.connect(lambda _r: self._refresh_resumable())

    # ------------------------------------------------------------------ state
    @property
    def project(self):
        return self.controller.project

    def active_model_path(self) -> Optional[str]:
        p = self.project
        if p is None or not p.active_model:
            return None
        try:
            return str(p.resolve_model(p.active_model))
        except MaskLoopError:
            return None

    def _status(self, text: str, ms: int = 8000) -> None:
        self.window.statusBar().showMessage(text, ms)

    def _on_project(self, project) -> None:
        self.models_panel.set_project(project)
        path = self.active_model_path()
        self.segmenter.set_model(path, warm=path is not None)
        self._update_no_model()
        self._refresh_resumable()

    def _on_project_closed(self) -> None:
        self.segmenter.cancel()
        self.models_panel.set_project(None)
        self._update_no_model()
        self._refresh_resumable()

    def _update_no_model(self) -> None:
        p = self.project
        if p is not None and not self.active_model_path():
            self.no_model_label.setText("No model trained yet — Model › Auto-segment without a model")
            self.no_model_label.setVisible(True)
        else:
            self.no_model_label.setText("")
            self.no_model_label.setVisible(False)

    def _update_enabled(self, *_args) -> None:
        c = self.controller
        has_project = c.project is not None
        has_item = c.annotation is not None
        has_model = self.active_model_path() is not None if has_project else False
        busy = self.segmenter.busy
        training = self.runner.running
        self.act_segment.setEnabled(has_item)
        self.act_segment_selected.setEnabled(has_project and has_model)
        self.act_segment_all.setEnabled(has_project and has_model)
        self.act_classic.setEnabled(has_item)
        self.act_cancel_segment.setEnabled(busy)
        self.act_apply_pending.setEnabled(has_item and self.review.has_pending())
        self.act_train.setEnabled(has_project and not training)
        self.act_cancel_train.setEnabled(training)
        self.act_resume_train.setEnabled(has_project and not training and self._can_resume)
        self.act_accept.setEnabled(has_item)
        self.act_reject.setEnabled(has_item and bool(c.selection))
        self.act_reject_low.setEnabled(has_item)
        self.act_next_unreviewed.setEnabled(has_project)
        for key in ("import", "export"):
            self.window.actions[key].setEnabled(has_project)

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
        ids = self.window.images_panel.selected_item_ids() if hasattr(self.window, "images_panel") else []
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
        self.window._notify(f"Auto-segment stopped: {message}", error=True)

    def _on_active_model(self, run_id) -> None:
        path = self.active_model_path()
        self.segmenter.set_model(path, warm=path is not None)   # reloaded at once, in the worker
        self._update_no_model()
        self._update_enabled()

    # ------------------------------------------------------------------ training
    def train_dialog(self, options: Optional[dict] = None) -> bool:
        """Open the Train dialog (or use `options`) and start the child process."""
        from .dialogs.train_dialog import TrainDialog
        c = self.controller
        if c.project is None:
            return False
        if self.runner.running:
            self._status("a training run is already in progress")
            return False
        self._train_clicked_at = time.perf_counter()
        if not c.flush():
            self.window._notify("The current item's edits could not be saved; save them before training",
                                error=True)
            return False
        statuses = {it.id: c.status_of(it.id) for it in c.items}
        dlg = TrainDialog(c.project, self.window, statuses=statuses)
        self.last_train_dialog = dlg
        if options:
            dlg.set_options(**options)
        elif not self.exec_train_dialog(dlg):
            return False
        if not dlg.ok_button.isEnabled():
            self._status(dlg.hint.text().replace("⚠ ", ""))
            return False
        return self.start_training(dlg.options(), n_items=dlg.n_reviewed)

    def start_training(self, opts: dict, n_items: Optional[int] = None) -> bool:
        items = f" on {n_items} reviewed item(s)" if n_items is not None else ""
        return self._launch(dict(opts), f"Training {opts.get('arch')} from {opts.get('base')}{items}, "
                                        f"{opts.get('epochs')} epoch(s), device {opts.get('device')}",
                            "training started in a separate process; you can keep editing",
                            arch=opts.get("arch"), base=opts.get("base"), epochs=opts.get("epochs"),
                            device=opts.get("device"))

    def _refresh_resumable(self, *_args) -> None:
        """Whether a cancelled run waits (read from the models folder when runs can change:
        a project opens, a training process starts or ends, the Model menu opens)."""
        p = self.controller.project
        self._can_resume = p is not None and bool(p.resumable_runs())
        self._update_enabled()

    def resume_training(self) -> bool:
        """Continue the newest cancelled run (`train --resume RUN` in the child process): its
        own snapshot of the annotations and its settings, so it ends as if never stopped."""
        c = self.controller
        if c.project is None or self.runner.running:
            return False
        runs = c.project.resumable_runs()
        if not runs:
            self._status("no cancelled training run to resume")
            return False
        run = runs[0]
        if not self.confirm_resume(run):
            return False
        return self._launch({}, f"Resuming {run['run']} {_epochs_text(run)}",
                            "training resumed in a separate process; you can keep editing",
                            extra=["--resume", run["run"]])

    def _launch(self, opts: dict, title: str, status: str, **runner_kw) -> bool:
        """Start the training child process and show it in the Training dock."""
        c = self.controller
        self.train_options = opts
        self.train_project_root = c.project.root
        try:
            self.runner.start(c.project.root, **runner_kw)
        except MaskLoopError as e:
            self._status(e.one_line())
            return False
        self.train_started_at = time.perf_counter()
        if not self._train_clicked_at:
            self._train_clicked_at = self.train_started_at
        self.training_view.begin(title)
        self.training_dock.setVisible(True)
        self.training_dock.raise_()
        self._status(status)
        self._update_enabled()
        return True

    def _confirm_resume(self, run: dict) -> bool:
        box = QtWidgets.QMessageBox(QtWidgets.QMessageBox.Question, "Resume training",
                                    f"Resume {run['run']} {_epochs_text(run)}? It continues with the data "
                                    f"and settings it started with.",
                                    QtWidgets.QMessageBox.Yes | QtWidgets.QMessageBox.No, self.window)
        box.setDefaultButton(QtWidgets.QMessageBox.Yes)
        return box.exec_() == QtWidgets.QMessageBox.Yes

    def cancel_training(self) -> None:
        """Cancel (the run saves a checkpoint and can be resumed); a second time: stop now."""
        if self.runner.running:
            self.training_view.cancel()

    def _on_train_finished(self, ok: bool, kind: str, message: str) -> None:
        self._update_enabled()
        clicked, self._train_clicked_at = self._train_clicked_at, 0.0
        if not ok:
            if kind == "cancelled":
                self._status(message + " — Model › Resume cancelled training continues it")
            else:
                self.window._notify(message, error=True)
            return
        done = self.runner._done_event or {}
        run_id = done.get("run")
        root = getattr(self, "train_project_root", None)
        if self.project is None or root is None or Path(self.project.root) != Path(root):
            self._status(f"training finished: {run_id} (in {root})")
            return
        if not run_id:
            self._status("training finished, but it did not say which run it wrote")
            return
        # `maskloop train` may itself have made the run active (engine rule: not worse than
        # the active model on the new run's validation items); adopt what is on disk
        before = self.project.active_model
        on_disk = self._active_on_disk()
        if on_disk != before and (on_disk is None or (self.project.models_dir / on_disk / "model.pt").exists()):
            self.project.reload()  # adopt the child's activation (not an unsaved change of ours)
        if self.project.active_model == run_id:
            self.models_panel.refresh()
            self.models_panel.activeModelChanged.emit(run_id)
            became_active = True
        else:
            # the child compared the runs on the new run's validation items and kept the
            # old one ("kept ... as the active model (...)"): ask, quoting its reason
            kept = [ln for ln in self.runner.stderr_tail().splitlines() if ln.startswith("kept ")]
            if kept and before:
                became_active = self.models_panel.offer_new_run(run_id, verdict=False, reason=kept[-1])
            else:
                became_active = self.models_panel.offer_new_run(run_id)
        self.last_train_seconds = time.perf_counter() - clicked if clicked else None
        if became_active:
            self._status(f"new model {run_id} is active; auto-segment uses it now", 15000)

    def _active_on_disk(self) -> Optional[str]:
        from engine.project import read_json_file
        try:
            data = read_json_file(self.project.manifest_path, "manifest")
        except MaskLoopError:
            return self.project.active_model
        return data.get("active_model") if isinstance(data, dict) else self.project.active_model

    # ------------------------------------------------------------------ import / export / demo
    def export_dialog(self):
        from .dialogs.export_dialog import ExportDialog
        if self.project is None:
            return None
        dlg = ExportDialog(self.project, self.window, flush=self.controller.flush)
        self.last_export_dialog = dlg
        dlg.show()
        return dlg

    def import_dialog(self):
        from .dialogs.import_dialog import ImportDialog
        if self.project is None:
            return None
        dlg = ImportDialog(self.project, self.window, flush=self.controller.flush)
        dlg.imported.connect(self._after_import)
        self.last_import_dialog = dlg
        dlg.show()
        return dlg

    def _after_import(self, _report) -> None:
        """The import may have added items and labels and rewritten annotation files:
        reopen the project (edits were flushed first) and come back to the same item."""
        c = self.controller
        root, item = c.project.root, c.item_id
        if c.open_project(root) and item:
            try:
                c.project.item(item)
                c.set_current_item(item)
            except MaskLoopError:
                pass

    def open_demo(self, folder=None) -> bool:
        from .dialogs.first_run import build_demo, default_demo_dir
        from .tasks import run_with_progress
        folder = Path(folder) if folder else default_demo_dir()
        try:
            root = run_with_progress(self.window, "Building the demo project", build_demo, folder)
        except MaskLoopError as e:
            self.window._notify(e.one_line(), error=True)
            return False
        return self.window.open_project(root)

    def show_first_run(self):
        from .dialogs.first_run import FirstRunDialog
        recent = self.window.recent_projects() if hasattr(self.window, "recent_projects") else []
        dlg = FirstRunDialog(self.window, recent=recent)
        dlg.chosen.connect(self._on_first_run)
        self.first_run_dialog = dlg
        dlg.setWindowModality(QtCore.Qt.ApplicationModal)
        dlg.show()
        return dlg

    def _on_first_run(self, choice: str) -> None:
        w = self.window
        if choice == "demo":
            QtCore.QTimer.singleShot(0, self.open_demo)
        elif choice == "new":
            QtCore.QTimer.singleShot(0, w.open_images_dialog)
        elif choice == "open":
            QtCore.QTimer.singleShot(0, w.open_project_dialog)
        elif choice.startswith("recent:"):
            path = choice.split(":", 1)[1]
            QtCore.QTimer.singleShot(0, lambda: w.open_project(path))

    def maybe_first_run(self) -> None:
        """On start without a project: the welcome dialog (not under tests, not when
        MASKLOOP_NO_FIRST_RUN is set)."""
        if (self.controller.project is None and self.window.isVisible()
                and not os.environ.get("MASKLOOP_NO_FIRST_RUN")
                and not os.environ.get("PYTEST_CURRENT_TEST")):
            self.show_first_run()

    # ------------------------------------------------------------------ lifetime
    def _confirm_quit(self) -> bool:
        box = QtWidgets.QMessageBox(QtWidgets.QMessageBox.Question, "Training in progress",
                                    "A model is training. Quit and stop it? (The project is not "
                                    "changed; the unfinished run is left out.)",
                                    QtWidgets.QMessageBox.Yes | QtWidgets.QMessageBox.No, self.window)
        box.setDefaultButton(QtWidgets.QMessageBox.No)
        return box.exec_() == QtWidgets.QMessageBox.Yes

    def eventFilter(self, obj, event) -> bool:
        if obj is self.window:
            if event.type() == QtCore.QEvent.Close:
                if self.runner.running and self.window.isVisible() and not self.confirm_quit():
                    event.ignore()
                    return True
                self.shutdown()
            elif event.type() == QtCore.QEvent.Show and not getattr(self, "_shown_once", False):
                self._shown_once = True
                QtCore.QTimer.singleShot(0, self.maybe_first_run)
        return False

    def shutdown(self) -> None:
        """Stop the inference thread and the training child (idempotent)."""
        if self.runner.running:
            self.runner.cancel()
            if not self.runner.wait(5000):
                self.runner._kill()
                self.runner.wait(3000)
        self.segmenter.shutdown()


def _epochs_text(run: dict) -> str:
    done, total = run.get("epochs_done"), run.get("epochs")
    if done is not None and total:
        return f"(stopped after {done} of {total} epochs)"
    return "(stopped before its end)"


def install_workflow(window, **kw) -> Workflow:
    """Add the model workflow to a gui.main_window.MainWindow; returns it (also window.workflow)."""
    existing = getattr(window, "workflow", None)
    if isinstance(existing, Workflow):
        return existing
    wf = Workflow(window, **kw)
    window.workflow = wf
    return wf


install = install_workflow
