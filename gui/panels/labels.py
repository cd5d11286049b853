"""Labels: the project's classes; pick the current one (or press 1-9), add, rename,
recolour, and hide (the checkbox)."""
from __future__ import annotations

from PyQt5 import QtCore, QtGui, QtWidgets


def color_icon(rgb, size: int = 14) -> QtGui.QIcon:
    pm = QtGui.QPixmap(size, size)
    pm.fill(QtGui.QColor(*rgb))
    return QtGui.QIcon(pm)


class LabelsPanel(QtWidgets.QWidget):
    def __init__(self, controller, parent=None) -> None:
        super().__init__(parent)
        self.controller = controller
        self.list = QtWidgets.QListWidget()
        self.list.setFocusPolicy(QtCore.Qt.ClickFocus)
        self.list.setToolTip("Current label for new instances (1-9). Untick to hide.")
        self.add_button = QtWidgets.QToolButton(text="Add")
        self.rename_button = QtWidgets.QToolButton(text="Rename")
        self.color_button = QtWidgets.QToolButton(text="Colour")
        buttons = QtWidgets.QHBoxLayout()
        for b in (self.add_button, self.rename_button, self.color_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.addWidget(self.list, 1)
        lay.addLayout(buttons)

        self.add_button.clicked.connect(self.ask_add)
        self.rename_button.clicked.connect(self.ask_rename)
        self.color_button.clicked.connect(self.ask_color)
        self.list.currentRowChanged.connect(self._on_row)
        self.list.itemChanged.connect(self._on_item_changed)
        self.list.itemDoubleClicked.connect(lambda _i: self.ask_rename())
        controller.labelsChanged.connect(self.refresh)
        controller.currentLabelChanged.connect(self._on_current)
        controller.projectClosed.connect(self.refresh)
        self.refresh()

    def refresh(self) -> None:
        labels = self.controller.labels
        self.list.blockSignals(True)
        self.list.clear()
        if labels is not None:
            for k, lab in enumerate(labels):
                prefix = f"{k + 1}  " if k < 9 else "   "
                it = QtWidgets.QListWidgetItem(color_icon(lab.color), prefix + lab.name)
                it.setData(QtCore.Qt.UserRole, lab.name)
                it.setFlags(it.flags() | QtCore.Qt.ItemIsUserCheckable)
                it.setCheckState(QtCore.Qt.Checked if lab.visible else QtCore.Qt.Unchecked)
                self.list.addItem(it)
        self.list.blockSignals(False)
        self._on_current(self.controller.current_label or "")
        enabled = labels is not None
        for b in (self.add_button, self.rename_button, self.color_button):
            b.setEnabled(enabled)

    def current_name(self):
        it = self.list.currentItem()
        return it.data(QtCore.Qt.UserRole) if it is not None else None

    def _on_current(self, name: str) -> None:
        for r in range(self.list.count()):
            if self.list.item(r).data(QtCore.Qt.UserRole) == name:
                self.list.blockSignals(True)
                self.list.setCurrentRow(r)
                self.list.blockSignals(False)
                return

    def _on_row(self, row: int) -> None:
        if row >= 0:
            self.controller.set_current_label(self.list.item(row).data(QtCore.Qt.UserRole))

    def _on_item_changed(self, item) -> None:
        self.controller.set_label_visible(item.data(QtCore.Qt.UserRole),
                                          item.checkState() == QtCore.Qt.Checked)

    def ask_add(self) -> None:
        name, ok = QtWidgets.QInputDialog.getText(self, "Add label", "Name of the new label:")
        if ok and name.strip():
            added = self.controller.add_label(name.strip())
            if added:
                self.controller.set_current_label(added)

    def ask_rename(self) -> None:
        old = self.current_name()
        if not old:
            return
        new, ok = QtWidgets.QInputDialog.getText(self, "Rename label",
                                                 f"New name for {old!r} (annotation files are updated):",
                                                 text=old)
        if ok and new.strip() and new.strip() != old:
            self.controller.rename_label(old, new.strip())

    def ask_color(self) -> None:
        name = self.current_name()
        if not name:
            return
        color = QtWidgets.QColorDialog.getColor(QtGui.QColor(*self.controller.label_color(name)), self,
                                                f"Colour of {name}")
        if color.isValid():
            self.controller.recolor_label(name, (color.red(), color.green(), color.blue()))
