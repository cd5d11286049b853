"""The loop (segment → correct → retrain) in the main window: `Loop(window)`, built by
gui.main_window as `window.loop`. It adds:

- a Model menu and toolbar: auto-segment this item / the selected items / every
  unreviewed item (a background worker with a warm model, progress, ETA and Cancel in the
  status bar), auto-segment without a model (classic threshold + watershed, for the
  cold start), apply waiting results, Train… and Cancel training;
- Item menu entries: Accept item (A, Ctrl+Return), Reject selected predictions (R),
  Next unreviewed (U);
- docks: Review (score slider, accept / reject / next), Models (runs, make active),
  Training (live loss and validation AP plot, ETA, Cancel);
- File menu entries: Import annotations…, Export annotations…, Open demo project…;
- the first-start dialog (new / open / demo) when the window opens without a project.

Everything long runs off the GUI thread: inference in gui.loop.inference.SegmentService,
training in a child process (gui.loop.runner.TrainingRunner). Results reach the project
only through gui.loop.review.Review (the controller for the item on screen; the engine's
atomic save for the others; reviewed items never). The auto-segment and training parts
are in gui.loop.segmenting and gui.loop.training.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from PyQt5 import QtCore, QtWidgets

from engine.errors import MaskLoopError

from ..dialogs.training_view import TrainingView
from ..panels.models_panel import ModelsPanel
from .inference import SegmentService
from .review import Review, ReviewBar
from .runner import TrainingRunner
from .segmenting import SegmentProgress, Segmenting
from .training import Training


class Loop(QtCore.QObject, Segmenting, Training):
    """The loop of one main window (window.loop)."""

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
        self._shown_once = False  # the welcome dialog is offered at the first show only
        self.train_project_root = None   # the project the running training belongs to
        #: how the Train / classic dialogs are run: (dialog) -> accepted (modal by default)
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
        # Models is looked at now and then: a tab behind Labels keeps room for the instance list
        w.tabifyDockWidget(w.docks["labels"], self.models_dock)
        w.docks["labels"].raise_()
        self.training_dock = w.add_dock("training", "Training", self.training_view, QtCore.Qt.BottomDockWidgetArea)
        self.training_dock.setVisible(False)
        self.segment_progress = SegmentProgress()
        self.segment_progress.cancel_button.clicked.connect(self.cancel_segment)
        w.status.add_field(self.segment_progress)
        self.no_model_label = QtWidgets.QLabel("")
        self.no_model_label.setObjectName("noModelLabel")
        self.no_model_label.setProperty("field", True)
        w.status.add_field(self.no_model_label)

    def _build_actions(self) -> None:
        w = self.window
        A = w.add_action
        w.menu("model", "&Model")
        self.act_segment = A("model", "Auto-segment this item", self.segment_current,
                             name="segment current", toolbar="model", icon="segment",
                             tip="Run the active model on the item on screen")
        self.act_segment_selected = A("model", "Auto-segment selected items", self.segment_selected,
                                      name="segment selected",
                                      tip="Run the active model on the items selected in the image list")
        self.act_segment_all = A("model", "Auto-segment all unreviewed items", self.segment_unreviewed,
                                 name="segment unreviewed", toolbar="model", icon="segment_all",
                                 tip="Run the active model on every item not reviewed yet")
        self.act_classic = A("model", "Auto-segment without a model…", self.classic_dialog,
                             name="segment classic", toolbar="model", icon="segment_classic",
                             tip="Threshold + watershed proposals for the first annotations")
        self.act_cancel_segment = A("model", "Cancel auto-segment", self.cancel_segment, name="cancel segment",
                                    icon="cancel")
        self.act_apply_pending = A("model", "Apply waiting results", self.review.apply_pending,
                                   name="apply pending",
                                   tip="Results that arrived while you were editing this item")
        w.menu("model").addSeparator()
        self.act_train = A("model", "&Train…", self.train_dialog, name="train", toolbar="model", icon="train",
                           tip="Fine-tune a model on the reviewed items (a child process)")
        self.act_cancel_train = A("model", "Cancel training", self.cancel_training, name="cancel training",
                                  icon="cancel")
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
                            name="accept item", toolbar="model", icon="accept",
                            tip="Keep what is shown (predictions above the score slider) and mark reviewed")
        self.act_reject = A("item", "&Reject selected predictions", self.review.reject_selected,
                            name="reject predictions", icon="reject")
        self.act_reject_low = A("item", "Reject predictions below the score slider", self.review.reject_hidden,
                                name="reject hidden")
        self.act_next_unreviewed = A("item", "Next &unreviewed item", lambda: self.review.next_unreviewed(),
                                     name="next unreviewed", toolbar="model", icon="next_unreviewed",
                                     tip="Go to the next item that is not reviewed yet")
        self.act_accept.setIconText("Accept item")
        self.act_next_unreviewed.setIconText("Next unreviewed")
        self.act_train.setIconText("Train")
        # file menu: import / export / demo
        file_menu = w.menu("file")
        before = w.actions.get("quit")
        imp = A(None, "&Import annotations…", self.import_dialog, name="import", icon="import")
        exp = A(None, "&Export annotations…", self.export_dialog, name="export", icon="export")
        demo = A(None, "Open &demo project…", lambda: self.open_demo(), name="open demo", icon="demo",
                 tip="Synthetic CT-like and microscopy-like images with a few reviewed items")
        welcome = A(None, "&Welcome…", self.show_first_run, name="welcome")
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
        self.window.show_message(text, ms)

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
            self.no_model_label.setText("No model trained yet")
            self.no_model_label.setToolTip("Start with Model › Auto-segment without a model, correct and "
                                           "accept a few items, then Train")
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

    # ------------------------------------------------------------------ import / export / demo
    def export_dialog(self):
        from ..dialogs.export_dialog import ExportDialog
        if self.project is None:
            return None
        dlg = ExportDialog(self.project, self.window, flush=self.controller.flush)
        self.last_export_dialog = dlg
        dlg.show()
        return dlg

    def import_dialog(self):
        from ..dialogs.import_dialog import ImportDialog
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
        from ..dialogs.first_run import build_demo, default_demo_dir
        from ..background import run_with_progress
        folder = Path(folder) if folder else default_demo_dir()
        try:
            root = run_with_progress(self.window, "Building the demo project", build_demo, folder)
        except MaskLoopError as e:
            self.window.notify(e.one_line(), error=True)
            return False
        return self.window.open_project(root)

    def show_first_run(self):
        from ..dialogs.first_run import FirstRunDialog
        recent = self.window.recent_projects()
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
        """On start without a project: the welcome dialog (not when MASKLOOP_NO_FIRST_RUN is set)."""
        if (self.controller.project is None and self.window.isVisible()
                and not os.environ.get("MASKLOOP_NO_FIRST_RUN")):
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
            elif event.type() == QtCore.QEvent.Show and not self._shown_once:
                self._shown_once = True
                QtCore.QTimer.singleShot(0, self.maybe_first_run)
        return False

    def shutdown(self) -> None:
        """Stop the inference thread and the training child (idempotent)."""
        if self.runner.running:
            self.runner.cancel()
            if not self.runner.wait(5000):
                self.runner.kill()
                self.runner.wait(3000)
        self.segmenter.shutdown()


