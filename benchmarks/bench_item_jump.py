"""Jumping to a large item that is not decoded yet: how long the window is frozen.

A project of 16-bit zlib-compressed TIFFs (default 5 of 8192 x 8192) is opened in the real
main window (offscreen). From the first item the user jumps to the fourth, which is not a
neighbour, so the prefetcher has not decoded it. Two ways, in the same run:

- baseline: `set_current_item`, the synchronous switch that a list click made before (and
  that program switches still use): the decode runs on the GUI thread;
- MaskLoop: `request_item`, what a click, the slice slider and N do now: the decode runs on
  the prefetch worker and the window shows "loading …".

For each: time until the call returns, time until the item is shown, and the longest gap
between ticks of a 10 ms GUI-thread timer while it happens (how long the window did not
respond). Best of --repeats.

    python benchmarks/bench_item_jump.py [--size 8192] [--items 5] [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("MASKLOOP_NO_FIRST_RUN", "1")


def make_project(root: Path, n: int, size: int):
    import numpy as np
    import tifffile
    from engine.project import Project
    rng = np.random.default_rng(0)
    paths = []
    for k in range(n):
        img = (rng.random((size, size)) * 4000 + 1000 * k).astype(np.uint16)
        img[size // 8:size // 3, size // 8:size // 3] = 60000
        paths.append(root / f"slab{k}.tif")
        tifffile.imwrite(paths[-1], img, compression="zlib")
    proj = Project.create(root / "proj", ["rock"])
    proj.add(paths)
    return proj


def jump(app, win, target: str, how: str) -> dict:
    from PyQt5 import QtCore
    ctl = win.controller
    ticks: list[float] = []
    timer = QtCore.QTimer()
    timer.setInterval(10)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start()
    for _ in range(5):  # the timer is running
        app.processEvents()
        time.sleep(0.01)
    t0 = time.perf_counter()
    ticks.append(t0)
    (ctl.set_current_item if how == "sync" else ctl.request_item)(target)
    returned = time.perf_counter() - t0
    while ctl.item_id != target:
        app.processEvents()
        time.sleep(0.002)
    shown = time.perf_counter() - t0
    for _ in range(5):
        app.processEvents()
        time.sleep(0.01)
    ticks.append(time.perf_counter())
    timer.stop()
    gaps = [b - a for a, b in zip(ticks, ticks[1:])]
    return {"returned": returned, "shown": shown, "stall": max(gaps)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=8192)
    ap.add_argument("--items", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    from PyQt5 import QtWidgets
    app = QtWidgets.QApplication([])
    from gui.main_window import MainWindow
    with tempfile.TemporaryDirectory() as tmp:
        proj = make_project(Path(tmp), args.items, args.size)
        ids = [it.id for it in proj.items]
        win = MainWindow()
        win.resize(1200, 800)
        win.show()
        win.open_project(proj.root)
        ctl = win.controller
        best: dict = {}
        for _ in range(args.repeats):
            for how in ("sync", "async"):
                assert ctl.set_current_item(ids[0])
                ctl.nav.prefetch.clear()  # nothing decoded ahead: the worst case of a jump
                r = jump(app, win, ids[3], how)
                b = best.setdefault(how, r)
                for k in r:
                    b[k] = min(b[k], r[k])
        ctl.close_project(force=True)
    print(f"jump to a {args.size}x{args.size} 16-bit zlib TIFF that is not decoded yet (best of {args.repeats})")
    print(f"{'switch':48} {'call returns':>13} {'item shown':>11} {'longest freeze':>15}")
    for how, name in (("sync", "baseline: set_current_item (GUI-thread decode)"),
                      ("async", "MaskLoop: request_item (worker decode)")):
        r = best[how]
        print(f"{name:48} {r['returned'] * 1000:10.0f} ms {r['shown'] * 1000:8.0f} ms {r['stall'] * 1000:12.0f} ms")


if __name__ == "__main__":
    main()
