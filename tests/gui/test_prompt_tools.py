"""The box prompt tool (cold start: GrabCut), driven with real mouse events."""
from __future__ import annotations

import numpy as np
import pytest
from PyQt5 import QtCore

from guihelpers import drag, key, press, release, move, same, snapshot

pytestmark = pytest.mark.gui
Qt = QtCore.Qt


def test_box_prompt_drag_makes_the_object_under_it(window, qtbot, tmp_path):
    ctl = window.controller
    window.canvas.set_tool("box_prompt")
    assert window.canvas.tool.name == "box_prompt"
    before = snapshot(ctl.annotation)
    messages = []
    ctl.message.connect(messages.append)
    with qtbot.waitSignal(window.prompts.answered, timeout=30000):
        drag(window, [(54, 54), (80, 80), (106, 106)])   # around the bright square 60..99
    assert len(ctl.annotation.instances) == len(before) + 1
    new = ctl.annotation.instances[-1]
    truth = np.zeros((256, 256), bool)
    truth[60:100, 60:100] = True
    got = new.full_mask((256, 256))
    assert (got & truth).sum() / (got | truth).sum() >= 0.9
    assert any("answered by GrabCut (no model)" in m for m in messages)
    assert new.source == "prompt"
    window.grab().save(str(tmp_path / "box_prompt.png"))
    assert ctl.undo_stack.count() == 1                   # one undo step
    key(qtbot, window, Qt.Key_Z, Qt.ControlModifier)
    assert same(snapshot(ctl.annotation), before)


def test_box_prompt_escape_and_empty_box(window, qtbot):
    ctl = window.controller
    window.canvas.set_tool("box_prompt")
    before = snapshot(ctl.annotation)
    press(window, 54, 54)
    move(window, 90, 90)
    assert window.canvas.tool.busy
    key(qtbot, window, Qt.Key_Escape)
    assert not window.canvas.tool.busy
    release(window, 90, 90)
    messages = []
    ctl.message.connect(messages.append)
    drag(window, [(10, 10), (10, 10)])                   # a click without a modifier: a hint
    assert same(snapshot(ctl.annotation), before)
    assert messages and "drag a box" in messages[-1]
    with qtbot.waitSignal(window.prompts.answered, timeout=30000):
        drag(window, [(10, 10), (12, 10), (14, 10)])     # a box one pixel high is empty
    assert same(snapshot(ctl.annotation), before)
    assert "empty" in messages[-1]
