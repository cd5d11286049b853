"""Training, the loop's last step: the Train dialog, the child process (gui.loop.runner),
resume of a cancelled run, and the new model becoming active."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

from PyQt5 import QtWidgets

from engine.errors import MaskLoopError


class Training:
    """The training part of gui.loop.Loop (a mixin: it uses the Loop's controller, runner,
    training view and models panel)."""

    # ------------------------------------------------------------------ training
    def train_dialog(self, options: Optional[dict] = None) -> bool:
        """Open the Train dialog (or use `options`) and start the child process."""
        from ..dialogs.train_dialog import TrainDialog
        c = self.controller
        if c.project is None:
            return False
        if self.runner.running:
            self._status("a training run is already in progress")
            return False
        self._train_clicked_at = time.perf_counter()
        if not c.flush():
            self.window.notify("The current item's edits could not be saved; save them before training",
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
        minutes = opts.get("minutes")   # a time budget: `train --minutes` (TrainConfig.minutes)
        length = f"for {minutes:g} min" if minutes else f"{opts.get('epochs')} epoch(s)"
        return self._launch(dict(opts), f"Training {opts.get('arch')} from {opts.get('base')}{items}, "
                                        f"{length}, device {opts.get('device')}",
                            "training started in a separate process; you can keep editing",
                            **runner_args(opts))

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
                self.window.notify(message, error=True)
            return
        done = self.runner.done_event or {}
        run_id = done.get("run")
        root = self.train_project_root
        if self.project is None or root is None or Path(self.project.root) != Path(root):
            self._status(f"training finished: {run_id} (in {root})")
            return
        if not run_id:
            self._status("training finished, but it did not say which run it wrote")
            return
        # `maskloop train` applies the activation rule itself and says so in an `activated`
        # event (it wrote the manifest when the run became active); without one, the
        # Models panel applies the same rule (engine.runs.decide_activation)
        verdict = self.runner.activated_event
        if verdict is None and self._active_on_disk() == run_id:
            verdict = {"run": run_id, "active": True}   # a child that activated without saying so
        if verdict is not None and verdict.get("run") == run_id and verdict.get("active"):
            self.project.reload()   # adopt the child's activation (not an unsaved change of ours)
            self.models_panel.refresh()
            self.models_panel.activeModelChanged.emit(run_id)
            became_active = True
        elif verdict is not None and verdict.get("run") == run_id:
            became_active = self.models_panel.offer_new_run(run_id, verdict=False, reason=verdict.get("reason", ""))
        else:
            became_active = self.models_panel.offer_new_run(run_id)
        self.last_train_seconds = time.perf_counter() - clicked if clicked else None
        if became_active:
            self._status(f"new model {run_id} is active; auto-segment uses it now", 15000)

    def _active_on_disk(self) -> Optional[str]:
        """The active model as the project's manifest on disk has it now."""
        from engine.project import Project
        try:
            return Project.open(self.project.root).active_model
        except MaskLoopError:
            return None


def runner_args(opts: dict) -> dict:
    """The Train dialog's options as TrainingRunner.start takes them: a time budget goes
    to `train --minutes` (TrainConfig.minutes), which then plans the run's length."""
    minutes = opts.get("minutes")
    return {"arch": opts.get("arch"), "base": opts.get("base"), "epochs": opts.get("epochs"),
            "device": opts.get("device"), "extra": ["--minutes", f"{minutes:g}"] if minutes else None}


def _epochs_text(run: dict) -> str:
    done, total = run.get("epochs_done"), run.get("epochs")
    if done is not None and total:
        return f"(stopped after {done} of {total} epochs)"
    return "(stopped before its end)"
