"""Helpers for the GUI tests: a small project, and real mouse events on the canvas."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PyQt5 import QtCore, QtGui, QtWidgets

from engine.annotations import Instance, ItemAnnotation


def square(x0, y0, x1, y1, label="cell", **kw) -> Instance:
    """Instance covering pixels x0..x1-1, y0..y1-1."""
    return Instance(mask=np.ones((y1 - y0, x1 - x0), bool), x0=x0, y0=y0, label=label, **kw)


def disk(cx, cy, r, label="debris", **kw) -> Instance:
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    return Instance(mask=(xx * xx + yy * yy) <= r * r, x0=cx - r, y0=cy - r, label=label, **kw)


def make_project(root: Path, with_stack: bool = False):
    """A project with two 256x256 16-bit images (and optionally a 4-slice stack).

    Item 0 ("cells"): background 1000, a bright square 60..99 = 30000; instances
    A (square 20..50), B (square 40..70, over A), C (disk at 150,150 r 15, "debris"),
    D (4x4 at 200,30). Item 1 ("other"): no annotation.
    """
    import tifffile
    from engine.project import Project
    images = root / "images"
    images.mkdir(parents=True)
    a = np.full((256, 256), 1000, np.uint16)
    a[60:100, 60:100] = 30000
    a[150:160, 10:20] = 5000
    tifffile.imwrite(images / "cells.tif", a)
    b = np.full((256, 256), 2000, np.uint16)
    b[100:150, 100:150] = 20000
    tifffile.imwrite(images / "other.tif", b)
    paths = [images / "cells.tif", images / "other.tif"]
    if with_stack:
        z = np.stack([np.full((128, 160), -1000 + 100 * k, np.int16) for k in range(4)])
        z[:, 40:80, 40:80] = 400
        tifffile.imwrite(images / "scan.tif", z, photometric="minisblack")
        paths.append(images / "scan.tif")
    proj = Project.create(root / "proj", ["cell", "debris"])
    proj.add(paths)
    first = proj.items[0]
    ann = ItemAnnotation(first.id, 256, 256, [
        square(20, 20, 50, 50, id="A"), square(40, 40, 70, 70, id="B"),
        disk(150, 150, 15, id="C"), square(200, 30, 204, 34, id="D")], "reviewed")
    proj.save_annotation(ann)
    return proj


def open_window(qtbot, root):
    from gui.main_window import MainWindow
    win = MainWindow(loop=False)
    qtbot.addWidget(win)
    win.resize(1100, 800)
    win.show()
    qtbot.waitExposed(win)
    assert win.open_project(root)
    # a fixed zoom so that image pixels map to whole viewport pixels
    win.canvas.set_zoom(2.0)
    win.canvas.centerOn(128, 128)
    win.canvas.setFocus()
    QtWidgets.QApplication.processEvents()
    return win



# -- driving the canvas with real mouse events -----------------------------------------

def vp(win, x, y) -> QtCore.QPoint:
    """Viewport position of the centre of image pixel (x, y)."""
    p = win.canvas.mapFromScene(QtCore.QPointF(x + 0.5, y + 0.5))
    return p


def _send(win, kind, x, y, button=QtCore.Qt.LeftButton, buttons=None, mods=QtCore.Qt.NoModifier):
    view = win.canvas.viewport()
    pos = QtCore.QPointF(vp(win, x, y))
    if buttons is None:
        buttons = button if kind != QtCore.QEvent.MouseButtonRelease else QtCore.Qt.NoButton
    ev = QtGui.QMouseEvent(kind, pos, view.mapToGlobal(pos.toPoint()), button, buttons, mods)
    QtWidgets.QApplication.sendEvent(view, ev)


def press(win, x, y, mods=QtCore.Qt.NoModifier, button=QtCore.Qt.LeftButton):
    _send(win, QtCore.QEvent.MouseButtonPress, x, y, button=button, mods=mods)


def move(win, x, y, held=True):
    _send(win, QtCore.QEvent.MouseMove, x, y, button=QtCore.Qt.NoButton,
          buttons=QtCore.Qt.LeftButton if held else QtCore.Qt.NoButton)


def release(win, x, y, mods=QtCore.Qt.NoModifier):
    _send(win, QtCore.QEvent.MouseButtonRelease, x, y, mods=mods)


def click(win, x, y, mods=QtCore.Qt.NoModifier):
    press(win, x, y, mods)
    release(win, x, y, mods)


def double_click(win, x, y):
    press(win, x, y)
    release(win, x, y)
    _send(win, QtCore.QEvent.MouseButtonDblClick, x, y)
    release(win, x, y)


def drag(win, points):
    press(win, *points[0])
    for p in points[1:]:
        move(win, *p)
    release(win, *points[-1])


def key(qtbot, win, k, mods=QtCore.Qt.NoModifier):
    qtbot.keyClick(win.canvas, k, mods)


def snapshot(ann):
    """Everything about the instances, for exact comparisons."""
    return [(i.id, i.label, i.source, i.score, i.x0, i.y0, i.mask.copy()) for i in ann.instances]


def same(a, b) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if x[:6] != y[:6] or not np.array_equal(x[6], y[6]):
            return False
    return True


def full(inst, shape=(256, 256)):
    return inst.full_mask(shape)
