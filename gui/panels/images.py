"""Image list: every item with its status and instance count; filter by status and name."""
from __future__ import annotations

from PyQt5 import QtCore, QtGui, QtWidgets

STATUS_COLORS = {"new": QtGui.QColor(150, 150, 150), "predicted": QtGui.QColor(230, 170, 40),
                 "reviewed": QtGui.QColor(80, 190, 90)}


class ItemsModel(QtCore.QAbstractTableModel):
    HEADERS = ("Item", "Status", "Instances")

    def __init__(self, controller, parent=None) -> None:
        super().__init__(parent)
        self.controller = controller
        self._ids: list[str] = []
        self._row: dict[str, int] = {}
        controller.projectOpened.connect(self.reset)
        controller.projectClosed.connect(self.reset)
        controller.itemsChanged.connect(self.reset)
        controller.statusChanged.connect(self._changed)
        controller.countChanged.connect(self._changed)

    def reset(self, *_args) -> None:
        self.beginResetModel()
        self._ids = [it.id for it in self.controller.items]
        self._row = {i: k for k, i in enumerate(self._ids)}
        self.endResetModel()

    def _changed(self, item_id: str, *_args) -> None:
        row = self._row.get(item_id)
        if row is not None:
            self.dataChanged.emit(self.index(row, 1), self.index(row, 2))

    def current_changed(self, item_id: str) -> None:
        for iid in (getattr(self, "_bold", None), item_id):
            row = self._row.get(iid) if iid else None
            if row is not None:
                self.dataChanged.emit(self.index(row, 0), self.index(row, 2))
        self._bold = item_id

    def item_id(self, row: int) -> str:
        return self._ids[row]

    def row_of(self, item_id: str) -> int:
        return self._row.get(item_id, -1)

    def rowCount(self, parent=QtCore.QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self._ids)

    def columnCount(self, parent=QtCore.QModelIndex()) -> int:
        return 3

    def headerData(self, section, orientation, role=QtCore.Qt.DisplayRole):
        if orientation == QtCore.Qt.Horizontal and role == QtCore.Qt.DisplayRole:
            return self.HEADERS[section]
        return None

    def data(self, index, role=QtCore.Qt.DisplayRole):
        if not index.isValid():
            return None
        item_id = self._ids[index.row()]
        col = index.column()
        ctl = self.controller
        if role == QtCore.Qt.DisplayRole:
            if col == 0:
                return ctl.project.item(item_id).name
            if col == 1:
                return ctl.status_of(item_id)
            n = ctl.count_of(item_id)
            return "…" if n is None else n
        if role == QtCore.Qt.ForegroundRole and col == 1:
            return STATUS_COLORS.get(ctl.status_of(item_id))
        if role == QtCore.Qt.ToolTipRole and col == 0:
            return item_id
        if role == QtCore.Qt.UserRole:  # for sorting and filtering
            if col == 2:
                n = ctl.count_of(item_id)
                return -1 if n is None else n
            return self.data(index, QtCore.Qt.DisplayRole)
        if role == QtCore.Qt.FontRole and item_id == ctl.item_id:
            f = QtGui.QFont()
            f.setBold(True)
            return f
        return None


class ItemsFilter(QtCore.QSortFilterProxyModel):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.status = "all"
        self.text = ""
        self.setSortRole(QtCore.Qt.UserRole)

    def set_status(self, status: str) -> None:
        self.status = status
        self.invalidateFilter()

    def set_text(self, text: str) -> None:
        self.text = text.strip().lower()
        self.invalidateFilter()

    def filterAcceptsRow(self, row: int, parent) -> bool:
        model = self.sourceModel()
        if self.status != "all" and model.data(model.index(row, 1)) != self.status:
            return False
        if self.text and self.text not in str(model.data(model.index(row, 0))).lower():
            return False
        return True


class ImagesPanel(QtWidgets.QWidget):
    def __init__(self, controller, parent=None) -> None:
        super().__init__(parent)
        self.controller = controller
        self.model = ItemsModel(controller, self)
        self.proxy = ItemsFilter(self)
        self.proxy.setSourceModel(self.model)
        self.status_box = QtWidgets.QComboBox()
        self.status_box.addItems(["all", "new", "predicted", "reviewed"])
        self.status_box.setToolTip("Show items with this status")
        self.search = QtWidgets.QLineEdit()
        self.search.setPlaceholderText("Filter by name")
        self.search.setClearButtonEnabled(True)
        self.table = QtWidgets.QTableView()
        self.table.setModel(self.proxy)
        self.table.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QtWidgets.QAbstractItemView.ExtendedSelection)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(-1, QtCore.Qt.AscendingOrder)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(20)
        self.table.horizontalHeader().setSectionResizeMode(0, QtWidgets.QHeaderView.Stretch)
        self.table.horizontalHeader().setSectionResizeMode(1, QtWidgets.QHeaderView.ResizeToContents)
        self.table.horizontalHeader().setSectionResizeMode(2, QtWidgets.QHeaderView.ResizeToContents)
        self.table.setEditTriggers(QtWidgets.QAbstractItemView.NoEditTriggers)
        self.table.setFocusPolicy(QtCore.Qt.ClickFocus)
        self.summary = QtWidgets.QLabel()
        top = QtWidgets.QHBoxLayout()
        top.addWidget(self.status_box)
        top.addWidget(self.search, 1)
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.addLayout(top)
        lay.addWidget(self.table, 1)
        lay.addWidget(self.summary)

        self.status_box.currentTextChanged.connect(self.proxy.set_status)
        self.search.textChanged.connect(self.proxy.set_text)
        self.table.clicked.connect(self._on_clicked)
        self.table.activated.connect(self._on_clicked)
        controller.currentItemChanged.connect(self._on_current)
        controller.statusChanged.connect(self._update_summary)
        controller.projectOpened.connect(self._update_summary)
        controller.itemsChanged.connect(self._update_summary)
        controller.projectClosed.connect(self._update_summary)

    def visible_item_ids(self) -> list[str]:
        """Item ids in the list's current order and filter (N / Shift+N walk these)."""
        out = []
        for r in range(self.proxy.rowCount()):
            src = self.proxy.mapToSource(self.proxy.index(r, 0))
            out.append(self.model.item_id(src.row()))
        return out

    def selected_item_ids(self) -> list[str]:
        rows = {self.proxy.mapToSource(i).row() for i in self.table.selectionModel().selectedRows()}
        return [self.model.item_id(r) for r in sorted(rows)]

    def _on_clicked(self, index) -> None:
        src = self.proxy.mapToSource(index)
        if src.isValid():
            mods = QtWidgets.QApplication.keyboardModifiers()
            if mods & (QtCore.Qt.ShiftModifier | QtCore.Qt.ControlModifier):
                return  # extending the selection (for batch actions), not opening
            if not self.controller.request_item(self.model.item_id(src.row())):
                self._on_current(self.controller.item_id or "")

    def _on_current(self, item_id: str) -> None:
        row = self.model.row_of(item_id)
        self.model.current_changed(item_id)  # bold font follows the current item
        if row < 0:
            return
        idx = self.proxy.mapFromSource(self.model.index(row, 0))
        if idx.isValid():
            sm = self.table.selectionModel()
            sm.blockSignals(True)
            self.table.selectRow(idx.row())
            sm.blockSignals(False)
            self.table.scrollTo(idx)

    def _update_summary(self, *_args) -> None:
        ctl = self.controller
        counts = {"new": 0, "predicted": 0, "reviewed": 0}
        for it in ctl.items:
            counts[ctl.status_of(it.id)] = counts.get(ctl.status_of(it.id), 0) + 1
        self.summary.setText(f"{len(ctl.items)} items · {counts['reviewed']} reviewed · "
                             f"{counts['predicted']} predicted · {counts['new']} new")
