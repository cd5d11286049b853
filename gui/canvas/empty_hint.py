"""What the canvas shows when there is nothing to draw: what to do next, as buttons."""
from __future__ import annotations

from PyQt5 import QtCore, QtWidgets


class EmptyHint(QtWidgets.QWidget):
    """'Open a project, images or the demo' (no project) or 'Add images' (an empty project).
    The buttons trigger the window's own actions (set_actions)."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("canvasEmpty")
        self.text = QtWidgets.QLabel()
        self.text.setObjectName("canvasHint")
        self.text.setAlignment(QtCore.Qt.AlignCenter)
        self.text.setWordWrap(True)
        self.buttons = QtWidgets.QHBoxLayout()
        self.buttons.addStretch(1)
        self.buttons.addStretch(1)
        lay = QtWidgets.QVBoxLayout(self)
        lay.addStretch(2)
        lay.addWidget(self.text)
        lay.addSpacing(12)
        lay.addLayout(self.buttons)
        lay.addStretch(3)
        self._no_project: list[QtWidgets.QAction] = []
        self._no_items: list[QtWidgets.QAction] = []
        self._shown: list[QtWidgets.QToolButton] = []

    def set_actions(self, no_project: list, no_items: list) -> None:
        self._no_project, self._no_items = list(no_project), list(no_items)

    def show_for(self, has_project: bool) -> None:
        if has_project:
            self.text.setText("This project has no images yet.\nAdd image files, TIFF stacks or a DICOM series.")
            actions = self._no_items
        else:
            self.text.setText("No project is open.\nOpen a project, make one from your images, "
                              "or try the demo project (synthetic CT and microscopy images).")
            actions = self._no_project
        for b in self._shown:
            self.buttons.removeWidget(b)
            b.deleteLater()
        self._shown = []
        for k, act in enumerate(actions):
            b = QtWidgets.QToolButton()
            b.setDefaultAction(act)
            b.setToolButtonStyle(QtCore.Qt.ToolButtonTextBesideIcon)
            b.setIconSize(QtCore.QSize(22, 22))
            b.setMinimumHeight(34)
            self.buttons.insertWidget(1 + k, b)
            self._shown.append(b)
