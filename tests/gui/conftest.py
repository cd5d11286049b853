"""GUI test set-up: offscreen Qt, isolated QSettings, a small project, event helpers."""
from __future__ import annotations

import os

os.environ["QT_QPA_PLATFORM"] = "offscreen"  # before any Qt import


import pytest

pytest.importorskip("PyQt5")
pytest.importorskip("pytestqt")

from PyQt5 import QtCore  # noqa: E402

from guihelpers import make_project, open_window  # noqa: E402


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/gui" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.gui)


@pytest.fixture(autouse=True)
def _isolated_settings(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("qsettings"))
    for fmt in (QtCore.QSettings.NativeFormat, QtCore.QSettings.IniFormat):
        QtCore.QSettings.setPath(fmt, QtCore.QSettings.UserScope, folder)
    yield


@pytest.fixture
def project(tmp_path):
    return make_project(tmp_path)


@pytest.fixture
def stack_project(tmp_path):
    return make_project(tmp_path, with_stack=True)


@pytest.fixture
def window(qtbot, project):
    win = open_window(qtbot, project.root)
    yield win
    win.controller.close_project(force=True)


