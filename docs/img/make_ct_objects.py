"""Regenerates docs/img/ct_objects.png: a CT-like stack whose rocks are 3-D objects, with the
grouped image list, an object's extent and neighbour outlines, and the orthogonal views.

    QT_QPA_PLATFORM=offscreen python docs/img/make_ct_objects.py [PROJECT_DIR] [--out PNG]

With PROJECT_DIR holding a project (e.g. from `python main.py demo DIR`) its first stack is
shown; otherwise a 48-slice stack of ellipsoidal rocks (0.6 x 0.6 x 1.5 mm voxels) is written
to a temporary folder and its rock sections are linked into 3-D objects by engine.objects.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def rock_stack(folder: Path, n: int = 48, size: int = 256, seed: int = 3):
    """A stack of rocks in a matrix; returns the project with linked rock instances."""
    import tifffile
    from scipy import ndimage
    from engine.annotations import Instance, ItemAnnotation
    from engine.geometry import VoxelGeometry
    from engine.project import Project
    rng = np.random.default_rng(seed)
    dz, dy, dx = 1.5, 0.6, 0.6
    z, y, x = np.mgrid[0:n, 0:size, 0:size].astype(np.float32)
    bodies = np.zeros((n, size, size), np.int32)
    for k in range(1, 15):
        c = rng.uniform([6, 30, 30], [n - 6, size - 30, size - 30])
        r = rng.uniform(6, 16, 3) / np.array([dz, dy, dx])  # radii in mm -> voxels
        inside = ((z - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((x - c[2]) / r[2]) ** 2 <= 1
        bodies[inside & (bodies == 0)] = k
    vol = rng.normal(300, 40, bodies.shape)
    for k in range(1, bodies.max() + 1):
        vol[bodies == k] = rng.uniform(1300, 2300) + rng.normal(0, 60, int((bodies == k).sum()))
    vol = ndimage.gaussian_filter(vol, (0.6, 1.0, 1.0)).astype(np.int16)
    img = folder / "images" / "core_scan.tif"
    img.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(img, vol, photometric="minisblack")
    proj = Project.create(folder / "core_project", ["rock"])
    proj.add([img])
    proj.sources[0] = dataclasses.replace(proj.sources[0], geometry=VoxelGeometry(spacing=(dz, dy, dx)))
    proj.save()
    for it in proj.items:  # each slice's rock sections as 2-D instances, no objects yet
        sl = bodies[it.slice]
        insts = [Instance.from_full_mask(sl == k, "rock") for k in np.unique(sl[sl > 0])]
        proj.save_annotation(ItemAnnotation(it.id, size, size, insts, "reviewed" if it.slice % 3 else "new"))
    from engine.objects import link_project
    print("linked:", link_project(proj))  # the engine's linker makes the 3-D objects
    return Project.open(proj.root)


def pick_object(proj, slices, k, ann):
    """A sizeable object of slice k whose outline changes most on the neighbouring slices."""
    near = [proj.load_annotation(slices[j].id) for j in (k - 1, k + 1) if 0 <= j < len(slices)]
    best, score = None, -1.0
    for inst in ann.instances:
        if not inst.object_id or inst.area < 150:
            continue
        areas = [sum(i.area for i in a.instances if i.object_id == inst.object_id) for a in near]
        s = sum(abs(a - inst.area) for a in areas) / inst.area
        if s > score:
            best, score = inst, s
    return best


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("project", nargs="?")
    ap.add_argument("--out", default=str(ROOT / "docs" / "img" / "ct_objects.png"))
    args = ap.parse_args()
    from PyQt5 import QtCore, QtWidgets
    from engine.project import Project
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(["maskloop"])
    tmp = tempfile.TemporaryDirectory()
    proj = Project.open(args.project) if args.project else rock_stack(Path(tmp.name))
    from gui.main_window import MainWindow
    QtCore.QSettings.setPath(QtCore.QSettings.IniFormat, QtCore.QSettings.UserScope, tmp.name)
    QtCore.QSettings.setPath(QtCore.QSettings.NativeFormat, QtCore.QSettings.UserScope, tmp.name)
    win = MainWindow()
    win.resize(1500, 900)
    win.show()
    win.open_project(proj.root)
    stack = next(s for s, src in enumerate(proj.sources) if src.n_slices > 1)
    slices = [it for it in proj.items if it.source == stack]
    ctl = win.controller
    drawn = [it for it in slices if proj.annotation_path(it.id).exists()] or slices
    mid = drawn[len(drawn) // 2]  # a slice with objects on it
    ctl.set_current_item(mid.id)
    target = pick_object(proj, slices, slices.index(mid), ctl.annotation)
    win.docks["orthogonal"].show()
    win.actions["colour by instance"].setChecked(True)  # one colour per 3-D object
    for name in ("window", "review", "models"):  # room for the orthogonal views
        if name in win.docks:
            win.docks[name].hide()
    panel = win.images_panel
    panel.tree.expand(panel.proxy.mapFromSource(panel.model.stack_index(mid.id)))
    ortho = win.stack_tools.ortho
    for _ in range(400):
        app.processEvents()
        if ortho.volume.n and ortho.volume.done == ortho.volume.n:
            break
        QtCore.QThread.msleep(10)
    docks = [win.docks[n] for n in ("labels", "instances", "orthogonal")]
    win.resizeDocks(docks, [70, 170, 560], QtCore.Qt.Vertical)
    win.resizeDocks([win.docks["orthogonal"]], [420], QtCore.Qt.Horizontal)
    for _ in range(20):
        app.processEvents()
    win.canvas.fit()
    if target is not None:
        ctl.set_selection([target.id])
        cy, cx = (int(v) for v in np.argwhere(target.mask).mean(axis=0))
        ortho.set_position(target.x0 + cx, target.y0 + cy)
    if not args.project:
        ctl.set_window(900, 2000)  # matrix texture and rocks
    for _ in range(50):
        app.processEvents()
        QtCore.QThread.msleep(10)
    win.grab().save(args.out)
    print(f"wrote {args.out}; status: {win.stack_tools.object_label.text()}")
    ctl.close_project(force=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
