"""The window around the canvas: panels, stacks, window/level, labels, status bar, menus."""
from __future__ import annotations

import numpy as np
import pytest
from PyQt5 import QtCore

from engine.imageio import WINDOW_PRESETS
from engine.project import Project
from guihelpers import click, drag, key, move, open_window

pytestmark = pytest.mark.gui
Qt = QtCore.Qt


def test_stack_slices_window_level_and_status_bar(qtbot, stack_project):
    win = open_window(qtbot, stack_project.root)
    ctl = win.controller
    stack_ids = [it.id for it in stack_project.items if it.source == 2]
    assert ctl.set_current_item(stack_ids[0])
    assert win.canvas_widget.slices.isVisible()
    key(qtbot, win, Qt.Key_PageDown)
    assert ctl.item_id == stack_ids[1]
    assert win.canvas_widget.slices.label.text() == "2 / 4"
    key(qtbot, win, Qt.Key_PageUp)
    assert ctl.item_id == stack_ids[0]
    win.canvas_widget.slices.slider.setValue(3)
    assert ctl.item_id == stack_ids[3]
    # presets and auto change only the display
    raw = ctl.image.copy()
    qtbot.mouseClick(win.window_panel.buttons["bone"], Qt.LeftButton)
    assert ctl.window == WINDOW_PRESETS["bone"]
    bone = ctl.display_image().copy()
    qtbot.mouseClick(win.window_panel.buttons["lung"], Qt.LeftButton)
    assert not np.array_equal(bone, ctl.display_image())
    assert np.array_equal(raw, ctl.image)
    # the window is kept while moving through the slices
    key(qtbot, win, Qt.Key_PageUp)
    assert ctl.window == WINDOW_PRESETS["lung"]
    # status bar: position and raw value (the stack is int16, values -1000 + 100k, 400 inside)
    win.canvas.set_zoom(2.0)
    win.canvas.centerOn(80, 64)
    move(win, 50, 50, held=False)
    assert win.pos_label.text() == "x 50  y 50"
    assert win.value_label.text().startswith("value 400")
    move(win, 5, 5, held=False)
    assert win.value_label.text().startswith("value -800")
    assert win.zoom_label.text() == "200%"
    win.controller.close_project(force=True)


def test_images_panel_filter_and_next_item(window, qtbot):
    panel = window.images_panel
    assert panel.proxy.rowCount() == 2
    panel.status_box.setCurrentText("reviewed")
    assert panel.visible_item_ids() == [window.controller.item_id]
    panel.status_box.setCurrentText("new")
    assert len(panel.visible_item_ids()) == 1
    key(qtbot, window, Qt.Key_N)  # N walks the filtered list
    assert window.controller.item_id == panel.visible_item_ids()[0]
    panel.status_box.setCurrentText("all")
    panel.search.setText("cell")
    assert panel.proxy.rowCount() == 1
    model = panel.model
    assert model.data(model.index(0, 2)) == 4  # instance count


def test_labels_number_keys_hide_rename(window, qtbot, project):
    ctl = window.controller
    key(qtbot, window, Qt.Key_2)
    assert ctl.current_label == "debris"
    key(qtbot, window, Qt.Key_B)
    window.canvas.brush_size = 5
    ctl.set_selection([])
    drag(window, [(100, 220), (120, 220)])
    new = ctl.annotation.instances[-1]
    assert new.label == "debris"
    # hiding a label hides its instances on the canvas and in picking
    buf = window.canvas.overlay.buf
    assert buf[150, 150] != 0
    item = window.labels_panel.list.item(1)
    item.setCheckState(Qt.Unchecked)
    assert buf[150, 150] == 0 and buf[220, 110] == 0
    assert ctl.instances_at(150, 150) == []
    item = window.labels_panel.list.item(1)
    item.setCheckState(Qt.Checked)
    assert buf[150, 150] != 0
    # rename: the label set, the open annotation and the files follow
    assert ctl.rename_label("debris", "dust")
    assert ctl.annotation.find("C").label == "dust"
    assert Project.open(project.root).load_annotation(ctl.item_id).find("C").label == "dust"
    assert "dust" in Project.open(project.root).labels
    # recolour: palette only
    ctl.recolor_label("dust", (1, 2, 3))
    assert Project.open(project.root).labels.get("dust").color == (1, 2, 3)


def test_instances_panel_follows_selection(window, qtbot):
    ctl = window.controller
    panel = window.instances_panel
    qtbot.waitUntil(lambda: panel.table.rowCount() == 4)
    key(qtbot, window, Qt.Key_V)
    click(window, 150, 150)
    rows = [i.row() for i in panel.table.selectionModel().selectedRows()]
    assert [panel._ids[r] for r in rows] == ["C"]
    # choosing a row selects on the canvas
    panel.table.selectRow(panel._ids.index("A"))
    assert ctl.selection == ["A"]
    area = panel.table.item(panel._ids.index("A"), 4).data(Qt.DisplayRole)
    assert area == 30 * 30


def test_shortcuts_dialog_recent_projects_and_layout(window, qtbot, project):
    window.actions["shortcuts"].trigger()
    dlg = window._shortcuts_dialog
    texts = {dlg.table.item(r, 1).text() for r in range(dlg.table.rowCount())}
    for keys in ("Ctrl+Z", "Ctrl+Shift+Z, Ctrl+Y", "Ctrl+S", "Del", "F", "B", "E", "P", "V",
                 "N", "Shift+N", "Tab / Shift+Tab"):
        assert keys in texts, keys
    dlg.close()
    assert str(project.root) in window.recent_projects()
    window.close()
    from gui.main_window import settings
    assert settings().value("window/state") is not None


def test_open_images_makes_a_project(qtbot, tmp_path):
    import tifffile
    from gui.main_window import MainWindow
    img = tmp_path / "scans" / "slice.tif"
    img.parent.mkdir()
    tifffile.imwrite(img, np.arange(64 * 64, dtype=np.uint16).reshape(64, 64))
    win = MainWindow(loop=False)
    qtbot.addWidget(win)
    win.show()
    root = tmp_path / "scans" / "slice_maskloop"
    assert win.make_project(root, [img])
    assert win.controller.project.root == root.resolve()
    assert win.controller.image.shape == (64, 64)
    assert (root / "maskloop.json").exists()
    win.controller.close_project(force=True)


def test_run_gui_entry_point_exists():
    from gui.app import run_gui
    assert callable(run_gui)


def test_next_slice_is_decoded_off_the_gui_thread(qtbot, stack_project, monkeypatch):
    """Stepping through a stack takes no decode time on the GUI thread: the neighbours of
    the current slice are read by the prefetch worker while the user works."""
    import threading
    win = open_window(qtbot, stack_project.root)
    ctl = win.controller
    stack_ids = [it.id for it in stack_project.items if it.source == 2]
    assert ctl.set_current_item(stack_ids[0])
    project = ctl.project
    gui_reads = []
    real = type(project).load_image

    def counting(self, item_id, **kw):
        if threading.current_thread() is threading.main_thread():
            gui_reads.append(item_id)
        return real(self, item_id, **kw)
    monkeypatch.setattr(type(project), "load_image", counting)
    assert ctl.set_current_item(stack_ids[1])   # prefetched before the patch
    ctl.nav.prefetch.future(stack_ids[2]).result(timeout=10)
    assert ctl.set_current_item(stack_ids[2])   # prefetched by the worker under the patch
    assert gui_reads == []
    assert np.array_equal(ctl.image, real(project, stack_ids[2]))
    assert ctl.image[0, 0] == -1000 + 100 * 2
    # a jump to an item that is not a neighbour still loads (synchronously) and works
    assert ctl.set_current_item(stack_project.items[0].id)
    assert gui_reads == [stack_project.items[0].id]
    ctl.close_project(force=True)


def test_a_jump_to_a_large_item_keeps_the_window_live(qtbot, stack_project, monkeypatch):
    """A large item that is not decoded yet opens off the GUI thread: the window says it is
    loading and stays on the current item meanwhile; a newer request, or a switch made by
    the program, wins over a pending one."""
    import threading
    import time
    win = open_window(qtbot, stack_project.root)
    ctl = win.controller
    monkeypatch.setattr(type(ctl.nav), "ASYNC_PIXELS", 1)  # the small test images count as large
    ids = [it.id for it in stack_project.items]  # cells, other, scan z0..z3
    first = ctl.item_id
    project = ctl.project
    real = type(project).load_image
    gui_reads = []

    def slow(self, item_id, **kw):
        if threading.current_thread() is threading.main_thread():
            gui_reads.append(item_id)
        time.sleep(0.3)  # a big 16-bit image
        return real(self, item_id, **kw)
    monkeypatch.setattr(type(project), "load_image", slow)
    loading = []
    ctl.itemLoading.connect(loading.append)
    assert ctl.request_item(ids[4])
    assert ctl.item_id == first and ctl.opening == ids[4] and loading == [ids[4]]
    assert win.item_label.text().startswith("loading ")
    qtbot.waitUntil(lambda: ctl.item_id == ids[4], timeout=10000)
    assert ctl.opening is None and not win.item_label.text().startswith("loading")
    assert np.array_equal(ctl.image, real(project, ids[4]))
    # a newer request replaces the pending one
    assert ctl.request_item(ids[0]) and ctl.request_item(ids[1])
    assert ctl.opening == ids[1]
    qtbot.waitUntil(lambda: ctl.item_id == ids[1], timeout=10000)
    qtbot.wait(500)  # the first request's decode has finished by now and is ignored
    assert ctl.item_id == ids[1] and gui_reads == []
    # a switch made by the program (e.g. "next unreviewed") wins over a pending request
    assert ctl.request_item(ids[5]) and ctl.opening == ids[5]
    assert ctl.set_current_item(ids[0])
    qtbot.wait(700)
    assert ctl.item_id == ids[0] and ctl.opening is None and loading[-1] == ""
    assert not win.item_label.text().startswith("loading")
    ctl.close_project(force=True)
