"""The canvas tools, driven with real mouse and key events; masks checked pixel by pixel."""
from __future__ import annotations

import numpy as np
import pytest
from PyQt5 import QtCore

from guihelpers import (click, double_click, drag, full, key, same,
                        snapshot)

pytestmark = pytest.mark.gui
Qt = QtCore.Qt


def stroke_mask(points, r, shape=(256, 256)):
    """What the brush paints: engine.masks.paint_disk at every pixel along the path."""
    from engine.masks import paint_disk
    from gui.canvas.tools.brush import path_points
    m = np.zeros(shape, bool)
    for (xa, ya), (xb, yb) in zip(points, points[1:] or points):
        for x, y in path_points(xa, ya, xb, yb):
            paint_disk(m, x, y, r)
    return m


def test_brush_stroke_makes_new_instance(window, qtbot):
    ctl = window.controller
    key(qtbot, window, Qt.Key_B)
    assert window.canvas.tool.name == "brush"
    window.canvas.brush_size = 5
    before = snapshot(ctl.annotation)
    pts = [(100, 200), (120, 200), (130, 210)]
    drag(window, pts)
    assert len(ctl.annotation.instances) == len(before) + 1
    new = ctl.annotation.instances[-1]
    assert new.label == "cell" and new.source == "manual"
    assert np.array_equal(full(new), stroke_mask(pts, 2))
    assert ctl.selection == [new.id]
    assert same(snapshot(ctl.annotation)[:-1], before)  # nothing else changed
    # the overlay shows it: pixels on the stroke are painted, pixels off it are not
    buf = window.canvas.overlay.buf
    assert buf[200, 110] != 0 and buf[190, 110] == 0
    # one stroke = one undo step
    assert ctl.undo_stack.count() == 1
    key(qtbot, window, Qt.Key_Z, Qt.ControlModifier)
    assert same(snapshot(ctl.annotation), before)
    assert buf[200, 110] == 0


def test_brush_paints_onto_selected_instance(window, qtbot):
    ctl = window.controller
    key(qtbot, window, Qt.Key_V)
    click(window, 155, 150)  # disk C
    assert ctl.selection == ["C"]
    key(qtbot, window, Qt.Key_B)
    window.canvas.brush_size = 7
    c_before = full(ctl.annotation.find("C"))
    pts = [(150, 150), (180, 150)]
    drag(window, pts)
    c_after = full(ctl.annotation.find("C"))
    assert len(ctl.annotation.instances) == 4
    assert np.array_equal(c_after, c_before | stroke_mask(pts, 3))


def test_eraser_from_all_and_deletes_emptied(window, qtbot):
    ctl = window.controller
    ctl.set_selection([])
    key(qtbot, window, Qt.Key_E)
    window.canvas.brush_size = 9
    a_before, b_before = full(ctl.annotation.find("A")), full(ctl.annotation.find("B"))
    pts = [(30, 45), (60, 45)]  # across A and B
    drag(window, pts)
    cut = stroke_mask(pts, 4)
    assert np.array_equal(full(ctl.annotation.find("A")), a_before & ~cut)
    assert np.array_equal(full(ctl.annotation.find("B")), b_before & ~cut)
    # erase the 4x4 instance D completely: it goes away
    drag(window, [(201, 31), (202, 32)])
    assert ctl.annotation.find("D") is None
    assert ctl.undo_stack.count() == 2


def test_eraser_only_touches_selection(window, qtbot):
    ctl = window.controller
    ctl.set_selection(["A"])
    key(qtbot, window, Qt.Key_E)
    window.canvas.brush_size = 9
    b_before = full(ctl.annotation.find("B"))
    drag(window, [(30, 45), (60, 45)])
    assert np.array_equal(full(ctl.annotation.find("B")), b_before)
    assert not full(ctl.annotation.find("A"))[45, 45]


def test_polygon_double_click_enter_and_escape(window, qtbot):
    ctl = window.controller
    ctl.set_selection([])
    key(qtbot, window, Qt.Key_P)
    n = len(ctl.annotation.instances)
    for x, y in [(100, 180), (140, 180), (140, 220)]:
        click(window, x, y)
    double_click(window, 100, 220)
    assert len(ctl.annotation.instances) == n + 1
    sq = full(ctl.annotation.instances[-1])
    expected = np.zeros((256, 256), bool)
    expected[180:221, 100:141] = True
    assert np.array_equal(sq, expected)
    # Esc cancels, Enter closes
    ctl.set_selection([])
    for x, y in [(10, 100), (30, 100), (30, 120)]:
        click(window, x, y)
    key(qtbot, window, Qt.Key_Escape)
    assert len(ctl.annotation.instances) == n + 1
    for x, y in [(10, 100), (30, 100), (30, 120)]:
        click(window, x, y)
    key(qtbot, window, Qt.Key_Return)
    assert len(ctl.annotation.instances) == n + 2
    tri = full(ctl.annotation.instances[-1])
    assert tri[101, 29] and not tri[119, 11]


def test_polygon_adds_to_selected(window, qtbot):
    ctl = window.controller
    ctl.set_selection(["D"])
    key(qtbot, window, Qt.Key_P)
    for x, y in [(210, 30), (220, 30), (220, 40)]:
        click(window, x, y)
    key(qtbot, window, Qt.Key_Enter)
    assert len(ctl.annotation.instances) == 4
    d = full(ctl.annotation.find("D"))
    assert d[31, 201] and d[31, 219]


def test_select_click_tab_cycles_and_shift_adds(window, qtbot):
    ctl = window.controller
    key(qtbot, window, Qt.Key_V)
    click(window, 45, 45)  # A and B overlap here; B is on top
    assert ctl.selection == ["B"]
    key(qtbot, window, Qt.Key_Tab)
    assert ctl.selection == ["A"]
    key(qtbot, window, Qt.Key_Tab)
    assert ctl.selection == ["B"]
    click(window, 150, 150, Qt.ShiftModifier)
    assert ctl.selection == ["B", "C"]
    click(window, 5, 5)  # background clears
    assert ctl.selection == []
    # the selected instance is drawn with its own palette entries
    click(window, 150, 150)
    buf = window.canvas.overlay.buf
    from gui.canvas.overlay import SEL_FILL, slot
    assert buf[150, 150] == slot(1) + SEL_FILL


def test_merge_split_delete_relabel_fill_holes(window, qtbot):
    ctl = window.controller
    key(qtbot, window, Qt.Key_V)
    union = full(ctl.annotation.find("A")) | full(ctl.annotation.find("B"))
    click(window, 25, 25)
    click(window, 65, 65, Qt.ShiftModifier)
    assert ctl.selection == ["A", "B"]
    key(qtbot, window, Qt.Key_M)
    assert ctl.annotation.find("A") is None and ctl.annotation.find("B") is None
    merged = ctl.annotation.find(ctl.selection[0])
    assert np.array_equal(full(merged), union)
    # split it along a vertical line at x = 45
    key(qtbot, window, Qt.Key_X)
    drag(window, [(45, 10), (45, 40), (45, 80)])
    assert len(ctl.selection) == 2
    parts = [full(ctl.annotation.find(i)) for i in ctl.selection]
    assert not (parts[0] & parts[1]).any()
    assert np.array_equal(parts[0] | parts[1], union)  # no pixel lost
    # delete one piece
    ctl.set_selection(ctl.selection[1:])
    gone = ctl.selection[0]
    key(qtbot, window, Qt.Key_Delete)
    assert ctl.annotation.find(gone) is None
    # relabel C and fill a hole punched into it
    ctl.set_selection(["C"])
    ctl.relabel_selected("cell")
    assert ctl.annotation.find("C").label == "cell"
    key(qtbot, window, Qt.Key_E)
    window.canvas.brush_size = 3
    drag(window, [(150, 150)])
    assert not full(ctl.annotation.find("C"))[150, 150]
    key(qtbot, window, Qt.Key_G)
    assert np.array_equal(full(ctl.annotation.find("C")), full(_disk_C()))


def _disk_C():
    from guihelpers import disk
    return disk(150, 150, 15)


def test_magic_wand_selects_bright_square(window, qtbot):
    ctl = window.controller
    ctl.set_selection([])
    key(qtbot, window, Qt.Key_W)
    window.canvas.tolerance = 5   # percent of the displayed range
    click(window, 80, 80)
    inst = ctl.annotation.instances[-1]
    expected = np.zeros((256, 256), bool)
    expected[60:100, 60:100] = True
    assert np.array_equal(full(inst), expected)


def test_undo_redo_restore_masks_exactly(window, qtbot):
    ctl = window.controller
    original = snapshot(ctl.annotation)
    key(qtbot, window, Qt.Key_B)
    window.canvas.brush_size = 11
    ctl.set_selection(["C"])
    drag(window, [(140, 140), (175, 160), (190, 190)])       # grow C beyond its box
    ctl.set_selection([])
    drag(window, [(5, 240), (60, 250)])                      # new instance
    key(qtbot, window, Qt.Key_E)
    ctl.set_selection([])
    drag(window, [(20, 35), (70, 35), (70, 60)])             # erase across A, B
    key(qtbot, window, Qt.Key_V)
    click(window, 25, 25)
    click(window, 65, 65, Qt.ShiftModifier)
    key(qtbot, window, Qt.Key_M)                             # merge
    key(qtbot, window, Qt.Key_X)
    drag(window, [(10, 46), (80, 46)])                       # split
    ctl.set_selection(["D"])
    key(qtbot, window, Qt.Key_Delete)                        # delete
    n_steps = ctl.undo_stack.count()
    assert [ctl.undo_stack.text(k) for k in range(n_steps)] == [
        "Brush stroke", "Brush stroke", "Eraser stroke", "Merge", "Split", "Delete"]
    edited = snapshot(ctl.annotation)
    assert not same(edited, original)
    for _ in range(n_steps):
        key(qtbot, window, Qt.Key_Z, Qt.ControlModifier)
    assert same(snapshot(ctl.annotation), original)
    # the overlay after undo equals a fresh render
    buf = window.canvas.overlay.buf.copy()
    window.canvas.rerender(None)
    assert np.array_equal(buf, window.canvas.overlay.buf)
    for k in range(n_steps):
        key(qtbot, window, Qt.Key_Y, Qt.ControlModifier) if k % 2 else \
            key(qtbot, window, Qt.Key_Z, Qt.ControlModifier | Qt.ShiftModifier)
    assert same(snapshot(ctl.annotation), edited)


def test_partial_repaints_match_full_render(window, qtbot):
    ctl = window.controller
    key(qtbot, window, Qt.Key_B)
    window.canvas.brush_size = 6
    ctl.set_selection(["A"])
    drag(window, [(10, 10), (60, 30), (62, 80)])
    ctl.set_selection([])
    drag(window, [(100, 100), (130, 130)])
    buf = window.canvas.overlay.buf.copy()
    window.canvas.rerender(None)
    assert np.array_equal(buf, window.canvas.overlay.buf)


def test_stroke_is_one_undo_step_and_memory_is_cropped(window, qtbot):
    ctl = window.controller
    key(qtbot, window, Qt.Key_B)
    window.canvas.brush_size = 5
    ctl.set_selection(["C"])
    pts = [(150 + k, 150) for k in range(0, 40, 2)]
    drag(window, pts)
    assert ctl.undo_stack.count() == 1
    cmd = ctl.undo_stack.command(0)
    nbytes = sum(op.nbytes for op in cmd.ops)
    assert nbytes < 256 * 256 // 8  # bit-packed patch of the stroke box, not the image


def test_hold_key_shows_image_only(window, qtbot):
    layer = window.canvas.overlay_layer
    assert layer.isVisible()
    qtbot.keyPress(window.canvas, Qt.Key_H)
    assert not layer.isVisible()
    qtbot.keyRelease(window.canvas, Qt.Key_H)
    assert layer.isVisible()


def test_brush_size_keys_and_zoom_keys(window, qtbot):
    cv = window.canvas
    cv.brush_size = 20
    key(qtbot, window, Qt.Key_BracketRight)
    assert cv.brush_size > 20
    key(qtbot, window, Qt.Key_BracketLeft)
    key(qtbot, window, Qt.Key_BracketLeft)
    assert cv.brush_size < 20
    z = cv.zoom
    key(qtbot, window, Qt.Key_Plus)
    assert cv.zoom > z
    key(qtbot, window, Qt.Key_Minus)
    key(qtbot, window, Qt.Key_Minus)
    assert cv.zoom < z
    key(qtbot, window, Qt.Key_F)
    r = cv.mapFromScene(cv.sceneRect()).boundingRect()
    assert r.width() <= cv.viewport().width() + 2 and r.height() <= cv.viewport().height() + 2


def test_a_corrected_prediction_becomes_manual_and_survives_auto_segment(window, qtbot):
    """Painting on, erasing from, splitting or relabelling a model prediction makes it the
    user's: auto-segment replaces model output only, so the correction is not lost when
    the item is segmented again. Undo gives the prediction back."""
    from engine.results import merge_results
    ctl = window.controller
    c = ctl.annotation.find("C")
    c.source, c.score, c.model = "model", 0.9, "run-1"  # disk C came from a model
    d = ctl.annotation.find("D")
    d.source, d.score, d.model = "model", 0.8, "run-1"
    key(qtbot, window, Qt.Key_V)
    click(window, 155, 150)
    key(qtbot, window, Qt.Key_B)
    window.canvas.brush_size = 7
    drag(window, [(150, 150), (180, 150)])  # the user widens the prediction
    c = ctl.annotation.find("C")
    assert (c.source, c.score, c.model) == ("manual", None, None)
    corrected = full(c)
    # a new auto-segment result replaces D (still model output) but keeps the correction
    fresh = ctl.annotation.find("D").copy(id="new", score=0.95)
    remove, add = merge_results(ctl.annotation, [fresh], "model")
    assert [i.id for i in remove] == ["D"] and [i.id for i in add] == ["new"]
    ctl.undo_stack.undo()
    c = ctl.annotation.find("C")
    assert (c.source, c.score, c.model) == ("model", 0.9, "run-1") and not np.array_equal(full(c), corrected)
    # a relabel is a correction too; a no-op (fill holes of a mask without holes) is not
    ctl.set_selection(["D"])
    assert not ctl.fill_holes_selected()
    assert ctl.annotation.find("D").source == "model"
    assert ctl.relabel_selected("debris")
    assert ctl.annotation.find("D").source == "manual"
