"""The Models panel: every finished training run of the project, and which one is active.

One row per run (models/<run-id>/ with model.pt): the run, validation mask AP / AP50 /
acc50, the items used and the training time (against the run's time budget, if it had one); its architecture, base and date are in the run's tooltip (so the
columns fit a side panel). "Make active" switches the model auto-segment uses. Runs are
read by engine.runs (one schema), and after a training run `offer_new_run` applies the
engine's one activation rule (engine.runs.decide_activation) — or a verdict the training
process already reached with it — and asks only when the rule keeps the old model.
"""
from __future__ import annotations

from typing import Callable, Optional

from PyQt5 import QtCore, QtGui, QtWidgets

from engine.runs import RunInfo, decide_activation, list_runs

from .. import theme


def _fmt(v, digits=2) -> str:  # seven columns share a side panel: short numbers
    return "–" if v is None else f"{v:.{digits}f}"


def _items_text(info: RunInfo) -> str:
    if info.train_items is None:
        return "–"
    return f"{info.train_items}" + (f"+{info.val_items}" if info.val_items else "")


def _time_text(info: RunInfo) -> str:
    """Training time, and the budget of a `--minutes` run: "12/15" (minutes), "45 s/1"."""
    if info.seconds is None:
        return "–"
    # whole minutes, no unit: seven columns share a side panel (header and tooltip say minutes)
    took = f"{info.seconds:.0f} s" if info.seconds < 60 else f"{info.seconds / 60:.0f}"
    if not info.minutes:
        return took
    return f"{took}/{info.minutes:g}"


def _run_tooltip(info: RunInfo) -> str:
    lines = [info.run,
             f"architecture: {info.arch or '–'}", f"started from: {info.base or '–'}",
             f"created: {info.created.strftime('%Y-%m-%d %H:%M') if info.created else '–'}"]
    if info.epochs_run is not None:
        lines.append(f"epochs: {info.epochs_run}" + (f" of {info.epochs}" if info.epochs else ""))
    if info.seconds is not None:
        lines.append(f"trained: {info.seconds / 60:.1f} min"
                     + (f" (time budget {info.minutes:g} min)" if info.minutes else " (by epochs)"))
    return "\n".join(lines)


class ModelsPanel(QtWidgets.QWidget):
    """A table of runs with Make active / Refresh."""

    activeModelChanged = QtCore.pyqtSignal(object)   # run id or None
    message = QtCore.pyqtSignal(str)

    COLUMNS = ("", "Run", "AP", "AP50", "acc50", "Items", "Min")
    METRIC_COLUMNS = (2, 3, 4, 6)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("ModelsPanel")
        self.project = None
        self.runs: list[RunInfo] = []
        #: asked when a new run is worse than the active one: (text) -> True to activate
        self.ask: Callable[[str], bool] = self._ask_box
        self.table = QtWidgets.QTableWidget(0, len(self.COLUMNS))
        self.table.setObjectName("modelsTable")
        self.table.setHorizontalHeaderLabels(self.COLUMNS)
        self.table.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QtWidgets.QAbstractItemView.SingleSelection)
        self.table.setEditTriggers(QtWidgets.QAbstractItemView.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.setAlternatingRowColors(True)
        self.table.setTextElideMode(QtCore.Qt.ElideMiddle)   # long run ids keep both ends
        self.table.setHorizontalScrollBarPolicy(QtCore.Qt.ScrollBarAlwaysOff)
        hh = self.table.horizontalHeader()
        hh.setSectionResizeMode(QtWidgets.QHeaderView.ResizeToContents)
        hh.setSectionResizeMode(1, QtWidgets.QHeaderView.Stretch)   # the run id takes what is left
        hh.setStretchLastSection(False)
        hh.setSectionResizeMode(0, QtWidgets.QHeaderView.Fixed)   # the active marker: one glyph
        hh.setMinimumSectionSize(18)
        hh.resizeSection(0, 18)
        self.table.horizontalHeaderItem(2).setToolTip("validation mask AP (COCO, IoU 0.50:0.95)")
        self.table.horizontalHeaderItem(3).setToolTip("validation mask AP at IoU 0.50")
        self.table.horizontalHeaderItem(4).setToolTip("share of objects found at IoU ≥ 0.50")
        self.table.horizontalHeaderItem(5).setToolTip("training items + validation items")
        self.table.horizontalHeaderItem(6).setToolTip("training time / the run's time budget, in minutes")
        self.table.itemSelectionChanged.connect(self._update_buttons)
        self.table.itemDoubleClicked.connect(lambda *_: self.make_active_selected())
        self.empty = QtWidgets.QLabel("No model trained yet. Mark a few items reviewed, then "
                                      "press <b>Train</b>.")
        self.empty.setObjectName("modelsEmpty")
        self.empty.setWordWrap(True)
        self.activate_button = QtWidgets.QPushButton("Make active")
        self.activate_button.setObjectName("makeActive")
        self.activate_button.clicked.connect(self.make_active_selected)
        self.refresh_button = QtWidgets.QPushButton("Refresh")
        self.refresh_button.clicked.connect(self.refresh)
        self.active_label = QtWidgets.QLabel("")
        self.active_label.setObjectName("activeModelLabel")
        buttons = QtWidgets.QHBoxLayout()
        buttons.addWidget(self.active_label, 1)
        buttons.addWidget(self.refresh_button)
        buttons.addWidget(self.activate_button)
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addWidget(self.empty)
        lay.addWidget(self.table, 1)
        lay.addLayout(buttons)
        self.refresh()

    # -- data -----------------------------------------------------------------------------
    def set_project(self, project) -> None:
        self.project = project
        self.refresh()

    @property
    def active(self) -> Optional[str]:
        return self.project.active_model if self.project is not None else None

    def run(self, run_id: Optional[str]) -> Optional[RunInfo]:
        return next((r for r in self.runs if r.run == run_id), None)

    def refresh(self) -> None:
        self.runs = list_runs(self.project) if self.project is not None else []
        infos = sorted(self.runs, key=lambda r: (r.created.timestamp() if r.created else 0.0, r.run),
                       reverse=True)   # newest first
        selected = self.selected_run()
        self.table.setRowCount(len(infos))
        bold = QtGui.QFont()
        bold.setBold(True)
        for row, info in enumerate(infos):
            is_active = info.run == self.active
            cells = ["●" if is_active else "", info.run, _fmt(info.metrics.get("mask_AP")),
                     _fmt(info.metrics.get("mask_AP50")), _fmt(info.metrics.get("acc50")), _items_text(info),
                     _time_text(info)]
            for col, text in enumerate(cells):
                it = QtWidgets.QTableWidgetItem(text)
                it.setData(QtCore.Qt.UserRole, info.run)
                if col == 1:
                    it.setToolTip(_run_tooltip(info))
                if is_active:
                    it.setFont(bold)
                if col == 0:
                    it.setForeground(QtGui.QBrush(theme.color("models.active")))
                    it.setToolTip("active model: auto-segment uses it")
                if col in self.METRIC_COLUMNS:
                    it.setTextAlignment(QtCore.Qt.AlignRight | QtCore.Qt.AlignVCenter)
                self.table.setItem(row, col, it)
            if info.run == selected:
                self.table.selectRow(row)
        has = bool(infos)
        self.empty.setVisible(not has)
        self.table.setVisible(has)
        self.active_label.setText(f"Active: <b>{self.active}</b>" if self.active else "No active model")
        self._update_buttons()

    def selected_run(self) -> Optional[str]:
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        if not rows:
            return None
        it = self.table.item(rows[0].row(), 1)
        return it.data(QtCore.Qt.UserRole) if it is not None else None

    def select_run(self, run_id: str) -> None:
        for row in range(self.table.rowCount()):
            if self.table.item(row, 1).data(QtCore.Qt.UserRole) == run_id:
                self.table.selectRow(row)
                return

    def _update_buttons(self) -> None:
        run = self.selected_run()
        self.activate_button.setEnabled(run is not None and run != self.active)

    # -- actions ----------------------------------------------------------------------------
    def make_active_selected(self) -> bool:
        run = self.selected_run()
        return self.make_active(run) if run else False

    def make_active(self, run_id: Optional[str]) -> bool:
        if self.project is None:
            return False
        from engine.errors import MaskLoopError
        try:
            self.project.set_active_model(run_id)
        except MaskLoopError as e:
            self.message.emit(e.one_line())
            return False
        self.refresh()
        self.message.emit(f"active model: {run_id}" if run_id else "no active model")
        self.activeModelChanged.emit(run_id)
        return True

    def offer_new_run(self, run_id: str, verdict: Optional[bool] = None, reason: str = "") -> bool:
        """After training: make `run_id` active when the engine's activation rule says so,
        else ask. `verdict`/`reason` carry the rule's answer when the training process
        already gave it (its `activated` event, which compares both models on the new
        run's validation items). Returns True when the new run became active."""
        self.refresh()
        new = self.run(run_id)
        if new is None:
            self.message.emit(f"the new run {run_id} has no model file; nothing to activate")
            return False
        if verdict is None:
            verdict, reason = decide_activation(new, self.run(self.active) if self.active else None)
        if verdict:
            return self.make_active(run_id)
        if self.ask(f"The new model {run_id} was not made active: {reason}. Make it active anyway?"):
            return self.make_active(run_id)
        self.select_run(run_id)
        self.message.emit(f"kept {self.active} active; {run_id} is in the Models panel")
        return False

    def _ask_box(self, text: str) -> bool:
        box = QtWidgets.QMessageBox(QtWidgets.QMessageBox.Question, "New model", text,
                                    QtWidgets.QMessageBox.Yes | QtWidgets.QMessageBox.No, self)
        box.setDefaultButton(QtWidgets.QMessageBox.No)
        return box.exec_() == QtWidgets.QMessageBox.Yes
