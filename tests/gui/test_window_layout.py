"""The window as a newcomer meets it: toolbars at 1280 px, the empty canvas, the welcome
dialog, the status bar, brush and wand behaviour, the training plot, the Models panel,
paths in dialogs, and a failed "Open images"."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PyQt5 import QtCore, QtGui, QtWidgets
from PyQt5.QtCore import Qt

from guihelpers import drag, key

pytestmark = pytest.mark.gui


@pytest.fixture
def full_window(qtbot, project, monkeypatch):
    """The whole window (with the loop) at 1280 × 720, the test project open."""
    monkeypatch.setenv("MASKLOOP_NO_FIRST_RUN", "1")
    from gui.main_window import MainWindow
    win = MainWindow()
    qtbot.addWidget(win)
    win.resize(1280, 720)
    win.show()
    qtbot.waitExposed(win)
    assert win.open_project(project.root)
    QtWidgets.QApplication.processEvents()
    yield win
    win.loop.shutdown()
    win.controller.close_project(force=True)


def test_toolbars_fit_1280_px_with_the_loop_buttons_visible(full_window):
    win = full_window
    assert win.width() <= 1280
    for name in ("train", "accept item", "next unreviewed", "segment current", "tool brush"):
        act = win.actions[name]
        tb = next(t for t in win.toolbars.values() if act in t.actions())
        button = tb.widgetForAction(act)
        # an action that does not fit goes behind the toolbar's » menu: its button is hidden
        assert button is not None and button.isVisible(), name
        assert tb.rect().contains(button.geometry()), name
        assert not act.icon().isNull(), name
        assert act.toolTip(), name
    assert win.toolbars["model"].widgetForAction(win.actions["train"]).toolButtonStyle() == \
        Qt.ToolButtonTextBesideIcon
    # every tool and toolbar action has an icon
    for tb in win.toolbars.values():
        for act in tb.actions():
            if not act.isSeparator() and tb.widgetForAction(act).inherits("QToolButton"):
                assert not act.icon().isNull(), act.text()


def test_instance_list_shows_more_than_two_rows_at_1280x720(full_window):
    table = full_window.instances_panel.table
    assert full_window.controller.annotation is not None
    rows = table.viewport().height() / max(1, table.verticalHeader().defaultSectionSize())
    assert rows > 2.5, rows


def test_empty_canvas_says_what_to_do(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("MASKLOOP_NO_FIRST_RUN", "1")
    from gui.main_window import MainWindow
    win = MainWindow()
    qtbot.addWidget(win)
    win.show()
    cw = win.canvas_widget
    assert cw.pages.currentWidget() is cw.hint
    assert "No project is open" in cw.hint.text.text()
    shown = [b.defaultAction() for b in cw.hint._shown]
    assert shown == [win.actions["open project"], win.actions["open images"], win.actions["open demo"]]
    # an empty project: add images
    from engine.project import Project
    empty = Project.create(tmp_path / "empty")
    assert win.open_project(empty.root)
    assert cw.pages.currentWidget() is cw.hint and "no images yet" in cw.hint.text.text()
    assert [b.defaultAction() for b in cw.hint._shown] == [win.actions["add images"]]
    win.loop.shutdown()


def test_welcome_dialog_lists_recent_projects(full_window, project, qtbot):
    win = full_window
    assert str(project.root) in win.recent_projects()
    dlg = win.loop.show_first_run()
    qtbot.addWidget(dlg)
    items = [dlg.recent_list.item(k).text() for k in range(dlg.recent_list.count())]
    assert items[0] == str(project.root)
    dlg.close()


def test_status_bar_fields_and_pixel_readout_cleared_on_item_change(full_window):
    win, c = full_window, full_window.controller
    win.canvas.cursorMoved.emit(65, 65)
    assert win.value_label.text() and win.pos_label.text()
    other = next(it.id for it in c.items if it.id != c.item_id)
    assert c.set_current_item(other)
    assert win.value_label.text() == "" and win.pos_label.text() == ""
    win.canvas.cursorMoved.emit(5, 5)
    assert win.value_label.text()
    c.close_project()
    assert win.value_label.text() == "" and win.item_label.text() == ""
    # messages have a field of their own: a status tip does not paint over the other fields
    win.show_message("hello")
    QtWidgets.QApplication.sendEvent(win, QtGui.QStatusTipEvent("a tip"))
    assert win.status.message() == "a tip" and win.statusBar().currentMessage() == ""
    fields = [w for w in win.status.findChildren(QtWidgets.QLabel) if w.property("field")]
    assert len(fields) >= 5


def test_a_stroke_away_from_the_selection_starts_a_new_instance(window, qtbot):
    ctl = window.controller
    ctl.set_selection(["D"])                   # the 4x4 square at 200,30
    key(qtbot, window, Qt.Key_B)
    window.canvas.brush_size = 5
    n = len(ctl.annotation.instances)
    drag(window, [(100, 200), (120, 200)])     # far from D
    assert len(ctl.annotation.instances) == n + 1
    new = ctl.annotation.instances[-1]
    area = int(new.mask.sum())
    assert ctl.selection == [new.id] and ctl.annotation.find("D").mask.sum() == 16
    drag(window, [(122, 200), (130, 200)])     # touches the new one: it grows
    assert len(ctl.annotation.instances) == n + 1 and ctl.annotation.find(new.id).mask.sum() > area
    ctl.set_selection(["D"])
    window.canvas.setFocus()
    from guihelpers import move, press, release
    press(window, 100, 240, mods=Qt.ShiftModifier)   # Shift: extend D wherever the stroke is
    move(window, 110, 240)
    release(window, 110, 240, mods=Qt.ShiftModifier)
    assert len(ctl.annotation.instances) == n + 1 and ctl.annotation.find("D").mask.sum() > 16


def test_magic_wand_tolerance_is_a_share_of_the_displayed_range(window, qtbot):
    ctl = window.controller
    assert window.tolerance_box.suffix().strip() == "%"
    ctl.set_window(20000.0, 20000.0)
    assert ctl.wand_tolerance(0.1) == pytest.approx(2000.0)


def test_single_epoch_training_plot_is_more_than_a_dot(qtbot):
    from gui.dialogs.training_view import AP_COLOR, CurvePlot
    plot = CurvePlot()
    qtbot.addWidget(plot)
    plot.resize(500, 260)
    plot.epochs_total = 1
    for i in range(1, 5):
        plot.add_loss(i / 4, 1.0 / i)
    plot.add_metrics(1.0, {"mask_AP": 0.4})
    img = plot.grab().toImage()
    target = AP_COLOR.rgb() & 0xFFFFFF
    cols = {x for x in range(img.width()) for y in range(30, img.height() - 40)
            if abs((img.pixel(x, y) & 0xFF) - (target & 0xFF)) < 40
            and abs(((img.pixel(x, y) >> 8) & 0xFF) - ((target >> 8) & 0xFF)) < 40
            and abs(((img.pixel(x, y) >> 16) & 0xFF) - ((target >> 16) & 0xFF)) < 40}
    assert len(cols) > 0.4 * img.width()    # a level across the plot, not one dot


def test_models_panel_columns_fit_a_side_panel(qtbot, tmp_path):
    from engine.project import Project
    from gui.panels.models_panel import ModelsPanel
    proj = Project.create(tmp_path / "p", ["cell"])
    run = "run-20260101-120000-a-rather-long-name"
    folder = proj.models_dir / run
    folder.mkdir(parents=True)
    (folder / "model.pt").write_bytes(b"x")
    (folder / "config.json").write_text(json.dumps({"schema": 1, "run": run, "arch": "r50fpn", "base": "coco"}))
    (folder / "metrics.json").write_text(json.dumps({"schema": 1, "status": "done", "train_items": 12,
                                                     "val_items": 3, "best": {"mask_AP": 0.41}}))
    panel = ModelsPanel()
    qtbot.addWidget(panel)
    panel.resize(330, 240)
    panel.show()
    panel.set_project(proj)
    QtWidgets.QApplication.processEvents()
    t = panel.table
    assert t.horizontalHeader().length() <= t.viewport().width() + 1
    assert "r50fpn" in t.item(0, 1).toolTip() and t.item(0, 5).text() == "12+3"


def test_export_dialog_elides_long_paths_in_the_middle(qtbot, tmp_path):
    from gui.dialogs.path_edit import PathEdit
    path = "/very/long/" + "/".join(f"folder{k}" for k in range(30)) + "/export/coco.json"
    edit = PathEdit(path)
    qtbot.addWidget(edit)
    edit.resize(260, 28)
    edit.show()
    shown = edit.displayed_text()
    assert "…" in shown and shown.startswith("/very") and shown.endswith("coco.json")
    assert edit.text() == path and edit.toolTip() == path


def test_a_failed_open_images_leaves_no_project_behind(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("MASKLOOP_NO_FIRST_RUN", "1")
    from gui.main_window import MainWindow
    win = MainWindow(loop=False)
    qtbot.addWidget(win)
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"II*\x00 not a tiff at all")
    notes = []
    win.notify = lambda msg, error=False: notes.append(msg)
    root = tmp_path / "broken_maskloop"
    assert not win.make_project(root, [bad])
    assert notes and not root.exists() and win.controller.project is None
    # an existing folder stays, and keeps what it held
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "notes.txt").write_text("x")
    assert not win.make_project(keep, [bad])
    assert sorted(p.name for p in keep.iterdir()) == ["notes.txt"]


def test_colours_come_from_the_theme(window):
    from gui import theme
    ctl = window.controller
    n = len(ctl.labels)
    name = ctl.add_label("vesicle")
    assert ctl.label_color(name) == theme.label_color(n)
    assert theme.color("status.reviewed").isValid() and theme.color("plot.loss_raw").alpha() < 255
    assert window.canvas.backgroundBrush().color() == theme.color("canvas.background")


def test_shortcuts_help_is_generated_from_the_keymap(window):
    from gui import theme
    from gui.dialogs.shortcuts import shortcut_rows
    rows = shortcut_rows(window)
    does = {r[2] for r in rows}
    for name, keys in theme.keymap()["actions"].items():
        act = window.actions.get(name)
        if act is not None:
            assert act.text().replace("&", "").replace("…", "") in does, name
            assert [k.toString() for k in act.shortcuts()] == \
                [QtGui.QKeySequence(k).toString() for k in keys], name
    assert ("Brush", "Shift+drag", "Paint onto the selected instance wherever the stroke is") in rows


def test_background_delivers_on_the_gui_thread_and_stops_cleanly(qtbot):
    import threading
    from gui.background import Background
    bg = Background("test")
    seen = []
    bg.submit(lambda: threading.current_thread().name, on_done=lambda name: seen.append(
        (name, threading.current_thread() is threading.main_thread())))
    qtbot.waitUntil(lambda: bool(seen), timeout=5000)
    assert seen[0][0].startswith("maskloop-test") and seen[0][1]
    errors = []
    bg.submit(lambda: 1 / 0, on_error=errors.append)
    qtbot.waitUntil(lambda: bool(errors), timeout=5000)
    assert isinstance(errors[0], ZeroDivisionError)
    bg.shutdown(wait=True)
    late = bg.submit(lambda: 1, on_done=seen.append)
    assert late.cancelled() and len(seen) == 1


def test_a_click_never_picks_an_instance_the_filter_hides(window, qtbot):
    from guihelpers import click
    ctl = window.controller
    key(qtbot, window, Qt.Key_V)
    click(window, 150, 150)                      # disk C
    assert ctl.selection == ["C"]
    window.canvas.set_instance_filter(lambda inst: inst.id != "C")   # e.g. the score slider
    ctl.set_selection([])
    click(window, 150, 150)
    assert ctl.selection == []
    window.canvas.set_instance_filter(None)
    click(window, 150, 150)
    assert ctl.selection == ["C"]
