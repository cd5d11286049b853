"""Instances of the current item: label, source, score, area and the model's doubt about
it (gui.ranking fills `doubt_provider`; empty until the item is ranked); selecting rows
selects (and highlights) the instances on the canvas, and the other way round. A click on
a header sorts by that column (Doubt: the doubtful ones first when descending)."""
from __future__ import annotations

import difflib
from typing import Callable, Optional

from PyQt5 import QtCore, QtWidgets

from .labels import color_icon

SORT_ROLE = QtCore.Qt.UserRole + 1
REBUILD_ROWS = 256   # more rows inserted or removed than this: the table is refilled at once


class _Cell(QtWidgets.QTableWidgetItem):
    """Sorts by SORT_ROLE (numbers as numbers; an empty doubt below every score)."""

    def __lt__(self, other) -> bool:
        a, b = self.data(SORT_ROLE), other.data(SORT_ROLE)
        if a is None or b is None:
            return super().__lt__(other)
        return a < b


class InstancesPanel(QtWidgets.QWidget):
    COLUMNS = ("#", "Label", "Source", "Score", "Area", "Doubt")
    DOUBT_TIP = ("How unsure the active model is about this instance, 0-1: 1 - its overlap with the "
                 "model's prediction of the mirror image (after Model › Rank by uncertainty)")

    def __init__(self, controller, parent=None) -> None:
        super().__init__(parent)
        self.controller = controller
        self.table = QtWidgets.QTableWidget(0, len(self.COLUMNS))
        self.table.setHorizontalHeaderLabels(self.COLUMNS)
        self.table.horizontalHeaderItem(len(self.COLUMNS) - 1).setToolTip(self.DOUBT_TIP)
        #: annotation -> {instance id: doubt} (gui.ranking sets it)
        self.doubt_provider: Optional[Callable] = None
        self.table.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QtWidgets.QAbstractItemView.ExtendedSelection)
        self.table.setEditTriggers(QtWidgets.QAbstractItemView.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(20)
        header = self.table.horizontalHeader()
        for c in range(len(self.COLUMNS)):
            header.setSectionResizeMode(c, QtWidgets.QHeaderView.ResizeToContents)
        header.setSectionResizeMode(1, QtWidgets.QHeaderView.Stretch)
        self.table.setFocusPolicy(QtCore.Qt.ClickFocus)
        header.setSortIndicator(-1, QtCore.Qt.AscendingOrder)   # the stacking order until a click
        header.setSortIndicatorShown(True)
        header.setSectionsClickable(True)
        header.sortIndicatorChanged.connect(lambda *_: self.table.setSortingEnabled(True))
        self.summary = QtWidgets.QLabel()
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.addWidget(self.table, 1)
        lay.addWidget(self.summary)
        self._ids: list[str] = []      # instance ids in table row order
        self._shown: dict = {}         # id -> the (values, sort keys, colour) its row shows
        self._icons: dict = {}         # label colour -> icon
        self._pending = False
        self.table.itemSelectionChanged.connect(self._on_table_selection)
        controller.instancesChanged.connect(self.schedule_refresh)
        controller.selectionChanged.connect(self._on_selection)
        controller.labelsChanged.connect(self.schedule_refresh)
        controller.projectClosed.connect(self.schedule_refresh)

    def schedule_refresh(self, *_args) -> None:
        # many edits in one event-loop turn (a replayed undo chain) cost one refresh
        if not self._pending:
            self._pending = True
            QtCore.QTimer.singleShot(0, self.refresh)

    def refresh(self) -> None:
        """Bring the rows up to date with the annotation, touching only rows that changed:
        a stroke on an item with 5,000 instances adds or updates one row, not 30,000 cells
        (rows are matched by instance id, inserted and removed in place)."""
        self._pending = False
        ctl = self.controller
        ann = ctl.annotation
        insts = list(reversed(ann.instances)) if ann is not None else []  # top first
        hidden = ctl.hidden_labels()
        doubts = self.doubt_provider(ann) if self.doubt_provider is not None and ann is not None else {}
        rows = {}
        for r, inst in enumerate(insts):
            d, area = doubts.get(inst.id), inst.area
            vals = (len(insts) - r, inst.label, inst.source,
                    "" if inst.score is None else f"{inst.score:.2f}", area, "" if d is None else f"{d:.2f}")
            keys = (len(insts) - r, inst.label, inst.source, -1.0 if inst.score is None else inst.score,
                    area, -1.0 if d is None else d)
            rows[inst.id] = (vals, keys, tuple(ctl.label_color(inst.label)))
        table = self.table
        table.blockSignals(True)
        table.setSortingEnabled(False)
        if table.horizontalHeader().sortIndicatorSection() >= 0:
            # sorted by the user: keep the rows where they are, new ones at the end (re-sorted below)
            kept = [i for i in self._ids if i in rows]
            old = set(kept)
            target = kept + [i for i in rows if i not in old]
        else:
            target = [i.id for i in insts]
        self._apply(self._ids, target, rows)
        if table.horizontalHeader().sortIndicatorSection() >= 0:
            table.setSortingEnabled(True)   # re-sorts by the column the user chose
        self._ids = [table.item(r, 0).data(QtCore.Qt.UserRole) for r in range(table.rowCount())]
        label_of = {i.id: i.label for i in insts}
        for r, iid in enumerate(self._ids):
            hide = label_of[iid] in hidden
            if table.isRowHidden(r) != hide:
                table.setRowHidden(r, hide)
        table.blockSignals(False)
        n_model = sum(1 for i in insts if i.source == "model")
        self.summary.setText(f"{len(insts)} instances" + (f" · {n_model} from the model" if n_model else ""))
        self._on_selection(ctl.selection)

    def _apply(self, current: list, target: list, rows: dict) -> None:
        """Edit the table from the `current` id order to `target`: insert and remove rows
        where the orders differ (difflib), then write the cells whose values changed."""
        table = self.table
        ops = difflib.SequenceMatcher(None, current, target, autojunk=False).get_opcodes()
        moved = sum(max(i2 - i1, j2 - j1) for tag, i1, i2, j1, j2 in ops if tag != "equal")
        if table.rowCount() != len(current) or moved > REBUILD_ROWS:
            # another item, or most rows changed: rows one by one would cost more
            table.setRowCount(0)
            table.setRowCount(len(target))
            self._shown, ops = {}, []
        for tag, i1, i2, j1, j2 in reversed(ops):   # from the bottom: row numbers above stay
            if tag in ("delete", "replace"):
                for r in range(i2 - 1, i1 - 1, -1):
                    table.removeRow(r)
            if tag in ("insert", "replace"):
                for r in range(i1, i1 + j2 - j1):
                    table.insertRow(r)
        for r, iid in enumerate(target):
            row = rows[iid]
            if self._shown.get(iid) == row and table.item(r, 0) is not None:
                continue
            vals, keys, color = row
            for c, v in enumerate(vals):
                cell = table.item(r, c)
                if cell is None:
                    cell = _Cell()
                    table.setItem(r, c, cell)
                cell.setData(QtCore.Qt.DisplayRole, v)
                cell.setData(QtCore.Qt.UserRole, iid)
                cell.setData(SORT_ROLE, keys[c])
            icon = self._icons.get(color)
            if icon is None:
                icon = self._icons[color] = color_icon(color, 10)
            table.item(r, 1).setIcon(icon)
        self._shown = rows

    def _on_selection(self, ids: list) -> None:
        if self._pending:
            return
        want = set(ids)
        sm = self.table.selectionModel()
        self.table.blockSignals(True)
        sm.blockSignals(True)
        self.table.clearSelection()
        first = None
        for r, iid in enumerate(self._ids):
            if iid in want:
                self.table.selectRow(r) if len(want) == 1 else sm.select(
                    self.table.model().index(r, 0),
                    QtCore.QItemSelectionModel.Select | QtCore.QItemSelectionModel.Rows)
                first = r if first is None else first
        sm.blockSignals(False)
        self.table.blockSignals(False)
        self.table.viewport().update()
        if first is not None:
            self.table.scrollToItem(self.table.item(first, 0))

    def _on_table_selection(self) -> None:
        rows = sorted({i.row() for i in self.table.selectionModel().selectedRows()})
        ids = [self.table.item(r, 0).data(QtCore.Qt.UserRole) for r in rows]
        self.controller.set_selection(ids)
