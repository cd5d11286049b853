"""The Models panel: every finished training run of the project, and which one is active.

One row per run (models/<run-id>/ with model.pt): date, architecture, base, items used,
validation mask AP / AP50 / acc50. "Make active" switches the model auto-segment uses.
After a training run, `offer_new_run` makes the new run active only when its validation
score is not worse than the active model's; otherwise it asks.

Run metadata is read from config.json / metrics.json as the engine writes them; several
layouts are accepted (flat, or under "best" / "val" / "final") so the panel keeps working
as the engine's files grow.
"""
from __future__ import annotations

import datetime as _dt
import math
import re
from pathlib import Path
from typing import Callable, Optional

from PyQt5 import QtCore, QtGui, QtWidgets

from .. import theme

METRIC_KEYS = ("mask_AP", "mask_AP50", "acc50")
_STAMP = re.compile(r"(\d{8})-(\d{6})")


def _num(v) -> Optional[float]:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def run_metrics(entry: dict) -> dict:
    """{"mask_AP", "mask_AP50", "acc50"} of a run's best validation (missing keys: None)."""
    m = entry.get("metrics") or {}
    candidates = []
    for key in ("best", "val", "validation", "final"):
        if isinstance(m.get(key), dict):
            candidates.append(m[key])
    candidates.append(m)
    out = {}
    for k in METRIC_KEYS:
        out[k] = None
        for c in candidates:
            v = _num(c.get(k))
            if v is None and isinstance(c.get("metrics"), dict):
                v = _num(c["metrics"].get(k))
            if v is not None:
                out[k] = v
                break
    return out


def run_score(entry: Optional[dict]) -> Optional[float]:
    """The number that ranks runs: val mask AP, else AP50, else acc50."""
    if not entry:
        return None
    m = run_metrics(entry)
    for k in METRIC_KEYS:
        if m[k] is not None:
            return m[k]
    return None


def _first(d: dict, *keys):
    for k in keys:
        cur = d
        for part in k.split("."):
            if not isinstance(cur, dict) or part not in cur:
                cur = None
                break
            cur = cur[part]
        if cur not in (None, ""):
            return cur
    return None


def run_info(entry: dict) -> dict:
    """Plain display fields of one run."""
    cfg = entry.get("config") or {}
    met = entry.get("metrics") or {}
    run = entry.get("run", "")
    when = _first(cfg, "created", "finished", "date", "started") or _first(met, "finished", "created", "date")
    date = None
    if isinstance(when, (int, float)):
        date = _dt.datetime.fromtimestamp(when)
    elif isinstance(when, str):
        try:
            date = _dt.datetime.fromisoformat(when.replace("Z", "+00:00"))
        except ValueError:
            date = None
    if date is None:
        mm = _STAMP.search(run)
        if mm:
            try:
                date = _dt.datetime.strptime(mm.group(1) + mm.group(2), "%Y%m%d%H%M%S")
            except ValueError:
                date = None
    if date is None and entry.get("path"):
        try:
            date = _dt.datetime.fromtimestamp(Path(entry["path"]).stat().st_mtime)
        except OSError:
            date = None
    arch = _first(cfg, "arch", "model_config.arch", "model.arch")
    base = _first(cfg, "base", "base_run", "train.base")
    if isinstance(base, str) and ("/" in base or "\\" in base):
        base = Path(base).parent.name if Path(base).name == "model.pt" else Path(base).name
    n_train = _first(cfg, "train_items", "data.train_items", "items_used") or _first(met, "train_items")
    n_val = _first(cfg, "val_items", "data.val_items") or _first(met, "val_items")
    if isinstance(n_train, list):
        n_train = len(n_train)
    if isinstance(n_val, list):
        n_val = len(n_val)
    if n_train is None and isinstance(cfg.get("items"), (list, dict)):
        items = cfg["items"]
        if isinstance(items, dict):
            n_train = len(items.get("train", []) or [])
            n_val = len(items.get("val", []) or [])
        else:
            n_train = len(items)
    epochs = _first(cfg, "epochs", "train.epochs")
    return {"run": run, "date": date, "arch": arch, "base": base, "train_items": n_train,
            "val_items": n_val, "epochs": epochs, **run_metrics(entry)}


def should_activate(new_entry: dict, active_entry: Optional[dict], tol: float = 1e-9) -> Optional[bool]:
    """True: activate at once; False: the new run is worse; None: cannot tell (ask)."""
    if active_entry is None:
        return True
    new, old = run_score(new_entry), run_score(active_entry)
    if old is None:
        return True
    if new is None:
        return None
    return new >= old - tol


def _fmt(v, digits=3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


class ModelsPanel(QtWidgets.QWidget):
    """A table of runs with Make active / Refresh."""

    activeModelChanged = QtCore.pyqtSignal(object)   # run id or None
    message = QtCore.pyqtSignal(str)

    COLUMNS = ("", "Run", "mask AP", "AP50", "acc50", "Items", "Base", "Arch", "Date")
    METRIC_COLUMNS = (2, 3, 4)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("ModelsPanel")
        self.project = None
        self.entries: list[dict] = []
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
        hh = self.table.horizontalHeader()
        hh.setSectionResizeMode(QtWidgets.QHeaderView.ResizeToContents)
        hh.setStretchLastSection(True)
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

    def entry(self, run_id: Optional[str]) -> Optional[dict]:
        for e in self.entries:
            if e["run"] == run_id:
                return e
        return None

    def refresh(self) -> None:
        self.entries = self.project.list_models() if self.project is not None else []
        # newest first
        infos = [(run_info(e), e) for e in self.entries]
        infos.sort(key=lambda t: (t[0]["date"] or _dt.datetime.min, t[0]["run"]), reverse=True)
        selected = self.selected_run()
        self.table.setRowCount(len(infos))
        bold = QtGui.QFont()
        bold.setBold(True)
        for row, (info, _e) in enumerate(infos):
            is_active = info["run"] == self.active
            items = info["train_items"]
            items_txt = "–" if items is None else (f"{items}" + (f" + {info['val_items']}"
                                                                 if info["val_items"] else ""))
            cells = ["●" if is_active else "", info["run"],
                     _fmt(info["mask_AP"]), _fmt(info["mask_AP50"]), _fmt(info["acc50"]), items_txt,
                     str(info["base"]) if info["base"] is not None else "–", info["arch"] or "–",
                     info["date"].strftime("%Y-%m-%d %H:%M") if info["date"] else "–"]
            for col, text in enumerate(cells):
                it = QtWidgets.QTableWidgetItem(text)
                it.setData(QtCore.Qt.UserRole, info["run"])
                if col == 5:
                    it.setToolTip("training items + validation items")
                if is_active:
                    it.setFont(bold)
                if col == 0:
                    it.setForeground(QtGui.QBrush(theme.color("models.active")))
                    it.setToolTip("active model: auto-segment uses it")
                if col in self.METRIC_COLUMNS:
                    it.setTextAlignment(QtCore.Qt.AlignRight | QtCore.Qt.AlignVCenter)
                self.table.setItem(row, col, it)
            if info["run"] == selected:
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
        """After training: activate `run_id` if it is not worse than the active model,
        else ask. `verdict`/`reason` carry a comparison made elsewhere (the training
        process scores both models on the new run's validation items). Returns True when
        the new run became active."""
        self.refresh()
        new = self.entry(run_id)
        if new is None:
            self.message.emit(f"the new run {run_id} has no model file; nothing to activate")
            return False
        old = self.entry(self.active) if self.active else None
        if verdict is None:
            verdict = should_activate(new, old)
        if verdict is True:
            return self.make_active(run_id)
        new_s, old_s = run_score(new), run_score(old)
        if reason:
            text = (f"The new model {run_id} validates worse than the active model: {reason}. "
                    f"Make the new model active anyway?")
        elif verdict is None:
            text = (f"The new model {run_id} has no validation score (too few reviewed items to "
                    f"validate?). Make it active instead of {self.active} ({_fmt(old_s)})?")
        else:
            text = (f"The new model {run_id} scores {_fmt(new_s)} on validation, worse than the "
                    f"active model {self.active} ({_fmt(old_s)}). Make the new model active anyway?")
        if self.ask(text):
            return self.make_active(run_id)
        self.select_run(run_id)
        self.message.emit(f"kept {self.active} active; {run_id} is in the Models panel")
        return False

    def _ask_box(self, text: str) -> bool:
        box = QtWidgets.QMessageBox(QtWidgets.QMessageBox.Question, "New model", text,
                                    QtWidgets.QMessageBox.Yes | QtWidgets.QMessageBox.No, self)
        box.setDefaultButton(QtWidgets.QMessageBox.No)
        return box.exec_() == QtWidgets.QMessageBox.Yes
