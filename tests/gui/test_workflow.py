"""The model workflow in the real main window, with a stand-in predictor and a stand-in
training process (the real ones are exercised by tests/e2e/test_loop.py)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.gui

sys.path.insert(0, str(Path(__file__).parent))
from workflow_helpers import TruthPredictor, fake_train_factory, make_project  # noqa: E402

from PyQt5 import QtCore, QtWidgets  # noqa: E402


@pytest.fixture
def win(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("MASKLOOP_NO_FIRST_RUN", "1")
    monkeypatch.setenv("MASKLOOP_NO_CUDA_PROBE", "1")
    from gui.main_window import MainWindow
    proj, truth = make_project(tmp_path)
    w = MainWindow()
    qtbot.addWidget(w)
    w.resize(1300, 850)
    w.show()
    wf = w.loop
    wf.truth = truth
    wf.segmenter.set_predictor_factory(lambda path, device: TruthPredictor(path, device, truth))
    wf.runner._command_factory = fake_train_factory(tmp_path)
    assert w.open_project(proj.root)
    yield w
    wf.shutdown()


def wait_idle(qtbot, wf, timeout=10000):
    qtbot.waitUntil(lambda: not wf.segmenter.busy, timeout=timeout)
    QtWidgets.QApplication.processEvents()


def add_fake_run(project, run, ap, arch="r18fpn"):
    folder = project.models_dir / run
    folder.mkdir(parents=True)
    (folder / "model.pt").write_bytes(b"fake")
    (folder / "config.json").write_text(json.dumps({"schema": 1, "run": run, "arch": arch, "base": "scratch"}))
    (folder / "metrics.json").write_text(json.dumps({"schema": 1, "status": "done", "train_items": 4,
                                                     "val_items": 1, "best": {"mask_AP": ap, "mask_AP50": ap + 0.1,
                                                                              "acc50": ap}}))


def test_install_adds_menus_docks_and_toolbar(win):
    assert "model" in win.menus
    for dock in ("review", "models", "training"):
        assert dock in win.docks
    for key in ("segment current", "segment unreviewed", "segment classic", "train", "accept item",
                "reject predictions", "next unreviewed", "import", "export"):
        assert key in win.actions
    assert win.loop.no_model_label.text().startswith("No model trained yet")


def test_cold_start_proposals_are_one_undoable_step(qtbot, win):
    wf, c = win.loop, win.controller
    wf.run_classic({"split": 0.6}, "current")
    wait_idle(qtbot, wf)
    ann = c.annotation
    assert len(ann.instances) > 5
    assert all(i.source == "classic" for i in ann.instances)
    assert ann.status == "predicted"
    c.undo_stack.undo()
    assert c.annotation.instances == [] and c.annotation.status == "new"


def test_classic_dialog_says_no_model_and_previews(qtbot, win):
    from gui.dialogs.classic_dialog import ClassicDialog
    dlg = ClassicDialog(win.controller, win)
    qtbot.addWidget(dlg)
    assert "No model is trained yet" in dlg.findChild(QtWidgets.QLabel, "noModelNote").text()
    n0 = len(dlg.instances)
    assert n0 > 0 and "object(s) found" in dlg.summary.text()
    dlg.split.setValue(0)
    dlg.update_preview()
    assert len(dlg.instances) <= n0
    dlg.level.setValue(95)  # a very high threshold finds little
    dlg.update_preview()
    assert not dlg.auto_level.isChecked() and dlg.params()["level"] == pytest.approx(0.95)
    assert len(dlg.instances) < n0


def test_segment_unreviewed_skips_reviewed_and_applies_through_controller(qtbot, win):
    wf, c, proj = win.loop, win.controller, win.controller.project
    add_fake_run(proj, "run-a", 0.4)
    wf.models_panel.refresh()
    assert wf.models_panel.make_active("run-a")
    # img1 is reviewed with one manual instance: must stay as it is
    from engine.annotations import Instance
    ann1 = proj.load_annotation("img1")
    ann1.instances = [Instance(mask=np.ones((5, 5), bool), x0=3, y0=3, label="nucleus")]
    ann1.status = "reviewed"
    proj.save_annotation(ann1)
    c.item_written("img1", ann1)
    before = proj.annotation_path("img1").read_bytes()
    wf.segment_unreviewed()
    wait_idle(qtbot, wf)
    assert proj.annotation_path("img1").read_bytes() == before
    # current item (img0): applied via the controller, undoable
    assert c.item_id == "img0"
    assert c.annotation.status == "predicted"
    assert len(c.annotation.instances) == len(wf.truth["img0"].instances)
    assert all(i.source == "model" and i.model == "run-a" for i in c.annotation.instances)
    # other items: written to disk with status predicted
    for k in (2, 3):
        a = proj.load_annotation(f"img{k}")
        assert a.status == "predicted" and len(a.instances) == len(wf.truth[f"img{k}"].instances)
        assert c.status_of(f"img{k}") == "predicted"
    summary = wf.last_segment_summary
    assert summary["done"] == 3 and summary["outcomes"] == {"applied": 1, "written": 2}
    c.undo_stack.undo()
    assert c.annotation.instances == [] and c.annotation.status == "new"


def test_results_wait_while_the_item_is_being_edited(qtbot, win):
    wf, c, proj = win.loop, win.controller, win.controller.project
    add_fake_run(proj, "run-a", 0.4)
    wf.models_panel.refresh()
    wf.models_panel.make_active("run-a")
    m = np.zeros((9, 9), bool)
    m[2:7, 2:7] = True
    assert c.paint_stroke(m, 5, 5)
    manual = [i.id for i in c.annotation.instances]
    wf.segment_unreviewed()
    wait_idle(qtbot, wf)
    assert [i.id for i in c.annotation.instances] == manual      # untouched
    assert wf.review.has_pending("img0") and wf.act_apply_pending.isEnabled()
    assert wf.review.apply_pending()
    ids = [i.id for i in c.annotation.instances]
    assert manual[0] in ids and len(ids) > 1
    c.undo_stack.undo()
    assert [i.id for i in c.annotation.instances] == manual


def test_score_slider_hides_low_scores_live_and_accept_keeps_what_is_shown(qtbot, win):
    wf, c, proj = win.loop, win.controller, win.controller.project
    add_fake_run(proj, "run-a", 0.4)
    wf.models_panel.refresh()
    wf.models_panel.make_active("run-a")
    wf.segment_current()
    wait_idle(qtbot, wf)
    ann = c.annotation
    low = [i for i in ann.instances if i.score < 0.5]
    high = [i for i in ann.instances if i.score >= 0.5]
    assert low and high
    view = win.canvas
    buf = view.overlay.buf

    def drawn(inst):
        ys, xs = np.nonzero(inst.mask)
        return bool(buf[ys + inst.y0, xs + inst.x0].any())

    wf.review_bar.slider.setValue(25)            # show everything
    assert all(drawn(i) for i in ann.instances)
    wf.review_bar.slider.setValue(50)            # the 0.3-score ones disappear at once
    assert not any(drawn(i) for i in low)
    assert all(drawn(i) for i in high)
    assert "hidden below 0.50" in wf.review_bar.counts.text()
    # accept: hidden predictions go, status reviewed, on disk
    qtbot.mouseClick(wf.review_bar.accept_button, QtCore.Qt.LeftButton)
    assert c.annotation.status == "reviewed"
    assert {i.id for i in c.annotation.instances} == {i.id for i in high}
    disk = proj.load_annotation("img0")
    assert disk.status == "reviewed" and len(disk.instances) == len(high)
    # a reviewed item is never re-segmented
    assert wf.segment_current() is None


def test_reject_selected_and_next_unreviewed(qtbot, win):
    wf, c, proj = win.loop, win.controller, win.controller.project
    add_fake_run(proj, "run-a", 0.4)
    wf.models_panel.refresh()
    wf.models_panel.make_active("run-a")
    wf.segment_current()
    wait_idle(qtbot, wf)
    n = len(c.annotation.instances)
    c.set_selection([c.annotation.instances[0].id, c.annotation.instances[1].id])
    assert wf.review.reject_selected() == 2
    assert len(c.annotation.instances) == n - 2
    wf.review.accept_item()
    wf.review.next_unreviewed()
    assert c.item_id == "img1"
    c.set_current_item("img3")
    wf.review.next_unreviewed()
    assert c.item_id == "img1"   # wraps, skipping the reviewed img0


def test_models_panel_activation_rule(qtbot, win):
    wf, proj = win.loop, win.controller.project
    panel = wf.models_panel
    add_fake_run(proj, "run-20240101-000000", 0.5)
    add_fake_run(proj, "run-20240102-000000", 0.3)
    add_fake_run(proj, "run-20240103-000000", 0.6)
    asked = []
    panel.ask = lambda text: asked.append(text) or False
    assert panel.offer_new_run("run-20240101-000000")          # nothing active yet
    assert proj.active_model == "run-20240101-000000"
    assert not panel.offer_new_run("run-20240102-000000")      # worse: asked, said no
    assert asked and "kept run-20240101-000000" in asked[0] and proj.active_model == "run-20240101-000000"
    panel.ask = lambda text: True
    assert panel.offer_new_run("run-20240102-000000")          # worse, but the user said yes
    assert proj.active_model == "run-20240102-000000"
    assert panel.offer_new_run("run-20240103-000000")          # better: no question
    assert proj.active_model == "run-20240103-000000"
    # any earlier model can be made active again, and the worker reloads it
    panel.select_run("run-20240101-000000")
    with qtbot.waitSignal(wf.segmenter.modelLoaded, timeout=5000) as blocker:
        qtbot.mouseClick(panel.activate_button, QtCore.Qt.LeftButton)
    assert proj.active_model == "run-20240101-000000"
    assert "run-20240101-000000" in blocker.args[0]
    assert panel.table.rowCount() == 3
    texts = [panel.table.item(r, 1).text() for r in range(3)]
    assert texts[0] == "run-20240103-000000"   # newest first
    row = texts.index("run-20240101-000000")
    assert panel.table.item(row, 0).text() == "●"
    assert panel.table.item(row, 2).text() == "0.50"          # mask AP
    assert panel.table.item(row, 5).text() == "4+1"          # train + val items


def test_train_dialog_defaults_work_in_one_click(qtbot, win):
    from gui.dialogs.train_dialog import TrainDialog
    proj = win.controller.project
    dlg = TrainDialog(proj, win, statuses={"a": "reviewed", "b": "reviewed", "c": "new"}, gpus=[])
    qtbot.addWidget(dlg)
    opts = dlg.options()
    assert opts["base"] == "auto" and opts["arch"] == "r18fpn_lite" and opts["device"] == "auto"
    assert opts["minutes"] >= 1 and opts["epochs"] is None and dlg.ok_button.isEnabled()
    assert "2</b> reviewed item(s) of 3" in dlg.items_label.text()
    assert not dlg.device.model().item(dlg.device.findData("cuda")).isEnabled()
    # no reviewed items: Train is disabled with the reason
    dlg2 = TrainDialog(proj, win, statuses={"a": "new"}, gpus=["NVIDIA H100 80GB HBM3"])
    qtbot.addWidget(dlg2)
    assert not dlg2.ok_button.isEnabled()
    assert "reviewed" in dlg2.hint.text()
    assert "NVIDIA H100" in dlg2.device.itemText(0)
    # with an active model, it is the default base and its architecture is kept
    add_fake_run(proj, "run-a", 0.4, arch="r50fpn")
    proj.set_active_model("run-a")
    dlg3 = TrainDialog(proj, win, statuses={"a": "reviewed"}, gpus=[])
    qtbot.addWidget(dlg3)
    assert dlg3.options()["base"] == "run-a" and dlg3.options()["arch"] == "r50fpn"
    dlg3.set_options(arch="r18fpn")
    assert not dlg3.ok_button.isEnabled()  # a checkpoint cannot change architecture


def test_training_through_the_window_activates_the_new_model(qtbot, win, tmp_path):
    wf, c, proj = win.loop, win.controller, win.controller.project
    for k in range(3):
        c.set_current_item(f"img{k}")
        m = np.ones((6, 6), bool)
        c.paint_stroke(m, 10 * k, 10)
        wf.review.accept_item()
    wf.exec_train_dialog = lambda dlg: True
    with qtbot.waitSignal(wf.runner.finished, timeout=30000) as blocker:
        assert wf.train_dialog()
        assert wf.training_dock.isVisible() and wf.training_view.cancel_button.isEnabled()
    assert blocker.args[0], blocker.args
    assert "3</b> reviewed" in wf.last_train_dialog.items_label.text()
    qtbot.waitUntil(lambda: proj.active_model is not None, timeout=5000)
    run = proj.active_model
    assert run.startswith("run-fake")
    assert wf.segmenter.model_path.endswith(f"{run}/model.pt")
    assert wf.last_train_seconds is not None
    view = wf.training_view
    epochs = wf.runner.start_event["epochs"]   # the dialog's default is a time budget
    assert len(view.plot.loss) == 4 * epochs and len(view.plot.val["mask_AP"]) == epochs
    assert view.plot.loss[0][0] == pytest.approx(0.25) and view.plot.loss[-1][0] == pytest.approx(epochs)
    assert view.finished_ok and "✓" in view.status.text()
    assert wf.models_panel.table.rowCount() == 1
    assert not wf.no_model_label.isVisible()


def test_the_childs_activated_event_decides_not_stderr(qtbot, win, monkeypatch):
    """The training child's `activated` event (engine.events) carries the activation rule's
    verdict: the GUI keeps the old model and asks, quoting the event's reason."""
    wf, proj = win.loop, win.controller.project
    add_fake_run(proj, "run-a", 0.7)
    assert wf.models_panel.make_active("run-a")
    monkeypatch.setenv("FAKE_VERDICT", "keep")
    asked = []
    wf.models_panel.ask = lambda text: asked.append(text) or False
    with qtbot.waitSignal(wf.runner.finished, timeout=30000):
        assert wf.start_training({"arch": "r18fpn", "base": "scratch", "epochs": 1, "device": "cpu"})
    qtbot.waitUntil(lambda: bool(asked), timeout=5000)
    assert "kept run-a as the active model (mask_AP 0.700)" in asked[0]
    assert proj.active_model == "run-a" and wf.runner.activated_event["active"] is False


def test_a_training_crash_is_reported_and_the_project_untouched(qtbot, win, tmp_path):
    wf, c, proj = win.loop, win.controller, win.controller.project
    manifest = proj.manifest_path.read_bytes()
    script = tmp_path / "crash.py"
    script.write_text("import json, sys\nprint(json.dumps({'event':'start','epochs':1,'iters_per_epoch':2}),"
                      " flush=True)\nsys.stderr.write('RuntimeError: CUDA out of memory\\n')\nsys.exit(1)\n")
    wf.runner._command_factory = lambda *a, **k: [sys.executable, str(script)]
    notes = []
    win.notify = lambda msg, error=False: notes.append(msg)
    with qtbot.waitSignal(wf.runner.finished, timeout=20000):
        wf.start_training({"arch": "r18fpn", "base": "scratch", "epochs": 1, "device": "cpu"})
    assert notes and "out of memory" in notes[0]
    assert "out of memory" in wf.training_view.status.text()
    assert proj.manifest_path.read_bytes() == manifest and proj.active_model is None


def test_export_and_import_dialogs(qtbot, win, tmp_path):
    from pycocotools.coco import COCO
    wf, c, proj = win.loop, win.controller, win.controller.project
    m = np.zeros((12, 12), bool)
    m[2:10, 3:9] = True
    c.paint_stroke(m, 20, 20)
    wf.review.accept_item()
    dlg = wf.export_dialog()
    qtbot.addWidget(dlg)
    out = tmp_path / "exp" / "coco.json"
    dlg.out.setText(str(out))
    assert dlg.only_reviewed.isChecked()
    rep = dlg.export()
    assert rep is not None and "exported 1 instance(s) of 1 image(s)" in dlg.summary.text()
    coco = COCO(str(out))
    assert len(coco.getImgIds()) == 1 and len(coco.getAnnIds()) == 1
    assert coco.annToMask(coco.loadAnns(coco.getAnnIds())[0]).sum() == m.sum()
    # a bad target is reported in the dialog
    (tmp_path / "afile").write_text("x")
    dlg.out.setText(str(tmp_path / "afile"))
    assert dlg.export() is None and "Export failed" in dlg.summary.text()
    # import: the same file as predictions into the same project changes nothing twice
    idlg = wf.import_dialog()
    qtbot.addWidget(idlg)
    idlg.source.setText(str(out))
    rep = idlg.do_import()
    assert rep is not None and "✓" in idlg.summary.text()
    idlg.source.setText(str(tmp_path / "missing.json"))
    assert idlg.do_import() is None and "Nothing was imported" in idlg.summary.text()
    assert win.controller.project is not None


def test_first_run_dialog_offers_new_open_demo(qtbot, win):
    wf = win.loop
    wf._on_first_run = lambda choice: None  # do not open file dialogs or build the demo here
    dlg = wf.show_first_run()
    qtbot.addWidget(dlg)
    for name in ("demoButton", "newButton", "openButton"):
        assert dlg.findChild(QtWidgets.QPushButton, name) is not None
    dlg.chosen.disconnect()
    with qtbot.waitSignal(dlg.chosen) as blocker:
        dlg.findChild(QtWidgets.QPushButton, "demoButton").click()
    assert blocker.args == ["demo"]


def test_screenshots(qtbot, win, tmp_path):
    """Look at the loop: review, training plot, Models panel (docs/img/)."""
    out_dir = Path(__file__).resolve().parents[2] / "docs" / "img"
    if not os.environ.get("MASKLOOP_SCREENSHOTS"):
        pytest.skip("set MASKLOOP_SCREENSHOTS=1 to write docs/img/*.png")
    out_dir.mkdir(parents=True, exist_ok=True)
    wf, c, proj = win.loop, win.controller, win.controller.project
    add_fake_run(proj, "run-20240101-000000", 0.31)
    add_fake_run(proj, "run-20240102-000000", 0.47)
    wf.models_panel.refresh()
    wf.models_panel.make_active("run-20240102-000000")
    wf.segment_current()
    wait_idle(qtbot, wf)
    win.grab().save(str(out_dir / "review.png"))
    wf.models_panel.grab().save(str(out_dir / "models_panel.png"))


def test_open_demo_project(qtbot, win, tmp_path):
    pytest.importorskip("engine.demo")
    wf = win.loop
    assert wf.open_demo(tmp_path / "demo")
    c = win.controller
    assert c.project.root == (tmp_path / "demo").resolve()
    statuses = [c.status_of(it.id) for it in c.items]
    assert statuses.count("reviewed") >= 2 and "new" in statuses
    # opening it again reuses the project
    assert wf.open_demo(tmp_path / "demo")


def test_a_cancelled_run_is_resumed_from_the_model_menu(qtbot, win, tmp_path):
    wf, proj = win.loop, win.controller.project
    act = wf.act_resume_train
    assert not act.isEnabled()  # nothing to resume
    # a run that was cancelled after 1 of 3 epochs: last.pt, no model.pt (as the Trainer leaves it)
    run = proj.models_dir / "run-20260101-000000"
    run.mkdir(parents=True)
    (run / "last.pt").write_bytes(b"checkpoint")
    (run / "config.json").write_text(json.dumps({"train": {"epochs": 3}}))
    (run / "metrics.json").write_text(json.dumps({"status": "cancelled", "history": [{"epoch": 1}]}))
    finished = proj.models_dir / "run-20251231-000000"  # finished runs are not offered
    finished.mkdir()
    (finished / "last.pt").write_bytes(b"x")
    (finished / "model.pt").write_bytes(b"x")
    assert [r["run"] for r in proj.resumable_runs()] == [run.name]
    win.menu("model").aboutToShow.emit()  # the user opens the Model menu
    assert act.isEnabled()
    asked, commands = [], []
    wf.confirm_resume = lambda r: asked.append(r) or False
    assert not wf.resume_training() and not wf.runner.running  # the user said no
    assert asked[0] == {"run": run.name, "epochs_done": 1, "epochs": 3}
    fake = wf.runner._command_factory
    wf.runner._command_factory = lambda root, **kw: commands.append(kw) or fake(root, **kw)
    wf.confirm_resume = lambda r: True
    with qtbot.waitSignal(wf.runner.finished, timeout=30000) as blocker:
        assert wf.resume_training()
        assert not act.isEnabled() and wf.act_cancel_train.isEnabled()
        assert "Resuming run-20260101-000000 (stopped after 1 of 3 epochs)" in wf.training_view.title.text()
    assert blocker.args[0], blocker.args
    assert commands == [{"arch": None, "base": None, "epochs": None, "device": None,
                         "extra": ["--resume", run.name]}]
