"""The Train dialog's time budget and "Start from" line, and the Models panel's time column
(issue 10): minutes chosen in the dialog reach TrainConfig through the real command line,
and the line names the weights engine.model.config.auto_base will load from a torch cache
made here (TORCH_HOME in a tmp folder: nothing real is read or downloaded)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from guihelpers import make_project  # noqa: E402

pytestmark = pytest.mark.gui

REVIEWED = {"a": "reviewed", "b": "reviewed", "c": "new"}


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty torch cache; `put(enum value)` makes a weights file appear in it."""
    from engine.model.weights import weights_file
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setenv("MASKLOOP_OFFLINE", "1")

    def put(weights):
        f = weights_file(weights)
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"only its name is checked here")
        return f
    return put


@pytest.fixture
def proj(tmp_path):
    return make_project(tmp_path / "p")


def fake_run(project, run, *, arch="r18fpn", seconds=None, minutes=None, acc=0.4):
    folder = project.models_dir / run
    folder.mkdir(parents=True)
    (folder / "model.pt").write_bytes(b"fake")
    (folder / "config.json").write_text(json.dumps({"schema": 1, "run": run, "arch": arch, "base": "scratch",
                                                    "train": {"epochs": 5, "minutes": minutes}}))
    (folder / "metrics.json").write_text(json.dumps({"schema": 1, "status": "done", "train_items": 4,
                                                     "val_items": 1, "seconds": seconds,
                                                     "best": {"mask_AP": 0.3, "mask_AP50": 0.5, "acc50": acc}}))
    return folder


def dialog(qtbot, project, gpus=()):
    from gui.dialogs.train_dialog import TrainDialog
    dlg = TrainDialog(project, None, statuses=REVIEWED, gpus=list(gpus))
    qtbot.addWidget(dlg)
    return dlg


def config_from_cli(project_root, opts, monkeypatch):
    """The TrainConfig `main.py train` builds from the command the GUI starts for `opts`."""
    import engine.model.train as train_mod
    from engine.cli import run
    from engine.errors import CancelledError
    from gui.loop.runner import train_command
    from gui.loop.training import runner_args
    seen = []

    def fake_train_project(proj, cfg, **kw):
        seen.append(cfg)
        raise CancelledError("stopped by the test before training")
    monkeypatch.setattr(train_mod, "train_project", fake_train_project)
    cmd = train_command(project_root, **runner_args(opts))
    assert run(cmd[cmd.index("train"):]) == 1 and len(seen) == 1
    return seen[0]


def test_a_time_budget_is_the_default_and_its_minutes_reach_train_config(qtbot, proj, torch_home, monkeypatch):
    from engine.cli.model_cmds import BUDGET_EPOCH_CAP
    dlg = dialog(qtbot, proj)
    assert dlg.by_minutes.isChecked() and dlg.minutes.isEnabled() and not dlg.epochs.isEnabled()
    opts = dlg.options()
    assert opts["minutes"] == 15 and opts["epochs"] is None and dlg.ok_button.isEnabled()
    dlg.minutes.setValue(7)
    cfg = config_from_cli(proj.root, dlg.options(), monkeypatch)
    assert cfg.minutes == 7 and cfg.epochs == BUDGET_EPOCH_CAP and cfg.base == "auto" and cfg.arch == "r18fpn_lite"
    # "or N epochs": no budget
    dlg.by_epochs.setChecked(True)
    dlg.epochs.setValue(3)
    assert not dlg.minutes.isEnabled() and dlg.epochs.isEnabled()
    cfg = config_from_cli(proj.root, dlg.options(), monkeypatch)
    assert cfg.minutes is None and cfg.epochs == 3
    # on a GPU a budget too, a shorter one
    gpu = dialog(qtbot, proj, gpus=["NVIDIA H200"])
    assert gpu.options()["minutes"] == 10 and gpu.options()["arch"] == "r50fpn"


def test_start_from_names_the_weights_auto_base_picks_and_why_not_coco(qtbot, proj, torch_home):
    from torchvision.models import resnet
    from torchvision.models.detection import mask_rcnn
    from engine.model.config import auto_base
    dlg = dialog(qtbot, proj)
    assert dlg.options()["base"] == "auto"
    text = dlg.start_from.text()
    assert auto_base("r18fpn") == "scratch" and "scratch (random weights)" in text
    assert "COCO weights exist for r50fpn, r50fpn_v2 only, not r18fpn_lite" in text
    assert "No ImageNet weights for resnet18 are in the torch cache either" in text
    dlg.set_options(arch="r50fpn")
    assert "COCO weights are not in the torch cache; nothing is downloaded" in dlg.start_from.text()
    # an ImageNet backbone in the cache: auto starts from it
    torch_home(resnet.ResNet18_Weights.IMAGENET1K_V1)
    dlg.set_options(arch="r18fpn")
    assert auto_base("r18fpn") == "imagenet"
    assert dlg.start_from.text().startswith("Uses: ImageNet backbone (resnet18)")
    # COCO weights in the cache: auto uses them for r50fpn
    torch_home(mask_rcnn.MaskRCNN_ResNet50_FPN_Weights.COCO_V1)
    dlg.set_options(arch="r50fpn")
    assert "COCO Mask R-CNN weights for r50fpn (from the torch cache)" in dlg.start_from.text()
    # scratch chosen by hand: no excuses needed
    dlg.set_options(base="scratch")
    assert dlg.start_from.text() == "Uses: scratch (random weights)"


def test_start_from_a_previous_run_or_a_checkpoint_file(qtbot, proj, torch_home, tmp_path):
    fake_run(proj, "run-20260101-000000", arch="r50fpn")
    dlg = dialog(qtbot, proj)
    assert dlg.base.findData("run-20260101-000000") >= 0
    dlg.set_options(base="run-20260101-000000")
    assert dlg.options()["arch"] == "r50fpn"        # a run keeps its architecture
    assert "the weights of run run-20260101-000000 (r50fpn)" in dlg.start_from.text()
    # "Checkpoint file…" asks for a file; a model.pt inside a run folder brings its architecture
    other = fake_run(proj, "elsewhere", arch="r18fpn").rename(tmp_path / "copied-run")
    dlg.pick_file = lambda: str(other / "model.pt")
    from gui.dialogs.train_dialog import CHECKPOINT_FILE
    k = dlg.base.findData(CHECKPOINT_FILE)
    dlg.base.setCurrentIndex(k)
    dlg.base.activated.emit(k)
    assert dlg.options()["base"] == str(other / "model.pt") and dlg.options()["arch"] == "r18fpn"
    assert f"checkpoint {other / 'model.pt'} (r18fpn)" in dlg.start_from.text() and dlg.ok_button.isEnabled()
    # cancelling the file dialog falls back to the automatic choice
    dlg.pick_file = lambda: ""
    k = dlg.base.findData(CHECKPOINT_FILE)
    dlg.base.setCurrentIndex(k)
    dlg.base.activated.emit(k)
    assert dlg.options()["base"] == "auto"


def test_models_panel_shows_training_time_and_budget(qtbot, proj):
    from gui.panels.models_panel import ModelsPanel
    fake_run(proj, "run-20260101-000000", seconds=750.0, minutes=15, acc=0.61)
    fake_run(proj, "run-20260102-000000", seconds=42.0, minutes=None)
    fake_run(proj, "run-20260103-000000")        # an old run: no time recorded
    panel = ModelsPanel()
    qtbot.addWidget(panel)
    panel.set_project(proj)
    col = panel.COLUMNS.index("Min")
    rows = {panel.table.item(r, 1).text(): r for r in range(panel.table.rowCount())}
    cell = lambda run, c: panel.table.item(rows[run], c).text()   # noqa: E731
    assert cell("run-20260101-000000", col) == "12/15"
    assert cell("run-20260102-000000", col) == "42 s"
    assert cell("run-20260103-000000", col) == "–"
    assert cell("run-20260101-000000", panel.COLUMNS.index("acc50")) == "0.61"   # beside mask AP
    assert cell("run-20260101-000000", panel.COLUMNS.index("AP")) == "0.30"
    tip = panel.table.item(rows["run-20260101-000000"], 1).toolTip()
    assert "trained: 12.5 min (time budget 15 min)" in tip


def test_training_view_takes_a_budgeted_runs_length_from_its_plan(qtbot):
    """A budgeted run starts with only a cap on epochs; the view shows the planned length
    once the iter events carry it, not the cap."""
    from gui.dialogs.training_view import TrainingView
    view = TrainingView()
    qtbot.addWidget(view)
    view.begin("test")
    view.on_start({"event": "start", "epochs": 10000, "iters_per_epoch": 4, "minutes": 15})
    assert view.epochs == 0 and view.plot.epochs_total == 0
    view.on_iter({"event": "iter", "epoch": 1, "iter": 1, "loss": 1.0, "eta_s": 800.0, "epochs": 10000})
    assert view.epochs == 0 and "epoch 1 " in view.status.text() + " "
    view.on_iter({"event": "iter", "epoch": 1, "iter": 4, "loss": 0.9, "eta_s": 700.0, "epochs": 6})
    assert view.epochs == 6 and view.plot.epochs_total == 6 and view.bar.maximum() == 24
    assert "epoch 1/6" in view.status.text()
    # by epochs: the start says the length
    view.begin("test")
    view.on_start({"event": "start", "epochs": 3, "iters_per_epoch": 4})
    assert view.epochs == 3 and view.bar.maximum() == 12
