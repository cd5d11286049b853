"""Orthogonal views of a stack: how long the window is frozen while they fill, and what a
plane costs when the cursor moves.

A 16-bit TIFF stack (default 60 slices of 256 x 256, 20 instances per slice; the issue's
size is --slices 300 --size 512 --instances 50) is opened in the real main window
(offscreen) and the Orthogonal views dock is shown. Two ways, in the same run:

- baseline: reading every slice and annotation on the GUI thread (Project.load_image and
  load_annotation, what a plain implementation would do before drawing a plane): the window
  is frozen for all of it;
- MaskLoop: gui.stack_volume reads on a worker, nearest slices first, and the planes fill in.

For each: the time until every slice is in, and the longest gap between ticks of a 10 ms
GUI-thread timer meanwhile (how long the window did not respond). Then the time to draw
both planes for 20 random cursor positions (median, max).

    python benchmarks/bench_ortho_views.py [--slices 60] [--size 256] [--instances 20]
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


def make_project(root: Path, n: int, size: int, per_slice: int):
    import numpy as np
    import tifffile
    from engine.annotations import Instance, ItemAnnotation
    from engine.project import Project
    rng = np.random.default_rng(0)
    tifffile.imwrite(root / "stack.tif", rng.integers(0, 4000, (n, size, size)).astype(np.uint16),
                     photometric="minisblack")
    proj = Project.create(root / "proj", ["rock"])
    proj.add([root / "stack.tif"])
    for it in proj.items:
        insts = [Instance(mask=np.ones((12, 12), bool), x0=int(x), y0=int(y), label="rock", object_id=f"o{k}")
                 for k, (x, y) in enumerate(rng.integers(0, size - 12, (per_slice, 2)))]
        proj.save_annotation(ItemAnnotation(it.id, size, size, insts, "new"))
    return proj


class Ticks:
    def __init__(self):
        from PyQt5 import QtCore
        self.times: list[float] = []
        self.timer = QtCore.QTimer()
        self.timer.setInterval(10)
        self.timer.timeout.connect(lambda: self.times.append(time.perf_counter()))

    def __enter__(self):
        self.timer.start()
        self.times.append(time.perf_counter())
        return self

    def __exit__(self, *exc):
        self.times.append(time.perf_counter())
        self.timer.stop()

    @property
    def longest(self) -> float:
        return max(b - a for a, b in zip(self.times, self.times[1:]))


def pump(app, seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.002)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slices", type=int, default=60)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--instances", type=int, default=20)
    args = ap.parse_args()
    import numpy as np
    from PyQt5 import QtWidgets
    app = QtWidgets.QApplication([])
    from gui.main_window import MainWindow
    with tempfile.TemporaryDirectory() as tmp:
        proj = make_project(Path(tmp), args.slices, args.size, args.instances)
        ids = [it.id for it in proj.items]
        win = MainWindow()
        win.resize(1400, 900)
        win.show()
        win.open_project(proj.root)
        ctl = win.controller
        ctl.set_current_item(ids[len(ids) // 2])
        pump(app, 3.0)  # the stack's object index and instance counts settle first
        with Ticks() as base:
            t0 = time.perf_counter()
            for iid in ids:
                proj.load_image(iid)
                proj.load_annotation(iid)
            base_total = time.perf_counter() - t0
        panel = win.stack_tools.ortho
        with Ticks() as ours:
            t0 = time.perf_counter()
            win.docks["orthogonal"].show()
            while not (panel.volume.n and panel.volume.done == panel.volume.n):
                app.processEvents()
                time.sleep(0.002)
            ours_total = time.perf_counter() - t0
            pump(app, 0.5)  # the last fill-in render
        rng = np.random.default_rng(1)
        renders = []
        for _ in range(20):
            panel.pos = tuple(int(v) for v in rng.integers(0, args.size, 2))
            t = time.perf_counter()
            panel.render()
            renders.append(time.perf_counter() - t)
        ctl.close_project(force=True)
    print(f"orthogonal views of {args.slices} slices of {args.size}x{args.size} uint16, "
          f"{args.instances} instances per slice")
    print(f"{'':58} {'all slices in':>14} {'longest freeze':>15}")
    print(f"{'baseline: read every slice on the GUI thread':58} {base_total * 1000:11.0f} ms "
          f"{base.longest * 1000:12.0f} ms")
    print(f"{'MaskLoop: worker reads, planes fill in':58} {ours_total * 1000:11.0f} ms "
          f"{ours.longest * 1000:12.0f} ms")
    print(f"both planes at a new cursor position: median {np.median(renders) * 1000:.0f} ms, "
          f"max {max(renders) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
