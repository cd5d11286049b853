"""Stacks in the GUI: the grouped image list, wheel/right-drag on the canvas, 3-D objects."""
from __future__ import annotations

import numpy as np
import pytest
from PyQt5 import QtCore

from guihelpers import key, open_window

pytestmark = pytest.mark.gui
Qt = QtCore.Qt


def _stack_ids(project):
    return [it.id for it in project.items if it.source == 2]


# ---------------------------------------------------------------- image list

def test_image_list_groups_slices_under_their_stack(qtbot, stack_project):
    win = open_window(qtbot, stack_project.root)
    panel, model = win.images_panel, win.images_panel.model
    stack_ids = _stack_ids(stack_project)
    assert model.rowCount() == 3                     # two images and one stack
    stack = model.index(2, 0)
    assert model.rowCount(stack) == 4
    assert model.data(stack) == "scan  (4 slices)"
    assert [model.item_id(model.index(k, 0, stack)) for k in range(4)] == stack_ids
    assert model.parent(model.index(3, 0, stack)) == stack
    assert model.data(model.index(1, 2)) == 0        # plain rows keep their columns
    # collapsed by default; N still walks every slice
    assert not panel.tree.isExpanded(panel.proxy.mapFromSource(stack))
    assert panel.visible_item_ids() == [it.id for it in stack_project.items]
    # names: elided in the middle, full name in the tooltip
    assert panel.tree.textElideMode() == Qt.ElideMiddle
    first = model.index(0, 0, stack)
    assert "scan [0]" in model.data(first, Qt.ToolTipRole)
    # a click on the collapsed stack opens a slice and highlights the stack row
    panel._on_clicked(panel.proxy.mapFromSource(stack))
    assert win.controller.item_id == stack_ids[0]
    rows = panel.tree.selectionModel().selectedRows()
    assert [model.node(panel.proxy.mapToSource(r)).name for r in rows] == ["scan"]
    # expanded: the slice's own row follows the current item
    panel.tree.expand(panel.proxy.mapFromSource(stack))
    key(qtbot, win, Qt.Key_PageDown)
    rows = panel.tree.selectionModel().selectedRows()
    assert [model.item_id(panel.proxy.mapToSource(r)) for r in rows] == [stack_ids[1]]
    assert model.data(model.index(1, 0, stack), Qt.FontRole).bold()
    win.controller.close_project(force=True)


def test_image_list_status_filter_reaches_slices(qtbot, stack_project):
    win = open_window(qtbot, stack_project.root)
    ctl, panel, model = win.controller, win.images_panel, win.images_panel.model
    stack_ids = _stack_ids(stack_project)
    assert ctl.set_current_item(stack_ids[2])
    ctl.set_status("reviewed")
    assert ctl.save()
    stack = model.index(2, 0)
    assert model.data(stack.siblingAtColumn(1)) == "1/4 ✓"
    assert model.data(stack.siblingAtColumn(1), Qt.ToolTipRole) == "4 slices: 1 reviewed, 3 new"
    panel.status_box.setCurrentText("reviewed")
    # the reviewed first image and one slice (its stack row shows because of it)
    assert panel.visible_item_ids() == [stack_project.items[0].id, stack_ids[2]]
    assert panel.proxy.rowCount() == 2
    panel.status_box.setCurrentText("new")
    assert panel.visible_item_ids() == [stack_project.items[1].id] + [stack_ids[k] for k in (0, 1, 3)]
    # a name that matches the stack shows all of its slices; selecting the stack selects them
    panel.status_box.setCurrentText("all")
    panel.search.setText("scan")
    assert panel.visible_item_ids() == stack_ids
    pstack = panel.proxy.index(0, 0)
    panel.tree.selectionModel().select(pstack, QtCore.QItemSelectionModel.Select | QtCore.QItemSelectionModel.Rows)
    assert panel.selected_item_ids() == stack_ids
    panel.search.setText("[3]")
    assert panel.visible_item_ids() == [stack_ids[3]]
    win.controller.close_project(force=True)


class _Ctl(QtCore.QObject):
    """The controller's list-facing API over many items (no images needed)."""
    projectOpened = QtCore.pyqtSignal(object)
    projectClosed = QtCore.pyqtSignal()
    itemsChanged = QtCore.pyqtSignal()
    statusChanged = QtCore.pyqtSignal(str, str)
    countChanged = QtCore.pyqtSignal(str, int)
    currentItemChanged = QtCore.pyqtSignal(str)

    def __init__(self, items, sources):
        super().__init__()
        self.items, self.item_id = items, None

        class P:
            pass
        self.project = P()
        self.project.sources = sources
        by_id = {it.id: it for it in items}
        self.project.item = by_id.__getitem__

    def status_of(self, item_id):
        return "reviewed" if item_id.endswith("7") else "new"

    def count_of(self, item_id):
        return 1


def test_image_list_model_holds_100k_items_without_widgets(qtbot):
    from types import SimpleNamespace
    from engine.project import Item
    from gui.panels.images import ImagesPanel
    n_plain, n_stacks, depth = 40_000, 200, 300
    items = [Item(f"img{k}", k, 0, f"img{k}.png", 8, 8) for k in range(n_plain)]
    sources = [SimpleNamespace(name=f"img{k}.png") for k in range(n_plain)]
    for s in range(n_stacks):
        sources.append(SimpleNamespace(name=f"stack{s}.tif"))
        items += [Item(f"st{s}_z{z}", n_plain + s, z, f"stack{s}.tif [{z}]", 8, 8) for z in range(depth)]
    ctl = _Ctl(items, sources)
    panel = ImagesPanel(ctl)
    qtbot.addWidget(panel)
    ctl.projectOpened.emit(None)
    assert len(items) == 100_000
    assert panel.model.rowCount() == n_plain + n_stacks
    assert panel.model.rowCount(panel.model.index(n_plain + 5, 0)) == depth
    assert panel.visible_item_ids() == [it.id for it in items]
    panel.status_box.setCurrentText("reviewed")
    assert panel.visible_item_ids() == [it.id for it in items if it.id.endswith("7")]
    # a status change repaints one row and its stack's summary only
    seen = []
    panel.model.dataChanged.connect(lambda a, b, *_: seen.append((panel.model.node(a), a.column())))
    ctl.statusChanged.emit("st3_z10", "reviewed")
    assert [n if isinstance(n, str) else n.name for n, _c in seen] == ["st3_z10", "stack3.tif"]


# ---------------------------------------------------------------- canvas input and 3-D objects

def open_stack_window(qtbot, root):
    """The main window with the stack tools (as users get it), on the stack's first slice."""
    from PyQt5 import QtWidgets
    from gui.main_window import MainWindow
    win = MainWindow(loop=False)
    qtbot.addWidget(win)
    win.resize(1200, 800)
    win.show()
    qtbot.waitExposed(win)
    assert win.open_project(root)
    win.canvas.set_zoom(2.0)
    win.canvas.centerOn(80, 64)
    QtWidgets.QApplication.processEvents()
    return win


def wheel(win, dy, mods=Qt.NoModifier):
    from PyQt5 import QtGui, QtWidgets
    view = win.canvas.viewport()
    pos = QtCore.QPointF(view.width() / 2, view.height() / 2)
    ev = QtGui.QWheelEvent(pos, QtCore.QPointF(view.mapToGlobal(pos.toPoint())), QtCore.QPoint(0, 0),
                           QtCore.QPoint(0, dy), Qt.NoButton, mods, Qt.NoScrollPhase, False)
    QtWidgets.QApplication.sendEvent(view, ev)


def right_drag(win, start, end):
    from PyQt5 import QtGui, QtWidgets
    view = win.canvas.viewport()
    for kind, p, button, buttons in ((QtCore.QEvent.MouseButtonPress, start, Qt.RightButton, Qt.RightButton),
                                     (QtCore.QEvent.MouseMove, end, Qt.NoButton, Qt.RightButton),
                                     (QtCore.QEvent.MouseButtonRelease, end, Qt.RightButton, Qt.NoButton)):
        pos = QtCore.QPointF(*p)
        QtWidgets.QApplication.sendEvent(view, QtGui.QMouseEvent(kind, pos, view.mapToGlobal(pos.toPoint()),
                                                                 button, buttons, Qt.NoModifier))


def test_wheel_scrolls_slices_ctrl_wheel_zooms_right_drag_sets_window(qtbot, stack_project):
    win = open_stack_window(qtbot, stack_project.root)
    ctl = win.controller
    ids = _stack_ids(stack_project)
    # a plain image: the wheel zooms as before
    z0 = win.canvas.zoom
    wheel(win, 120)
    assert win.canvas.zoom > z0 and ctl.item_id == stack_project.items[0].id
    # on a stack the wheel moves through the slices (down = next), clamped at the ends
    assert ctl.set_current_item(ids[0])
    z0 = win.canvas.zoom
    wheel(win, -120)
    assert ctl.item_id == ids[1]
    wheel(win, -240)
    assert ctl.item_id == ids[3]
    wheel(win, -120)
    assert ctl.item_id == ids[3]
    wheel(win, 60)   # half a notch (a touchpad) does nothing yet ...
    assert ctl.item_id == ids[3]
    wheel(win, 60)   # ... two halves make one
    assert ctl.item_id == ids[2]
    assert win.canvas.zoom == z0
    wheel(win, 120, Qt.ControlModifier)
    assert ctl.item_id == ids[2] and win.canvas.zoom > z0
    # right-drag: right = wider, down = higher level; the data is untouched
    raw = ctl.image.copy()
    c0, w0 = ctl.window
    right_drag(win, (300, 300), (450, 300))
    qtbot.waitUntil(lambda: ctl.window != (c0, w0))
    c1, w1 = ctl.window
    assert c1 == pytest.approx(c0) and w1 == pytest.approx(2 * w0)
    right_drag(win, (300, 300), (300, 300 + 128))
    qtbot.waitUntil(lambda: ctl.window[0] != c1)
    assert ctl.window == (pytest.approx(c1 + w1 / 2), pytest.approx(w1))
    assert (ctl.image == raw).all()
    # the help says so
    from gui.dialogs.shortcuts import shortcut_rows
    rows = {r[1]: r[2] for r in shortcut_rows(win)}
    assert "slice" in rows["Mouse wheel"] and "Window / level" in rows["Right-drag"]
    assert rows["Ctrl+]"] == "Copy to next slice" and rows["Ctrl+["] == "Copy to previous slice"
    win.controller.close_project(force=True)


def _with_objects(project):
    """Object 'rock' on slices 0-2 (a square that shifts right by 4 px per slice), and a
    loose instance on slice 3."""
    from engine.annotations import ItemAnnotation
    from guihelpers import square
    ids = _stack_ids(project)
    for k in range(3):
        project.save_annotation(ItemAnnotation(ids[k], 128, 160, [
            square(40 + 4 * k, 40, 70 + 4 * k, 70, id=f"r{k}", object_id="rock")], "new"))
    project.save_annotation(ItemAnnotation(ids[3], 128, 160, [square(10, 90, 30, 110, id="loose")], "new"))
    return ids


def test_object_extent_and_neighbour_outlines(qtbot, stack_project):
    ids = _with_objects(stack_project)
    win = open_stack_window(qtbot, stack_project.root)
    ctl, tools = win.controller, win.stack_tools
    assert ctl.set_current_item(ids[1])
    ctl.set_selection(["r1"])
    qtbot.waitUntil(lambda: "slices 1–3" in tools.object_label.text())
    assert tools.object_label.text() == "object rock · slices 1–3 (3)"
    # faint outlines of the same object on the previous (dashed) and next (dotted) slice
    qtbot.waitUntil(lambda: tools.outlines.is_shown(-1) and tools.outlines.is_shown(+1))
    prev = tools.outlines.items[-1].path().boundingRect()
    nxt = tools.outlines.items[+1].path().boundingRect()
    assert (round(prev.left()), round(prev.right())) == (40, 70)
    assert (round(nxt.left()), round(nxt.right())) == (48, 78)
    assert tools.outlines.items[-1].pen().style() == Qt.DashLine
    # nothing selected, or the option off: no outlines
    ctl.set_selection([])
    assert not tools.outlines.is_shown(-1) and tools.object_label.text() == ""
    ctl.set_selection(["r1"])
    win.actions["neighbour outlines"].setChecked(False)
    assert not tools.outlines.is_shown(-1)
    win.actions["neighbour outlines"].setChecked(True)
    # an instance of no object says so; the extent follows edits made here
    assert ctl.set_current_item(ids[3])
    ctl.set_selection(["loose"])
    assert tools.object_label.text() == "no 3-D object"
    assert ctl.set_current_item(ids[2])
    ctl.set_selection(["r2"])
    assert win.actions["delete"].isEnabled()
    ctl.delete_selected()
    assert ctl.set_current_item(ids[0])
    ctl.set_selection(["r0"])
    assert tools.object_label.text() == "object rock · slices 1–2 (2)"
    win.controller.close_project(force=True)


def test_copy_to_next_and_previous_slice(qtbot, stack_project):
    from engine.project import Project
    ids = _with_objects(stack_project)
    win = open_stack_window(qtbot, stack_project.root)
    ctl = win.controller
    # the loose instance on the last slice: copied back; it becomes an object first
    assert ctl.set_current_item(ids[3])
    ctl.set_selection(["loose"])
    qtbot.keyClick(win.canvas, Qt.Key_BracketLeft, Qt.ControlModifier)
    assert ctl.item_id == ids[2]
    src = Project.open(stack_project.root).load_annotation(ids[3]).find("loose")
    assert src.object_id  # saved when the slice was left
    copy = ctl.selected_instances()
    assert len(copy) == 1 and copy[0].object_id == src.object_id and copy[0].id != "loose"
    assert (copy[0].x0, copy[0].y0, copy[0].label, copy[0].source) == (10, 90, "cell", "manual")
    assert (copy[0].mask == src.mask).all()
    assert len(ctl.annotation.instances) == 2
    # one undo step on this slice removes the copy, redo brings it back
    ctl.undo_stack.undo()
    assert len(ctl.annotation.instances) == 1
    ctl.undo_stack.redo()
    assert len(ctl.annotation.instances) == 2
    # an object already on the target slice is selected there, not copied twice
    ctl.set_selection(["r2"])
    assert not win.stack_tools.copy_to_slice(-1)
    assert ctl.item_id == ids[1] and ctl.selection == ["r1"] and len(ctl.annotation.instances) == 1
    # copying forward; at the end of the stack there is no next slice
    ctl.set_selection(["r1"])
    assert ctl.set_current_item(ids[3])
    ctl.set_selection(["loose"])
    assert not win.stack_tools.copy_to_slice(+1) and ctl.item_id == ids[3]
    assert ctl.save()
    win.controller.close_project(force=True)


def test_orthogonal_views_show_planes_with_masks_at_slice_spacing(qtbot, stack_project):
    import dataclasses
    from engine.geometry import VoxelGeometry
    from engine.project import Project
    ids = _with_objects(stack_project)
    proj = Project.open(stack_project.root)
    proj.sources[2] = dataclasses.replace(proj.sources[2], geometry=VoxelGeometry(spacing=(5.0, 0.5, 0.5)))
    proj.save()
    win = open_stack_window(qtbot, stack_project.root)
    ctl = win.controller
    panel = win.stack_tools.ortho
    assert ctl.set_current_item(ids[1])
    win.docks["orthogonal"].show()
    qtbot.waitUntil(lambda: panel.volume.n == 4 and panel.volume.done == 4)
    panel.set_position(50, 60)
    qtbot.waitUntil(lambda: panel.xz.caption == "XZ  (y = 60)")
    # the raw XZ plane at y=60: slice k is -1000+100k outside the bright square, 400 inside
    plane = panel.volume.plane("xz", 60)
    assert plane.shape == (4, 160)
    assert plane[2, 10] == -800 and plane[2, 50] == 400
    # masks: the rock on slices 0-2 (shifted by 4 px per slice), none on slice 3 at y=60
    m = panel.volume.mask_plane("xz", 60, lambda inst: 0)
    assert [int(np.flatnonzero(m[k]).min()) if m[k].any() else -1 for k in range(4)] == [40, 44, 48, -1]
    # physical proportions: 160 px * 0.5 mm wide, 4 slices * 5 mm tall
    assert panel.xz._phys == (80.0, 20.0)
    t = panel.xz.target_rect()
    assert t.width() / t.height() == pytest.approx(4.0, rel=0.02)
    assert "spacing z 5" in panel.info.text()
    # the current slice's edits show at once
    ctl.set_selection(["r1"])
    ctl.delete_selected()
    qtbot.waitUntil(lambda: not panel.volume.mask_plane("xz", 60, lambda i: 0)[1].any())
    # a click on a plane opens that slice
    t = panel.yz.target_rect()
    qtbot.mouseClick(panel.yz, Qt.LeftButton, pos=QtCore.QPoint(int(t.center().x()), int(t.bottom() - 2)))
    assert ctl.item_id == ids[3]
    assert not panel.bar.isVisible()
    # a plain image: nothing to show, and the hidden dock lets the stack go
    assert ctl.set_current_item(stack_project.items[0].id)
    panel.render()
    assert panel.info.text() == "Orthogonal views show stacks and series." and panel.xz._image is None
    win.docks["orthogonal"].hide()
    assert panel.volume.n == 0 and panel.volume.volume is None
    win.controller.close_project(force=True)


def test_orthogonal_views_refuse_a_stack_too_large_to_cache(qtbot, stack_project, monkeypatch):
    import gui.stack_volume
    monkeypatch.setattr(gui.stack_volume, "MAX_BYTES", 1000)
    win = open_stack_window(qtbot, stack_project.root)
    panel = win.stack_tools.ortho
    assert win.controller.set_current_item(_stack_ids(stack_project)[0])
    win.docks["orthogonal"].show()
    qtbot.waitUntil(lambda: "too large" in panel.info.text())
    assert panel.volume.volume is None
    win.controller.close_project(force=True)


def test_colour_by_object_keeps_an_object_one_colour_through_the_slices(qtbot, stack_project):
    from gui.canvas.overlay import instance_color_index
    from guihelpers import square
    a, b = square(0, 0, 5, 5, object_id="rock-7"), square(9, 9, 20, 20, object_id="rock-7")
    assert a.id != b.id and instance_color_index(a) == instance_color_index(b)
    # the same in another process (no per-run hash()); hex ids keep their old colours
    import zlib
    assert instance_color_index(a) == zlib.crc32(b"rock-7") % 63
    c = square(0, 0, 5, 5, id="00000005")
    assert instance_color_index(c) == 5
    ids = _with_objects(stack_project)
    win = open_stack_window(qtbot, stack_project.root)
    assert win.actions["colour by instance"].text() == "&Colour by object / instance"
    ctl = win.controller
    colours = []
    for k in range(3):
        assert ctl.set_current_item(ids[k])
        win.canvas.set_color_by("instance")
        colours.append(int(win.canvas.overlay.buf[55, 60 + 4 * k]))
    assert colours[0] != 0 and len(set(colours)) == 1
    win.controller.close_project(force=True)


def test_link_objects_in_this_stack_and_unlink_the_selection(qtbot, stack_project):
    from engine.annotations import ItemAnnotation
    from engine.project import Project
    from guihelpers import square
    ids = _stack_ids(stack_project)
    for k in range(4):  # one body through the slices, drawn without objects; a speck on slice 3
        insts = [square(40 + 2 * k, 40, 70 + 2 * k, 70, id=f"s{k}")]
        if k == 3:
            insts.append(square(120, 100, 130, 110, id="speck"))
        stack_project.save_annotation(ItemAnnotation(ids[k], 128, 160, insts, "new"))
    win = open_stack_window(qtbot, stack_project.root)
    ctl, tools = win.controller, win.stack_tools
    assert ctl.set_current_item(ids[1])
    ctl.set_selection(["s1"])
    assert tools.object_label.text() == "no 3-D object"
    assert win.actions["link objects"].isEnabled() and not win.actions["unlink object"].isEnabled()
    win.actions["link objects"].trigger()
    on_disk = [Project.open(stack_project.root).load_annotation(i) for i in ids]
    body = {a.find(f"s{k}").object_id for k, a in enumerate(on_disk)}
    assert len(body) == 1 and None not in body
    assert on_disk[3].find("speck").object_id not in body | {None}
    # the slice shown was reloaded with its object; the extent covers the stack
    ctl.set_selection(["s1"])
    qtbot.waitUntil(lambda: "slices 1–4 (4)" in tools.object_label.text())
    # unlink the selection: one undo step on this slice
    (oid,) = body
    assert win.actions["unlink object"].isEnabled()
    win.actions["unlink object"].trigger()
    assert ctl.annotation.find("s1").object_id not in (oid, None)
    assert tools.object_label.text().endswith("slices 2–2 (1)")
    ctl.undo_stack.undo()
    assert ctl.annotation.find("s1").object_id == oid
    win.controller.close_project(force=True)
