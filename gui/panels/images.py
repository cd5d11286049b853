"""Image list: every item with its status and instance count, a stack's slices grouped under
the stack (collapsible); filter by status and name.

A model/view pair (no widget per item): a project of 100,000 items costs a few lists of ids.
Top-level rows are plain items and stacks; a stack's rows are its slices in slice order.
Names are elided in the middle (the end of a file name tells slices apart), with the full
name in the tooltip. The Doubt column shows the active model's uncertainty about each item
once it was ranked (gui.ranking; a stack shows its most doubtful slice), empty before.
"""
from __future__ import annotations

from typing import Optional

from PyQt5 import QtCore, QtGui, QtWidgets

STATUS_COLORS = {"new": QtGui.QColor(150, 150, 150), "predicted": QtGui.QColor(230, 170, 40),
                 "reviewed": QtGui.QColor(80, 190, 90)}
TOP = 0  # internalId of top-level rows; a slice row's internalId is its stack's row + 1
DOUBT = 3  # the uncertainty column


class _Stack:
    __slots__ = ("source", "name", "ids", "summary", "doubt")

    def __init__(self, source: int, name: str, ids: list[str]) -> None:
        self.source, self.name, self.ids = source, name, ids
        self.summary: Optional[tuple] = None  # (status text, colour key, count) cached
        self.doubt: Optional[float] = None    # the most doubtful slice's score (None: none ranked)


class ItemsModel(QtCore.QAbstractItemModel):
    HEADERS = ("Item", "Status", "#", "Doubt")
    HEADER_TIPS = ("Image, or stack with its slices", "new / predicted / reviewed (a stack: slices reviewed)",
                   "Instances", "How unsure the active model is about the item, 0-1 (Model › Rank by "
                                "uncertainty; a stack: its most doubtful slice)")

    def __init__(self, controller, parent=None) -> None:
        super().__init__(parent)
        self.controller = controller
        self._top: list = []                   # item id (str) or _Stack per top-level row
        self._where: dict[str, tuple[int, int]] = {}  # item id -> (top row, slice row or -1)
        self._bold: Optional[str] = None
        self._doubt: dict[str, float] = {}           # item id -> uncertainty score
        controller.projectOpened.connect(self.reset)
        controller.projectClosed.connect(self.reset)
        controller.itemsChanged.connect(self.reset)
        controller.statusChanged.connect(self._changed)
        controller.countChanged.connect(self._changed)

    # ------------------------------------------------------------------ structure
    def reset(self, *_args) -> None:
        self.beginResetModel()
        self._top, self._where = [], {}
        ctl = self.controller
        by_source: dict[int, list] = {}
        for it in ctl.items:
            by_source.setdefault(it.source, []).append(it)
        done: set[int] = set()
        for it in ctl.items:  # project order; a stack sits where its first slice is
            group = by_source[it.source]
            if len(group) == 1:
                self._where[it.id] = (len(self._top), -1)
                self._top.append(it.id)
            elif it.source not in done:
                done.add(it.source)
                group = sorted(group, key=lambda i: i.slice)
                row = len(self._top)
                src = ctl.project.sources[it.source]
                self._top.append(_Stack(it.source, src.name, [g.id for g in group]))
                for k, g in enumerate(group):
                    self._where[g.id] = (row, k)
        self._stack_doubts()
        self.endResetModel()

    def index(self, row: int, column: int, parent=QtCore.QModelIndex()) -> QtCore.QModelIndex:
        if column < 0 or column >= len(self.HEADERS) or row < 0:
            return QtCore.QModelIndex()
        if not parent.isValid():
            return self.createIndex(row, column, TOP) if row < len(self._top) else QtCore.QModelIndex()
        if parent.internalId() != TOP:
            return QtCore.QModelIndex()
        node = self._top[parent.row()]
        if isinstance(node, _Stack) and row < len(node.ids):
            return self.createIndex(row, column, parent.row() + 1)
        return QtCore.QModelIndex()

    def parent(self, index=QtCore.QModelIndex()) -> QtCore.QModelIndex:
        if not index.isValid() or index.internalId() == TOP:
            return QtCore.QModelIndex()
        return self.createIndex(index.internalId() - 1, 0, TOP)

    def rowCount(self, parent=QtCore.QModelIndex()) -> int:
        if not parent.isValid():
            return len(self._top)
        if parent.internalId() != TOP or parent.column() != 0:
            return 0
        node = self._top[parent.row()]
        return len(node.ids) if isinstance(node, _Stack) else 0

    def columnCount(self, parent=QtCore.QModelIndex()) -> int:
        return len(self.HEADERS)

    def headerData(self, section, orientation, role=QtCore.Qt.DisplayRole):
        if orientation == QtCore.Qt.Horizontal and role == QtCore.Qt.DisplayRole:
            return self.HEADERS[section]
        if orientation == QtCore.Qt.Horizontal and role == QtCore.Qt.ToolTipRole:
            return self.HEADER_TIPS[section]
        return None

    # ------------------------------------------------------------------ lookups
    def node(self, index):
        """The item id (str) or the _Stack an index stands for (None when invalid)."""
        if not index.isValid():
            return None
        if index.internalId() == TOP:
            return self._top[index.row()]
        return self._top[index.internalId() - 1].ids[index.row()]

    def item_id(self, index_or_row) -> Optional[str]:
        """The item id of a row (a top-level row number, or an index); None for a stack row."""
        node = self._top[index_or_row] if isinstance(index_or_row, int) else self.node(index_or_row)
        return node if isinstance(node, str) else None

    def item_ids(self, index) -> list[str]:
        node = self.node(index)
        return list(node.ids) if isinstance(node, _Stack) else ([node] if node else [])

    def index_of(self, item_id: str, column: int = 0) -> QtCore.QModelIndex:
        where = self._where.get(item_id)
        if where is None:
            return QtCore.QModelIndex()
        top, k = where
        if k < 0:
            return self.createIndex(top, column, TOP)
        return self.createIndex(k, column, top + 1)

    def stack_index(self, item_id: str) -> QtCore.QModelIndex:
        """The stack row holding a slice (invalid for a plain item)."""
        where = self._where.get(item_id)
        if where is None or where[1] < 0:
            return QtCore.QModelIndex()
        return self.createIndex(where[0], 0, TOP)

    def position(self, item_id: str) -> tuple[int, int]:
        """(top-level row, slice row or -1): the list's own order."""
        return self._where.get(item_id, (len(self._top), -1))

    def row_of(self, item_id: str) -> int:
        """Top-level row of an item (its stack's row for a slice); -1 when unknown."""
        where = self._where.get(item_id)
        return -1 if where is None else where[0]

    def all_item_ids(self) -> list[str]:
        out: list[str] = []
        for node in self._top:
            out.extend(node.ids if isinstance(node, _Stack) else [node])
        return out

    # ------------------------------------------------------------------ updates
    def set_doubts(self, scores: dict[str, float]) -> None:
        """Uncertainty per item id (items not in it show an empty cell)."""
        self._doubt = dict(scores)
        self._stack_doubts()
        if self._top:
            last = self.index(len(self._top) - 1, DOUBT)
            self.dataChanged.emit(self.index(0, DOUBT), last)
            for row, node in enumerate(self._top):
                if isinstance(node, _Stack):
                    parent = self.index(row, 0)
                    self.dataChanged.emit(self.index(0, DOUBT, parent), self.index(len(node.ids) - 1, DOUBT, parent))

    def doubt_of(self, item_id: str) -> Optional[float]:
        return self._doubt.get(item_id)

    def _stack_doubts(self) -> None:
        for node in self._top:
            if isinstance(node, _Stack):
                vals = [self._doubt[i] for i in node.ids if i in self._doubt]
                node.doubt = max(vals) if vals else None

    def _changed(self, item_id: str, *_args) -> None:
        idx = self.index_of(item_id, 1)
        if not idx.isValid():
            return
        self.dataChanged.emit(idx, self.index_of(item_id, 2))
        stack = self.stack_index(item_id)
        if stack.isValid():
            self._top[stack.row()].summary = None
            self.dataChanged.emit(stack.siblingAtColumn(1), stack.siblingAtColumn(2))

    def current_changed(self, item_id: str) -> None:
        for iid in (self._bold, item_id):
            if iid:
                for idx in (self.index_of(iid), self.stack_index(iid)):
                    if idx.isValid():
                        self.dataChanged.emit(idx, idx.siblingAtColumn(2))
        self._bold = item_id

    # ------------------------------------------------------------------ data
    def _summary(self, stack: _Stack) -> tuple:
        if stack.summary is None:
            ctl = self.controller
            counts: dict[str, int] = {}  # status -> slices
            total, unknown = 0, False
            for iid in stack.ids:
                s = ctl.status_of(iid)
                counts[s] = counts.get(s, 0) + 1
                n = ctl.count_of(iid)
                unknown = unknown or n is None
                total += n or 0
            n = len(stack.ids)
            if len(counts) == 1:
                status = key = next(iter(counts))
            else:  # short, so the names keep the width
                key = "predicted" if counts.get("predicted") else "new"
                status = f"{counts.get('reviewed', 0)}/{n} ✓"
            tip = ", ".join(f"{counts[s]} {s}" for s in ("reviewed", "predicted", "new") if counts.get(s))
            stack.summary = (status, key, None if unknown else total, f"{n} slices: {tip}")
        return stack.summary

    def data(self, index, role=QtCore.Qt.DisplayRole):
        node = self.node(index)
        ctl = self.controller
        if node is None or ctl.project is None:  # closing: the reset follows projectClosed
            return None
        col = index.column()
        if isinstance(node, _Stack):
            status, key, count, status_tip = self._summary(node)
            name, tip = f"{node.name}  ({len(node.ids)} slices)", node.name
            bold = ctl.item_id in node.ids
            doubt = node.doubt
        else:
            item = ctl.project.item(node)
            status = key = ctl.status_of(node)
            count = ctl.count_of(node)
            name, tip, bold = item.name, f"{item.name}\n{node}", node == ctl.item_id
            status_tip = None
            doubt = self._doubt.get(node)
        if role == QtCore.Qt.DisplayRole:
            if col == DOUBT:
                return "" if doubt is None else f"{doubt:.2f}"
            return (name, status, "…" if count is None else count)[col]
        if role == QtCore.Qt.ForegroundRole and col == 1:
            return STATUS_COLORS.get(key)
        if role == QtCore.Qt.ToolTipRole:
            return tip if col == 0 else status_tip if col == 1 else None
        if role == QtCore.Qt.TextAlignmentRole and col == DOUBT:
            return int(QtCore.Qt.AlignRight | QtCore.Qt.AlignVCenter)
        if role == QtCore.Qt.UserRole:  # for sorting and filtering
            if col == DOUBT:  # not ranked: below every score
                return -1.0 if doubt is None else doubt
            if col == 2:
                return -1 if count is None else count
            return (name, status)[col]
        if role == QtCore.Qt.FontRole and bold:
            f = QtGui.QFont()
            f.setBold(True)
            return f
        return None


class ItemsFilter(QtCore.QSortFilterProxyModel):
    """Status and name filter. A stack shows when one of its slices does (recursive
    filtering); a name that matches the stack shows all its slices."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.status = "all"
        self.text = ""
        self.setSortRole(QtCore.Qt.UserRole)
        self.setRecursiveFilteringEnabled(True)

    @property
    def active(self) -> bool:
        return self.status != "all" or bool(self.text)

    def set_status(self, status: str) -> None:
        self.status = status
        self.invalidateFilter()

    def set_text(self, text: str) -> None:
        self.text = text.strip().lower()
        self.invalidateFilter()

    def filterAcceptsRow(self, row: int, parent) -> bool:
        model = self.sourceModel()
        idx = model.index(row, 0, parent)
        node = model.node(idx)
        if not isinstance(node, str):
            # a stack row stands for its slices: shown through them (recursive filtering)
            return not self.active
        if self.status != "all" and model.controller.status_of(node) != self.status:
            return False
        if self.text:
            names = str(model.data(idx)).lower()
            if parent.isValid():
                names += "\n" + str(model.node(parent).name).lower()
            if self.text not in names:
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
        self.tree = self.table = QtWidgets.QTreeView()
        t = self.tree
        t.setModel(self.proxy)
        t.setUniformRowHeights(True)  # constant-time layout for long lists
        t.setTextElideMode(QtCore.Qt.ElideMiddle)
        t.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectRows)
        t.setSelectionMode(QtWidgets.QAbstractItemView.ExtendedSelection)
        t.setSortingEnabled(True)
        t.sortByColumn(-1, QtCore.Qt.AscendingOrder)
        t.setEditTriggers(QtWidgets.QAbstractItemView.NoEditTriggers)
        t.setExpandsOnDoubleClick(True)
        t.setFocusPolicy(QtCore.Qt.ClickFocus)
        t.setIndentation(14)
        header = t.header()
        header.setStretchLastSection(False)
        header.setSectionResizeMode(0, QtWidgets.QHeaderView.Stretch)
        header.setSectionResizeMode(1, QtWidgets.QHeaderView.ResizeToContents)
        header.setSectionResizeMode(2, QtWidgets.QHeaderView.ResizeToContents)
        header.setSectionResizeMode(DOUBT, QtWidgets.QHeaderView.ResizeToContents)
        self.summary = QtWidgets.QLabel()
        top = QtWidgets.QHBoxLayout()
        top.addWidget(self.status_box)
        top.addWidget(self.search, 1)
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.addLayout(top)
        lay.addWidget(t, 1)
        lay.addWidget(self.summary)
        self._last_slice: dict[int, str] = {}  # stack source -> the slice seen last

        self.status_box.currentTextChanged.connect(self.proxy.set_status)
        self.search.textChanged.connect(self._on_text)
        t.clicked.connect(self._on_clicked)
        t.expanded.connect(lambda _i: self._on_current(self.controller.item_id or ""))  # slice row lights up
        t.collapsed.connect(lambda _i: self._on_current(self.controller.item_id or ""))
        t.activated.connect(self._on_clicked)
        controller.currentItemChanged.connect(self._on_current)
        controller.statusChanged.connect(self._update_summary)
        controller.projectOpened.connect(self._update_summary)
        controller.itemsChanged.connect(self._update_summary)
        controller.projectClosed.connect(self._update_summary)
        controller.projectClosed.connect(self._last_slice.clear)

    def _on_text(self, text: str) -> None:
        self.proxy.set_text(text)
        if self.proxy.text:
            self.tree.expandAll()  # matching slices are what the user looks for

    # ------------------------------------------------------------------ public
    def set_uncertainty(self, scores: dict[str, float]) -> None:
        """The Doubt column's scores (gui.ranking keeps them; {} empties the column)."""
        self.model.set_doubts(scores)   # a list sorted by the column re-sorts (dynamic sort)

    def sort_by_uncertainty(self) -> None:
        """Most uncertain first (what a ranking is for)."""
        self.tree.sortByColumn(DOUBT, QtCore.Qt.DescendingOrder)

    def visible_item_ids(self) -> list[str]:
        """Item ids in the list's current order and filter (N / Shift+N walk these); slices
        of a collapsed stack count."""
        if not self.proxy.active and self.proxy.sortColumn() < 0:
            return self.model.all_item_ids()
        out: list[str] = []
        p = self.proxy
        for r in range(p.rowCount()):
            idx = p.index(r, 0)
            node = self.model.node(p.mapToSource(idx))
            if isinstance(node, str):
                out.append(node)
            else:
                out.extend(self.model.node(p.mapToSource(p.index(k, 0, idx))) for k in range(p.rowCount(idx)))
        return out

    def selected_item_ids(self) -> list[str]:
        """Selected items in list order; a selected stack stands for its slices (as filtered)."""
        out: list[str] = []
        p = self.proxy
        for idx in self.tree.selectionModel().selectedRows():
            node = self.model.node(p.mapToSource(idx))
            if isinstance(node, str):
                out.append(node)
            else:
                out.extend(self.model.node(p.mapToSource(p.index(k, 0, idx))) for k in range(p.rowCount(idx)))
        return sorted(set(out), key=self.model.position)

    # ------------------------------------------------------------------ events
    def _on_clicked(self, index) -> None:
        src = self.proxy.mapToSource(index)
        node = self.model.node(src)
        if node is None:
            return
        mods = QtWidgets.QApplication.keyboardModifiers()
        if mods & (QtCore.Qt.ShiftModifier | QtCore.Qt.ControlModifier):
            return  # extending the selection (for batch actions), not opening
        if not isinstance(node, str):
            if self.controller.item_id in node.ids:
                return
            node = self._last_slice.get(node.source, node.ids[0])  # back where the user was
        if not self.controller.request_item(node):
            self._on_current(self.controller.item_id or "")

    def _on_current(self, item_id: str) -> None:
        self.model.current_changed(item_id)  # bold font follows the current item
        src = self.model.index_of(item_id)
        if not src.isValid():
            return
        stack = self.model.stack_index(item_id)
        if stack.isValid():
            self._last_slice[self.model.node(stack).source] = item_id
            pstack = self.proxy.mapFromSource(stack)
            if pstack.isValid() and not self.tree.isExpanded(pstack):
                src = stack  # a collapsed stack stays collapsed: its row is highlighted
        idx = self.proxy.mapFromSource(src)
        if idx.isValid():
            sm = self.tree.selectionModel()
            sm.blockSignals(True)
            sm.setCurrentIndex(idx, QtCore.QItemSelectionModel.ClearAndSelect | QtCore.QItemSelectionModel.Rows)
            sm.blockSignals(False)
            self.tree.viewport().update()
            self.tree.scrollTo(idx)

    def _update_summary(self, *_args) -> None:
        ctl = self.controller
        counts = {"new": 0, "predicted": 0, "reviewed": 0}
        for it in ctl.items:
            s = ctl.status_of(it.id)
            counts[s] = counts.get(s, 0) + 1
        self.summary.setText(f"{len(ctl.items)} items · {counts['reviewed']} reviewed · "
                             f"{counts['predicted']} predicted · {counts['new']} new")
