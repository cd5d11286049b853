"""Start the GUI: `run_gui(project_path=None) -> exit status` (main.py calls it)."""
from __future__ import annotations

import os
import sys
from typing import Optional


def create_app(argv: Optional[list[str]] = None):
    """The QApplication (reused when one exists, e.g. under pytest-qt)."""
    from PyQt5 import QtCore, QtWidgets
    QtWidgets.QApplication.setAttribute(QtCore.Qt.AA_EnableHighDpiScaling, True)
    QtWidgets.QApplication.setAttribute(QtCore.Qt.AA_UseHighDpiPixmaps, True)
    app = QtWidgets.QApplication.instance()
    if app is None:
        app = QtWidgets.QApplication(list(argv) if argv is not None else sys.argv[:1])
    app.setOrganizationName("MaskLoop")
    app.setApplicationName("MaskLoop")
    return app


def build_window(project_path=None):
    """The main window, layout restored, with the project (if any) opened."""
    from .main_window import MainWindow
    win = MainWindow()
    win.restore_layout()
    if project_path:
        win.open_project(project_path)
    return win


def no_display_reason() -> Optional[str]:
    """Why the window cannot open here (None when it can, as far as can be told): on
    Linux, Qt's xcb/wayland platforms need a display, and without one Qt aborts the
    process (exit 134) instead of failing politely."""
    if not sys.platform.startswith("linux") or os.environ.get("QT_QPA_PLATFORM"):
        return None
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return None
    return "there is no display (DISPLAY and WAYLAND_DISPLAY are not set)"


def run_gui(project_path=None) -> int:
    try:
        from PyQt5 import QtWidgets  # noqa: F401
    except ImportError as e:  # a headless install without Qt
        print(f"maskloop: the GUI needs PyQt5 ({e}); the command line works without it "
              "(maskloop --help)", file=sys.stderr)
        return 1
    reason = no_display_reason()
    if reason:
        target = project_path or "PROJECT"
        print(f"maskloop: cannot open the window: {reason}.\n"
              f"On a server, use the command line instead, e.g. 'maskloop info {target}', "
              f"'maskloop segment {target}', 'maskloop train {target}' (maskloop --help lists them all);\n"
              f"or connect with a display (ssh -X) and run 'maskloop {target}' again.", file=sys.stderr)
        return 1
    app = create_app()
    from . import theme
    theme.apply(app)
    win = build_window(project_path)
    win.show()
    win.canvas.setFocus()
    return int(app.exec_())
