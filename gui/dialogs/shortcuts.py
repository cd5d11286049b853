"""The keyboard shortcuts help, generated from the keymap (resources/keymap.json): every
action there with the window's name for it and the menu it is in, then the canvas's own
keys and mouse gestures."""
from __future__ import annotations

from PyQt5 import QtGui, QtWidgets

from .. import theme


def shortcut_rows(window) -> list[tuple[str, str, str]]:
    """(where, keys, does) for every keymap action the window has, then the canvas keys."""
    where = {}
    for menu in window.menus.values():
        for act in _walk(menu):
            where.setdefault(id(act), menu.title().replace("&", ""))
    rows = []
    for name, keys in theme.keymap()["actions"].items():
        act = window.actions.get(name)
        if act is None or not keys:
            continue
        native = ", ".join(QtGui.QKeySequence(k).toString(QtGui.QKeySequence.NativeText) for k in keys)
        group = where.get(id(act), "Labels" if name.startswith("label ") else "Window")
        rows.append((group, native, act.text().replace("&", "").replace("…", "")))
    return rows + theme.canvas_keys()


def _walk(menu: QtWidgets.QMenu):
    for act in menu.actions():
        if act.menu() is not None:
            yield from _walk(act.menu())
        elif not act.isSeparator():
            yield act


class ShortcutsDialog(QtWidgets.QDialog):
    def __init__(self, window) -> None:
        super().__init__(window)
        self.setWindowTitle("Keyboard shortcuts")
        rows = shortcut_rows(window)
        table = QtWidgets.QTableWidget(len(rows), 3)
        table.setHorizontalHeaderLabels(["Where", "Keys", "Does"])
        for r, row in enumerate(rows):
            for c, v in enumerate(row):
                table.setItem(r, c, QtWidgets.QTableWidgetItem(v))
        table.setEditTriggers(QtWidgets.QAbstractItemView.NoEditTriggers)
        table.verticalHeader().setVisible(False)
        table.horizontalHeader().setSectionResizeMode(2, QtWidgets.QHeaderView.Stretch)
        table.resizeColumnsToContents()
        self.table = table
        buttons = QtWidgets.QDialogButtonBox(QtWidgets.QDialogButtonBox.Close)
        buttons.rejected.connect(self.reject)
        lay = QtWidgets.QVBoxLayout(self)
        lay.addWidget(table)
        lay.addWidget(buttons)
        self.resize(640, 560)
