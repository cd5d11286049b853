"""The first-start dialog: new project, open project, or open the demo project.

The demo project is built by the engine (`maskloop demo DIR`: synthetic CT-like and
microscopy-like images with a few reviewed items), off the GUI thread, so a newcomer
can go round the whole loop in minutes on a laptop CPU.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from PyQt5 import QtCore, QtWidgets

from .. import theme


def default_demo_dir() -> Path:
    docs = QtCore.QStandardPaths.writableLocation(QtCore.QStandardPaths.DocumentsLocation)
    base = Path(docs) if docs else Path.home()
    return base / "MaskLoop demo"


def build_demo(folder, progress=None, cancel=None) -> Path:
    """Make the demo project at `folder` (or reuse one there); returns its root."""
    from engine.demo import build_demo as engine_build_demo
    from engine.project import MANIFEST
    folder = Path(folder)
    if not (folder / MANIFEST).exists():
        engine_build_demo(folder, progress=progress, cancel=cancel)
    return folder


class FirstRunDialog(QtWidgets.QDialog):
    """`choice` is "new", "open" or "demo" after one of the buttons (None when closed)."""

    chosen = QtCore.pyqtSignal(str)

    def __init__(self, parent=None, recent: Optional[list] = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Welcome to MaskLoop")
        self.setObjectName("FirstRunDialog")
        self.choice: Optional[str] = None
        intro = QtWidgets.QLabel(
            "<h3>Welcome to MaskLoop</h3>"
            "<p>Segment CT and microscopy images, correct the masks by hand, and retrain the "
            "model on your corrections in one click.</p>"
            "<p>New here? Open the <b>demo project</b>: synthetic CT-like and microscopy-like "
            "images with a few reviewed items — train, auto-segment, correct and accept in "
            "minutes, even on a laptop CPU.</p>")
        intro.setWordWrap(True)
        intro.setMinimumWidth(480)   # a wrapped label needs a width to know its height
        intro.setMinimumHeight(intro.heightForWidth(480))
        self.demo_button = QtWidgets.QPushButton("Open the demo project")
        self.demo_button.setObjectName("demoButton")
        self.new_button = QtWidgets.QPushButton("New project from images…")
        self.new_button.setObjectName("newButton")
        self.open_button = QtWidgets.QPushButton("Open a project…")
        self.open_button.setObjectName("openButton")
        for b, c, icon in ((self.demo_button, "demo", "demo"), (self.new_button, "new", "open_images"),
                           (self.open_button, "open", "open_project")):
            b.setIcon(theme.icon(icon))
            b.setIconSize(QtCore.QSize(22, 22))
            b.setMinimumHeight(34)
            b.clicked.connect(lambda _=False, choice=c: self._choose(choice))
        lay = QtWidgets.QVBoxLayout(self)
        lay.addWidget(intro)
        lay.addWidget(self.demo_button)
        lay.addWidget(self.new_button)
        lay.addWidget(self.open_button)
        self.recent_list = None
        if recent:
            lay.addWidget(QtWidgets.QLabel("Recent projects (double-click to open):"))
            self.recent_list = QtWidgets.QListWidget()
            self.recent_list.setObjectName("recentList")
            self.recent_list.addItems([str(r) for r in recent])
            self.recent_list.itemActivated.connect(lambda it: self._choose("recent:" + it.text()))
            lay.addWidget(self.recent_list)
        close = QtWidgets.QDialogButtonBox(QtWidgets.QDialogButtonBox.Close)
        close.rejected.connect(self.reject)
        lay.addWidget(close)
        self.demo_button.setDefault(True)
        lay.setSizeConstraint(QtWidgets.QLayout.SetMinimumSize)

    def _choose(self, choice: str) -> None:
        self.choice = choice
        self.chosen.emit(choice)
        self.accept()
