"""Stacks in the GUI: the grouped image list, wheel/right-drag on the canvas, 3-D objects."""
from __future__ import annotations

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
    assert model.data(stack.siblingAtColumn(1)) == "1/4 reviewed"
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
