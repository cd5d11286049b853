"""Stack-wide edits in the GUI (link, split, propagate) are ONE undo step each, though they
change many slices: Ctrl+Z undoes the whole change on every slice, Ctrl+Shift+Z / Ctrl+Y redo."""
from __future__ import annotations

import pytest
from PyQt5 import QtCore

from engine.annotations import ItemAnnotation
from engine.project import Project
from guihelpers import key, square
from test_stacks import _stack_ids, open_stack_window

pytestmark = pytest.mark.gui
Qt = QtCore.Qt


def _disk(root, ids):
    """Every slice as on disk: [(instance id, object id, source, (x0, y0, w, h))] per slice."""
    proj = Project.open(root)
    return [[(i.id, i.object_id, i.source, i.bbox) for i in proj.load_annotation(k).instances] for k in ids]


def _press(qtbot, win, k, mods=Qt.NoModifier):
    """A key on the canvas, with the window active: a progress dialog that was shown (a
    slow step) leaves no active window on the offscreen platform (a desktop's window
    manager gives the activation back), and window shortcuts need one."""
    from PyQt5 import QtWidgets
    win.activateWindow()
    qtbot.waitUntil(lambda: QtWidgets.QApplication.activeWindow() is win)
    key(qtbot, win, k, mods)
    # when the key opened a progress dialog, QTest's modifier releases leave the application's
    # modifier state set (later clicks read as Shift/Ctrl-clicks); a plain release clears it
    qtbot.keyRelease(win.canvas, Qt.Key_Shift)
    assert QtWidgets.QApplication.keyboardModifiers() == Qt.NoModifier


def _undo(qtbot, win):
    _press(qtbot, win, Qt.Key_Z, Qt.ControlModifier)


def _redo(qtbot, win, which=0):
    if which:
        _press(qtbot, win, Qt.Key_Y, Qt.ControlModifier)
    else:
        _press(qtbot, win, Qt.Key_Z, Qt.ControlModifier | Qt.ShiftModifier)


def _body(project, ids, object_id=None):
    """One body through the 4 slices (a square moving 2 px per slice), and a speck on slice 3."""
    for k in range(4):
        insts = [square(40 + 2 * k, 40, 70 + 2 * k, 70, id=f"s{k}", object_id=object_id)]
        if k == 3:
            insts.append(square(120, 100, 130, 110, id="speck"))
        project.save_annotation(ItemAnnotation(ids[k], 128, 160, insts, "new"))


def test_link_is_one_undo_step_that_restores_every_slice(qtbot, stack_project):
    ids = _stack_ids(stack_project)
    _body(stack_project, ids)
    before = _disk(stack_project.root, ids)
    win = open_stack_window(qtbot, stack_project.root)
    ctl, tools = win.controller, win.stack_tools
    assert ctl.set_current_item(ids[1])
    ctl.set_selection(["s1"])
    assert tools.object_label.text() == "no 3-D object"
    win.actions["link objects"].trigger()
    linked = _disk(stack_project.root, ids)
    assert len({linked[k][0][1] for k in range(4)} - {None}) == 1
    qtbot.waitUntil(lambda: "slices 1–4 (4)" in tools.object_label.text())
    assert ctl.undo_stack.undoText() == "Link objects in this stack"
    _undo(qtbot, win)
    assert _disk(stack_project.root, ids) == before            # every slice's object ids, exactly
    assert ctl.annotation.find("s1").object_id is None        # the slice on screen too
    assert tools.object_label.text() == "no 3-D object"
    _redo(qtbot, win)
    assert _disk(stack_project.root, ids) == linked
    qtbot.waitUntil(lambda: "slices 1–4 (4)" in tools.object_label.text())
    _undo(qtbot, win)
    _redo(qtbot, win, which=1)                                 # Ctrl+Y redoes too
    assert _disk(stack_project.root, ids) == linked
    win.controller.close_project(force=True)


def test_split_object_here_is_one_undo_step(qtbot, stack_project):
    ids = _stack_ids(stack_project)
    _body(stack_project, ids, object_id="rock")
    before = _disk(stack_project.root, ids)
    win = open_stack_window(qtbot, stack_project.root)
    ctl, tools = win.controller, win.stack_tools
    assert ctl.set_current_item(ids[2])
    ctl.set_selection(["s2"])
    qtbot.waitUntil(lambda: "slices 1–4 (4)" in tools.object_label.text())
    assert win.actions["split object here"].isEnabled()
    _press(qtbot, win, Qt.Key_X, Qt.ControlModifier | Qt.ShiftModifier)
    after = _disk(stack_project.root, ids)
    assert [after[k][0][1] for k in (0, 1)] == ["rock", "rock"]
    new = after[2][0][1]
    assert new not in ("rock", None) and after[3][0][1] == new
    assert after[3][1] == before[3][1]                         # the speck keeps its own (no) object
    qtbot.waitUntil(lambda: "slices 3–4 (2)" in tools.object_label.text())
    _undo(qtbot, win)
    assert _disk(stack_project.root, ids) == before
    qtbot.waitUntil(lambda: "slices 1–4 (4)" in tools.object_label.text())
    _redo(qtbot, win)
    assert _disk(stack_project.root, ids) == after
    # on the object's first slice there is nothing to split
    assert ctl.set_current_item(ids[0])
    ctl.set_selection(["s0"])
    errors = []
    ctl.error.connect(errors.append)
    assert not tools.split_here()
    assert errors and "starts on this slice" in errors[0]
    assert _disk(stack_project.root, ids) == after
    win.controller.close_project(force=True)


def test_propagate_is_one_undo_step_that_undo_removes_entirely(qtbot, stack_project):
    ids = _stack_ids(stack_project)
    # the scan has a bright 40x40 square at 40..79 on every slice; draw it on slice 1 only
    stack_project.save_annotation(ItemAnnotation(ids[1], 128, 160, [square(40, 40, 80, 80, id="seed")], "new"))
    before = _disk(stack_project.root, ids)
    win = open_stack_window(qtbot, stack_project.root)
    ctl, tools = win.controller, win.stack_tools
    assert ctl.set_current_item(ids[1])
    ctl.set_selection(["seed"])
    assert all(win.actions[n].isEnabled() for n in ("propagate up", "propagate down", "propagate both"))
    win.actions["propagate both"].trigger()
    after = _disk(stack_project.root, ids)
    oid = ctl.annotation.find("seed").object_id
    assert oid is not None
    for k in (0, 2, 3):
        (got,) = after[k]
        assert got[1] == oid and got[2] == "prompt"
        x0, y0, w, h = got[3]
        assert abs(x0 - 40) <= 3 and abs(y0 - 40) <= 3 and abs(w - 40) <= 4 and abs(h - 40) <= 4
    qtbot.waitUntil(lambda: "slices 1–4 (4)" in tools.object_label.text())
    assert ctl.undo_stack.undoText() == "Propagate up and down"
    _undo(qtbot, win)
    assert _disk(stack_project.root, ids) == before            # every propagated instance gone
    assert ctl.annotation.find("seed").object_id is None
    _redo(qtbot, win)
    assert _disk(stack_project.root, ids) == after
    # down from the last slice: nothing there to add, and no undo step
    n = ctl.undo_stack.count()
    assert ctl.set_current_item(ids[3])
    ctl.set_selection([after[3][0][0]])
    assert not tools.propagate(+1) and ctl.undo_stack.count() == 0
    assert ctl.set_current_item(ids[1]) and ctl.undo_stack.count() == n
    win.controller.close_project(force=True)


def test_undo_refused_when_a_slice_changed_since_and_nothing_half_written(qtbot, stack_project):
    ids = _stack_ids(stack_project)
    _body(stack_project, ids)
    win = open_stack_window(qtbot, stack_project.root)
    ctl = win.controller
    assert ctl.set_current_item(ids[1])
    win.actions["link objects"].trigger()
    # another program gives slice 3's body its own object meanwhile
    Project.open(stack_project.root).edit_annotation(
        ids[3], lambda a: (setattr(a.find("s3"), "object_id", "theirs"), a)[1])
    changed = _disk(stack_project.root, ids)
    errors = []
    ctl.error.connect(errors.append)
    _undo(qtbot, win)
    assert errors and f"item '{ids[3]}' was changed since" in errors[0]
    assert _disk(stack_project.root, ids) == changed           # no slice was touched
    assert ctl.undo_stack.count() == 0                         # the step left the history
    win.controller.close_project(force=True)


def test_propagate_down_and_up_by_their_shortcuts(qtbot, stack_project):
    ids = _stack_ids(stack_project)
    stack_project.save_annotation(ItemAnnotation(ids[1], 128, 160, [square(40, 40, 80, 80, id="seed")], "new"))
    win = open_stack_window(qtbot, stack_project.root)
    ctl = win.controller
    assert ctl.set_current_item(ids[1])
    ctl.set_selection(["seed"])
    _press(qtbot, win, Qt.Key_PageDown, Qt.ShiftModifier)           # down: slices 3 and 4
    assert ctl.item_id == ids[1]                                 # stays on the slice (not "next slice")
    assert [len(s) for s in _disk(stack_project.root, ids)] == [0, 1, 1, 1]
    assert ctl.undo_stack.undoText() == "Propagate down"
    _press(qtbot, win, Qt.Key_PageUp, Qt.ShiftModifier)             # up: slice 1
    assert [len(s) for s in _disk(stack_project.root, ids)] == [1, 1, 1, 1]
    # a label renamed since: the steps' records follow it, so undo still fits the files
    assert ctl.rename_label("cell", "grain")
    _undo(qtbot, win)
    assert [len(s) for s in _disk(stack_project.root, ids)] == [0, 1, 1, 1]
    _undo(qtbot, win)
    assert [len(s) for s in _disk(stack_project.root, ids)] == [0, 1, 0, 0]
    assert Project.open(stack_project.root).load_annotation(ids[1]).find("seed").label == "grain"
    win.controller.close_project(force=True)


def test_propagate_to_next_slice_held_key_steps_without_a_backlog(qtbot, stack_project):
    """Alt+PgDown carries the selection one slice and goes there with it selected. While a
    step is being answered, more presses of the key (auto-repeat of a held key) are dropped,
    not queued: when the slow answer lands, exactly one slice was added. Esc cancels a step
    being answered and drops its late answer."""
    import threading
    from PyQt5 import QtWidgets
    ids = _stack_ids(stack_project)
    stack_project.save_annotation(ItemAnnotation(ids[0], 128, 160, [square(40, 40, 80, 80, id="seed")], "new"))
    win = open_stack_window(qtbot, stack_project.root)
    ctl, tools, svc = win.controller, win.stack_tools, win.prompts
    assert ctl.set_current_item(ids[0])
    ctl.set_selection(["seed"])
    act = win.actions["propagate next slice"]
    assert act.isEnabled() and act.autoRepeat()                       # holding the key repeats it
    gate = threading.Event()
    calls, finished = [], []
    propagate = svc.worker.propagate

    def slow(*a, **kw):             # the answer takes longer than the key's repeat interval
        calls.append(a[1])
        try:
            assert gate.wait(120)
            return propagate(*a, **kw)
        finally:
            finished.append(a[1])
    svc.worker.propagate = slow
    messages = []
    ctl.message.connect(messages.append)
    for _ in range(5):              # the key held: five presses before the first answer
        _press(qtbot, win, Qt.Key_PageDown, Qt.AltModifier)
    assert tools.stepping and tools.dropped_steps == 4
    qtbot.waitUntil(lambda: len(calls) == 1)                          # the worker took the one step ...
    assert calls == [ids[0]] and len(finished) == 0                   # ... and is still answering it
    assert win.canvas.viewport().cursor().shape() == Qt.BusyCursor
    gate.set()
    qtbot.waitUntil(lambda: not tools.stepping)
    assert ctl.item_id == ids[1]                                       # it went to the slice ...
    assert [len(s) for s in _disk(stack_project.root, ids)] == [1, 1, 0, 0]   # ... one slice, not five
    (new,) = ctl.annotation.instances
    assert ctl.selection == [new.id] and new.source == "prompt"
    assert new.object_id == Project.open(stack_project.root).load_annotation(ids[0]).find("seed").object_id
    assert "answered by GrabCut (no model)" in messages[-1]
    assert ctl.undo_stack.undoText() == "Propagate to the next slice"
    _press(qtbot, win, Qt.Key_PageDown, Qt.AltModifier)               # the next press walks on
    qtbot.waitUntil(lambda: not tools.stepping)
    assert ctl.item_id == ids[2] and [len(s) for s in _disk(stack_project.root, ids)] == [1, 1, 1, 0]
    # Esc while a step is being answered: nothing lands, the late answer is dropped
    gate.clear()
    _press(qtbot, win, Qt.Key_PageDown, Qt.AltModifier)
    assert tools.stepping
    _press(qtbot, win, Qt.Key_Escape)
    assert not tools.stepping and "cancelled" in messages[-1]
    assert win.canvas.viewport().cursor().shape() != Qt.BusyCursor
    gate.set()
    qtbot.waitUntil(lambda: len(finished) == 3)
    QtWidgets.QApplication.processEvents()                            # its (late) outcome is delivered
    assert ctl.item_id == ids[2] and [len(s) for s in _disk(stack_project.root, ids)] == [1, 1, 1, 0]
    # Ctrl+Z on the slice it landed on removes that step
    _undo(qtbot, win)
    assert [len(s) for s in _disk(stack_project.root, ids)] == [1, 1, 0, 0]
    win.controller.close_project(force=True)
