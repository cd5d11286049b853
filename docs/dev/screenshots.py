"""Screenshots of the window for the README and docs/img (offscreen, the demo project).

    QT_QPA_PLATFORM=offscreen python docs/dev/screenshots.py [OUT_DIR]

Builds the demo project in a temporary folder, opens it at 1280×720 and 1920×1080 and
saves what the window shows (a CT slice and a microscopy item with the review dock,
the empty window, the welcome dialog). Look at the PNGs before committing them.
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ["MASKLOOP_NO_FIRST_RUN"] = "1"
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main(out: Path) -> None:
    from PyQt5 import QtCore, QtWidgets
    from engine.demo import build_demo
    from gui.app import create_app
    from gui.main_window import MainWindow

    app = create_app()
    tmp = Path(tempfile.mkdtemp(prefix="maskloop-shots-"))
    QtCore.QSettings.setPath(QtCore.QSettings.NativeFormat, QtCore.QSettings.UserScope, str(tmp / "settings"))
    root = tmp / "demo"
    build_demo(root)
    out.mkdir(parents=True, exist_ok=True)

    def settle(ms: int = 300) -> None:
        end = QtCore.QDeadlineTimer(ms)
        while not end.hasExpired():
            app.processEvents(QtCore.QEventLoop.AllEvents, 20)

    def shot(win, name: str) -> None:
        settle()
        win.grab().save(str(out / name))
        print("wrote", out / name)

    empty = MainWindow()
    empty.default_layout()
    empty.resize(1280, 720)
    empty.show()
    shot(empty, "window_empty_1280x720.png")
    empty.close()

    for w, h in ((1280, 720), (1920, 1080)):
        win = MainWindow()
        win.resize(w, h)
        win.default_layout()
        win.show()
        win.open_project(root)
        settle()
        c = win.controller
        nuclei = next(it.id for it in c.items if it.name.startswith("nuclei") and c.status_of(it.id) == "reviewed")
        c.set_current_item(nuclei)
        c.set_selection([c.annotation.instances[0].id])
        win.canvas.set_tool("brush")
        shot(win, f"window_microscopy_{w}x{h}.png")
        ct = next(it.id for it in c.items if it.name.startswith("ct_stack"))
        c.set_current_item(ct)
        win.canvas.set_tool("select")
        shot(win, f"window_ct_stack_{w}x{h}.png")
        win.controller.close_project(force=True)
        win.close()
    # the welcome dialog (the demo project is a recent project now)
    from gui.dialogs.first_run import FirstRunDialog
    welcome = FirstRunDialog(None, recent=MainWindow(loop=False).recent_projects())
    welcome.show()
    shot(welcome, "welcome.png")
    welcome.close()

    # the Training dock's view, fed the events of a short run
    from gui.dialogs.training_view import TrainingView
    view = TrainingView()
    view.resize(760, 360)
    view.show()
    view.begin("Training r18fpn from coco on 8 reviewed item(s), 6 epoch(s), device cpu")
    view.on_start({"event": "start", "epochs": 6, "iters_per_epoch": 8, "device": "cpu",
                   "train_items": 7, "val_items": 1})
    for e in range(1, 7):
        for i in range(1, 9):
            view.on_iter({"event": "iter", "epoch": e, "iter": i, "loss": 2.2 / (1 + 0.6 * ((e - 1) * 8 + i)) ** 0.5,
                          "losses": {}, "lr": 0.01, "eta_s": (6 - e) * 40.0})
        view.on_epoch({"event": "epoch", "epoch": e, "metrics": {"mask_AP": 0.12 + 0.07 * e, "mask_AP50": 0.3 + 0.08 * e,
                                                                "acc50": 0.35 + 0.07 * e}, "checkpoint": "x"})
    settle()
    view.grab().save(str(out / "training.png"))
    print("wrote", out / "training.png")
    view.close()
    app.processEvents()


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "img")
