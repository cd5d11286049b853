"""The Measurements dock: follows edits, a row click selects and centres, project levels run
in the background, CSV/plots export, and the scale dialog's values reach the engine."""
from __future__ import annotations

import csv

import numpy as np
import pytest
from PyQt5 import QtCore, QtWidgets

from engine.measure_project import measure_project
from engine.project import Project

pytestmark = pytest.mark.gui


@pytest.fixture
def mwin(qtbot, stack_project):
    from gui.main_window import MainWindow
    win = MainWindow(loop=False)
    qtbot.addWidget(win)
    win.resize(1200, 900)
    win.show()
    qtbot.waitExposed(win)
    assert win.open_project(stack_project.root)
    win.docks["measurements"].show()
    yield win
    win.controller.close_project(force=True)


def _col(panel, name):
    t = panel.table
    heads = [t.horizontalHeaderItem(c).text() for c in range(t.columnCount())]
    return heads.index(name)


def _wait_rows(qtbot, panel, n):
    qtbot.waitUntil(lambda: panel.table.rowCount() == n, timeout=5000)


def test_table_follows_edits_and_undo(qtbot, mwin):
    panel = mwin.measurements_panel
    _wait_rows(qtbot, panel, 4)
    assert "pixels" in panel.note.text()
    areas = sorted(float(panel.table.item(r, _col(panel, "area_px2")).text()) for r in range(4))
    yy, xx = np.mgrid[-15:16, -15:16]
    disk_area = float(((xx * xx + yy * yy) <= 225).sum())
    assert areas == sorted([900.0, 900.0, 16.0, disk_area])  # A and B overlap: each measured whole
    c = mwin.controller
    assert c.add_mask(np.ones((10, 10), bool), 100, 200, new=True)
    _wait_rows(qtbot, panel, 5)
    c.undo_stack.undo()
    _wait_rows(qtbot, panel, 4)
    # per-label summary: cell and debris rows with counts
    s = panel.summary
    heads = [s.horizontalHeaderItem(k).text() for k in range(s.columnCount())]
    counts = {s.item(r, heads.index("label")).text(): s.item(r, heads.index("count")).text()
              for r in range(s.rowCount())}
    assert counts == {"cell": "3", "debris": "1"}


def test_row_click_selects_and_centres(qtbot, mwin):
    panel = mwin.measurements_panel
    _wait_rows(qtbot, panel, 4)
    centred = []
    panel.centre = lambda x, y: centred.append((x, y))
    # sort by area so the view order differs from the data order, then click the smallest (D)
    panel.table.sortItems(_col(panel, "area_px2"), QtCore.Qt.AscendingOrder)
    panel.table.selectRow(0)
    assert mwin.controller.selection == ["D"]
    assert centred == [(202.0, 32.0)]


def test_row_click_centres_the_real_view(qtbot, mwin):
    panel = mwin.measurements_panel
    _wait_rows(qtbot, panel, 4)
    view = mwin.canvas
    view.set_zoom(6.0)
    view.centerOn(10, 10)
    row = next(r for r in range(panel.table.rowCount()) if panel.row_data(r)["instance"] == "C")
    panel.table.selectRow(row)
    centre = view.mapToScene(view.viewport().rect().center())
    assert mwin.controller.selection == ["C"]
    assert abs(centre.x() - 150.5) < 2 and abs(centre.y() - 150.5) < 2


def test_row_of_another_item_opens_it(qtbot, mwin, stack_project):
    panel = mwin.measurements_panel
    c = mwin.controller
    first = c.item_id
    c.set_current_item(stack_project.items[1].id)
    panel.scope.setCurrentIndex(1)  # project: instances
    panel.measure_project()
    assert panel.table.rowCount() == 4
    panel.table.selectRow(0)
    assert c.item_id == first and len(c.selection) == 1


def test_project_levels_export_and_plots(qtbot, mwin, tmp_path, monkeypatch):
    panel = mwin.measurements_panel
    panel.scope.setCurrentIndex(3)  # items x labels
    panel.measure_project()
    ref = measure_project(mwin.controller.project, "item")
    assert panel.table.rowCount() == len(ref.rows) > 0
    out = tmp_path / "m.csv"
    monkeypatch.setattr(QtWidgets.QFileDialog, "getSaveFileName", lambda *a, **k: (str(out), ""))
    panel.export_dialog()
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == len(ref.rows) and "area_fraction" in rows[0]
    folder = tmp_path / "plots"
    folder.mkdir()
    monkeypatch.setattr(QtWidgets.QFileDialog, "getExistingDirectory", lambda *a, **k: str(folder))
    panel.save_plots_dialog()
    assert sorted(p.name for p in folder.iterdir()) == ["fractions.png", "gradation.png", "size_distribution.png"]


def test_project_measuring_can_be_cancelled(qtbot, mwin, monkeypatch):
    import gui.panels.measurements as mod
    panel = mwin.measurements_panel
    panel.scope.setCurrentIndex(1)

    def cancelled(parent, title, fn, *args, **kw):
        from engine.jobs import CancelToken
        tok = CancelToken()
        tok.cancel()
        return fn(*args, progress=None, cancel=tok, **kw)
    monkeypatch.setattr(mod, "run_with_progress", cancelled)
    panel.measure_project()
    assert panel.table_data is None  # nothing shown, no error box


def test_scale_applies_and_bad_scale_is_refused(qtbot, mwin, monkeypatch):
    panel = mwin.measurements_panel
    _wait_rows(qtbot, panel, 4)
    warnings = []
    monkeypatch.setattr(QtWidgets.QMessageBox, "warning", lambda *a, **k: warnings.append(a[2]))
    before = mwin.controller.project.manifest_path.read_bytes()
    assert not panel.apply_scale("-1um", None, this_source=True)
    assert warnings and "positive" in warnings[0]
    assert mwin.controller.project.manifest_path.read_bytes() == before
    assert panel.apply_scale("0.5um", None, this_source=True)
    qtbot.waitUntil(lambda: "area_um2" in (panel.table_data.columns if panel.table_data else []), timeout=5000)
    assert "um" in panel.note.text()
    row = next(r for r in panel.table_data.rows if r["instance"] == "D")
    assert row["area_um2"] == pytest.approx(16 * 0.25)
    assert Project.open(mwin.controller.project.root).settings["source_scales"]


def test_panel_grabs(qtbot, mwin, tmp_path):
    panel = mwin.measurements_panel
    _wait_rows(qtbot, panel, 4)
    panel.tabs.setCurrentIndex(1)
    path = tmp_path / "panel.png"
    assert panel.grab().save(str(path)) and path.stat().st_size > 1000
