"""The keyboard shortcuts help: every action with a shortcut, plus the canvas's own keys."""
from __future__ import annotations

from PyQt5 import QtGui, QtWidgets

CANVAS_KEYS = [
    ("Canvas", "Mouse wheel", "Zoom to the cursor; on a stack or series: next / previous slice"),
    ("Canvas", "Ctrl + mouse wheel", "Zoom to the cursor (on stacks too)"),
    ("Canvas", "Right-drag", "Window / level: left-right = width, up-down = level"),
    ("Canvas", "Middle-drag, or Space + drag", "Pan"),
    ("Canvas", "H (hold)", "Show the image without masks"),
    ("Canvas", "Esc", "Cancel the polygon or line being drawn, else clear the selection"),
    ("Select", "Click", "Pick the top instance under the cursor"),
    ("Select", "Tab / Shift+Tab", "Next / previous instance overlapping at the last click"),
    ("Select", "Shift+click or Ctrl+click", "Add or remove an instance from the selection"),
    ("Polygon", "Click", "Add a vertex"),
    ("Polygon", "Double-click or Enter", "Close the polygon (Shift: always a new instance)"),
    ("Polygon", "Backspace", "Remove the last vertex"),
    ("Brush / Eraser", "Drag", "Paint / erase (one undo step per stroke)"),
    ("Magic wand", "Click (Shift+click)", "Flood fill within the tolerance (as a new instance)"),
    ("Split", "Drag", "Cut an instance along the line"),
]


def shortcut_rows(window) -> list[tuple[str, str, str]]:
    rows = []
    seen = set()
    for menu_name, menu in window.menus.items():
        for act in _walk(menu):
            keys = [k.toString(QtGui.QKeySequence.NativeText) for k in act.shortcuts()]
            if not keys or id(act) in seen:
                continue
            seen.add(id(act))
            rows.append((menu.title().replace("&", ""), ", ".join(keys), act.text().replace("&", "")))
    for act in getattr(window, "extra_shortcut_actions", []):
        keys = [k.toString(QtGui.QKeySequence.NativeText) for k in act.shortcuts()]
        rows.append(("Labels", ", ".join(keys), act.text()))
    return rows + CANVAS_KEYS


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
