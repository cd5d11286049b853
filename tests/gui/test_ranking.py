"""'Correct this next' in the window (gui.ranking): Rank by uncertainty fills the image
list's Doubt column and sorts it, the scores come back on reopening, Next most uncertain
walks the unreviewed items in descending score, and the Instances panel sorts by doubt."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from PyQt5 import QtCore, QtWidgets

from engine.annotations import Instance, ItemAnnotation
from engine.masks import components
from engine.model.uncertainty import Uncertainty, save_scores
from engine.project import Project
from guihelpers import open_window

DOUBT = 3
CENTRE = (40, 20, 56, 36)      # straddles the middle: the mirror prediction agrees
LEFT_A = (5, 5, 15, 15)        # only seen in the image, not in the mirror image
LEFT_B = (5, 40, 15, 50)
LAYOUTS = {"a_sure": [CENTRE], "b_doubt": [LEFT_A], "c_half": [LEFT_A, LEFT_B, CENTRE],
           "d_done": [LEFT_A], "e_two": [LEFT_A, CENTRE]}


class LeftHandedModel:
    """A model (the thing ranking runs, not the thing under test) that finds bright blobs
    only in the left half (+2 px) of an image, so the mirror image disagrees where objects
    are off-centre: flip = 1 - matched IoU share (b 1.0, c 2/3, e 0.5, a 0)."""

    def predict_many(self, images, *, score_threshold=0.5, tile=None, cancel=None):
        out = []
        for img in images:
            found = []
            for m in components(np.asarray(img) > 100):
                inst = Instance.from_full_mask(m, "blob", source="model")
                if inst.x0 + inst.width / 2 <= img.shape[1] / 2 + 2:
                    inst.score = 0.9
                    found.append(inst)
            out.append(found)
        return out


def image_with(*boxes):
    img = np.zeros((64, 96), np.uint8)
    for x0, y0, x1, y1 in boxes:
        img[y0:y1, x0:x1] = 200
    return img


@pytest.fixture
def ranked_project(tmp_path):
    imgdir = tmp_path / "images"
    imgdir.mkdir()
    for name, boxes in LAYOUTS.items():
        assert cv2.imwrite(str(imgdir / f"{name}.png"), image_with(*boxes))
    proj = Project.create(tmp_path / "proj", ["blob"])
    proj.add([imgdir])
    proj.save_annotation(ItemAnnotation("d_done", 64, 96, [], status="reviewed"))
    run = proj.models_dir / "run-a"
    run.mkdir(parents=True)
    (run / "model.pt").write_bytes(b"")   # the active model's file; the test model answers for it
    proj.set_active_model("run-a")
    return proj


@pytest.fixture
def win(qtbot, ranked_project):
    w = open_window(qtbot, ranked_project.root)
    w.ranking.predictor_factory = lambda project, path: LeftHandedModel()
    yield w
    w.controller.close_project(force=True)


def doubt_cells(w) -> dict:
    m = w.images_panel.model
    return {i: m.data(m.index_of(i, DOUBT)) for i in LAYOUTS}


def test_rank_fills_the_column_sorts_the_list_and_survives_reopening(win):
    assert set(doubt_cells(win).values()) == {""}                 # empty until ranked
    assert not win.actions["next most uncertain"].isEnabled()
    win.actions["rank uncertainty"].trigger()
    assert doubt_cells(win) == {"a_sure": "0.00", "b_doubt": "1.00", "c_half": "0.67", "d_done": "",
                                "e_two": "0.50"}               # the reviewed item is not scored
    # the list shows the most uncertain first, unranked last
    assert win.images_panel.visible_item_ids() == ["b_doubt", "c_half", "e_two", "a_sure", "d_done"]
    header = win.images_panel.tree.header()
    assert (header.sortIndicatorSection(), header.sortIndicatorOrder()) == (DOUBT, QtCore.Qt.DescendingOrder)
    # a click on the header sorts the other way (a sortable column)
    win.images_panel.tree.sortByColumn(DOUBT, QtCore.Qt.AscendingOrder)
    assert win.images_panel.visible_item_ids()[:4] == ["d_done", "a_sure", "e_two", "c_half"]
    # kept with the model: back after reopening the project
    root = win.controller.project.root
    assert win.controller.close_project()
    assert set(doubt_cells_when_closed(win)) == {None}
    assert win.open_project(root)
    assert doubt_cells(win)["b_doubt"] == "1.00" and win.actions["next most uncertain"].isEnabled()


def doubt_cells_when_closed(w):
    m = w.images_panel.model
    return [m.data(m.index(r, DOUBT)) for r in range(m.rowCount())] or [None]


def test_next_most_uncertain_visits_descending_and_skips_reviewed(qtbot, ranked_project):
    model = ranked_project.resolve_model(None)
    scores = {"a_sure": 0.2, "b_doubt": 0.9, "c_half": 0.5, "d_done": 0.95, "e_two": 0.7}
    save_scores(ranked_project, model, {i: Uncertainty(flip=s, mid=0.0, detections=1) for i, s in scores.items()})
    w = open_window(qtbot, ranked_project.root)
    try:
        act = w.actions["next most uncertain"]
        assert act.shortcut().toString() == "Shift+U"
        visited = []
        for _ in range(4):
            act.trigger()
            visited.append(w.controller.item_id)
        assert visited == ["b_doubt", "e_two", "c_half", "a_sure"]      # d_done is reviewed: skipped
        # the user accepts b (reviewed): it drops out of the walk
        w.controller.set_current_item("b_doubt")
        assert w.controller.set_status("reviewed")
        act.trigger()
        assert w.controller.item_id == "e_two"                             # the highest one left
        act.trigger()
        assert w.controller.item_id == "c_half"
        w.controller.set_current_item("a_sure")
        act.trigger()
        assert w.controller.item_id == "e_two"                             # wraps to the top: b is reviewed
    finally:
        w.controller.close_project(force=True)


def test_instances_panel_sorts_the_instances_by_doubt(qtbot, ranked_project):
    insts = [Instance(mask=np.ones((10, 10), bool), x0=5, y0=5, label="blob", id="left", source="model", score=0.9),
             Instance(mask=np.ones((16, 16), bool), x0=40, y0=20, label="blob", id="mid", source="model", score=0.8),
             Instance(mask=np.ones((6, 6), bool), x0=80, y0=50, label="blob", id="drawn", source="manual")]
    ranked_project.save_annotation(ItemAnnotation("e_two", 64, 96, insts, status="predicted"), overwrite=True)
    u = Uncertainty(flip=0.5, mid=0.0, detections=2, instance_doubt=[0.9, 0.1], boxes=[(5, 5, 10, 10), (40, 20, 16, 16)])
    save_scores(ranked_project, ranked_project.resolve_model(None), {"e_two": u})
    w = open_window(qtbot, ranked_project.root)
    try:
        w.controller.set_current_item("e_two")
        panel = w.instances_panel
        panel.refresh()
        table = panel.table
        col = panel.COLUMNS.index("Doubt")

        def rows():
            return [(table.item(r, 0).data(QtCore.Qt.UserRole), table.item(r, col).text())
                    for r in range(table.rowCount())]
        assert sorted(rows()) == [("drawn", ""), ("left", "0.90"), ("mid", "0.10")]
        table.horizontalHeader().setSortIndicator(col, QtCore.Qt.DescendingOrder)   # a header click
        assert [i for i, _ in rows()] == ["left", "mid", "drawn"]
        # an edit refreshes the panel: the order by doubt holds, the selection follows ids
        panel.refresh()
        assert [i for i, _ in rows()] == ["left", "mid", "drawn"]
        w.controller.set_selection(["mid"])
        QtWidgets.QApplication.processEvents()
        assert [table.item(i.row(), 0).data(QtCore.Qt.UserRole) for i in table.selectionModel().selectedRows()] == ["mid"]
    finally:
        w.controller.close_project(force=True)
