"""The Instances panel updates only the rows an edit changed (a stroke on an item with
thousands of instances must not rebuild every row), and what it shows equals a panel
filled from scratch, sorted by a column or not."""
from __future__ import annotations

import numpy as np
from PyQt5 import QtCore

from gui.panels import instances
from gui.panels.instances import InstancesPanel

Qt = QtCore.Qt


def rows_of(panel):
    t = panel.table
    return [tuple(t.item(r, c).data(Qt.DisplayRole) for c in range(t.columnCount()))
            + (t.item(r, 0).data(Qt.UserRole), t.isRowHidden(r)) for r in range(t.rowCount())]


def from_scratch(window):
    fresh = InstancesPanel(window.controller)
    if window.instances_panel.table.horizontalHeader().sortIndicatorSection() >= 0:
        hdr = window.instances_panel.table.horizontalHeader()
        fresh.table.horizontalHeader().setSortIndicator(hdr.sortIndicatorSection(), hdr.sortIndicatorOrder())
    fresh.refresh()
    out = rows_of(fresh)
    fresh.deleteLater()
    return out


def untouched(panel):
    """Mark every row; rewritten() then names the rows the panel wrote since (it always
    writes the sort key, which rows_of does not compare)."""
    for r in range(panel.table.rowCount()):
        panel.table.item(r, 0).setData(instances.SORT_ROLE, "untouched")


def rewritten(panel):
    t = panel.table
    return [t.item(r, 0).data(Qt.UserRole) for r in range(t.rowCount())
            if t.item(r, 0).data(instances.SORT_ROLE) != "untouched"]


def test_an_edit_rewrites_only_its_rows(window, qtbot):
    ctl, panel = window.controller, window.instances_panel
    qtbot.waitUntil(lambda: panel.table.rowCount() == 4)
    assert rows_of(panel) == from_scratch(window)
    untouched(panel)
    ctl.set_selection([])
    assert ctl.paint_stroke(np.ones((6, 6), bool), 100, 200)     # a new instance, on top
    panel.refresh()
    new_id = panel._ids[0]
    assert rewritten(panel) == [new_id] and panel._ids == [new_id, "D", "C", "B", "A"]
    assert rows_of(panel) == from_scratch(window)
    untouched(panel)
    ctl.set_selection(["C"])
    assert ctl.paint_stroke(np.ones((3, 3), bool), 150, 150, erase=True)   # C loses 9 px
    panel.refresh()
    assert rewritten(panel) == ["C"]
    assert rows_of(panel) == from_scratch(window)
    window.actions["undo"].trigger()
    window.actions["undo"].trigger()                               # both edits undone
    panel.refresh()
    assert rows_of(panel) == from_scratch(window) and len(panel._ids) == 4


def test_a_sorted_table_stays_sorted_and_equal_to_a_fresh_one(window, qtbot):
    ctl, panel = window.controller, window.instances_panel
    qtbot.waitUntil(lambda: panel.table.rowCount() == 4)
    area = panel.COLUMNS.index("Area")
    panel.table.horizontalHeader().setSortIndicator(area, Qt.AscendingOrder)   # a header click
    ctl.set_selection([])
    assert ctl.paint_stroke(np.ones((12, 12), bool), 100, 200)
    panel.refresh()
    shown = rows_of(panel)
    assert [r[area] for r in shown] == sorted(r[area] for r in shown)
    assert shown == from_scratch(window)
    ctl.set_label_visible("debris", False)          # C's row stays, hidden
    panel.refresh()
    assert rows_of(panel) == from_scratch(window)
    assert [r[-1] for r in rows_of(panel) if r[-2] == "C"] == [True]


def test_many_changed_rows_refill_the_table_and_another_item_empties_it(window, qtbot, monkeypatch):
    ctl, panel = window.controller, window.instances_panel
    qtbot.waitUntil(lambda: panel.table.rowCount() == 4)
    monkeypatch.setattr(instances, "REBUILD_ROWS", 0)   # one new row is already "many"
    ctl.set_selection([])
    assert ctl.paint_stroke(np.ones((6, 6), bool), 100, 200)
    panel.refresh()
    assert rows_of(panel) == from_scratch(window) and panel.table.rowCount() == 5
    other = next(it.id for it in ctl.project.items if it.id != ctl.item_id)
    assert ctl.set_current_item(other)          # "other" has no annotation
    panel.refresh()
    assert panel.table.rowCount() == 0 and panel._ids == []
