"""The canvas draws big images from resolution levels filled tile by tile when shown:
which level a zoom uses, that tiles equal the whole-image mapping, and that opening,
zooming and brushing convert only what the screen shows."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from PyQt5 import QtCore, QtWidgets

from engine.annotations import Instance
from engine.imageio import to_uint8
from gui.canvas.image_levels import ImageLevels
from gui.canvas.levels import EAGER_PIXELS, TILE, Level, level_box, level_for
from gui.canvas.overlay import FILL, OUTLINE, Overlay, palette, slot
from guihelpers import drag

pytestmark = pytest.mark.gui
Qt = QtCore.Qt


def test_level_for_a_zoom():
    assert [level_for(s) for s in (8.0, 1.0, 0.75, 0.5, 0.3, 0.25, 0.2, 0.061, 1 / 64)] == \
        [1, 1, 1, 2, 2, 4, 4, 16, 64]
    assert level_box(4, (5, 0, 13, 9), (10, 13)) == (1, 0, 4, 3)


def test_level_fills_each_stale_tile_once():
    calls = []
    lv = Level(1, (600, 1000), fill=lambda lv, *box: calls.append(box))
    lv.ensure(10, 10, 20, 20)
    assert calls == [(0, 0, 256, 256)]
    lv.ensure(0, 0, 300, 100)                # the first tile is filled: only its neighbour
    assert calls[1:] == [(256, 0, 512, 256)]
    lv.ensure(0, 520, 1000, 600)             # a row of stale tiles: one call
    assert calls[2:] == [(0, 512, 1000, 600)]
    assert lv.filled_tiles == 6
    lv.invalidate((300, 0, 301, 1))
    assert not lv.is_filled(256, 0, 512, 256) and lv.is_filled(0, 0, 256, 256)


def test_image_levels_equal_the_whole_image_mapping():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 40000, (384, 1032)).astype(np.uint16)
    win = (12000.0, 20000.0)
    lv = ImageLevels(img, win)
    lv.level(1).ensure_all()
    assert np.array_equal(lv.level(1).buf, to_uint8(img, window=win))
    lv.level(2).ensure_all()     # tiles of 256 level pixels: 2 x 3 of them, reduced one by one
    whole = cv2.resize(img, (516, 192), interpolation=cv2.INTER_AREA)
    assert np.array_equal(lv.level(2).buf, to_uint8(whole, window=win))
    # a new window re-maps the kept reduced data: same result as mapping from scratch
    lv.set_window((5000.0, 8000.0))
    assert not lv.level(2).is_filled(0, 0, 1, 1)
    lv.level(2).ensure_all()
    assert np.array_equal(lv.level(2).buf, to_uint8(whole, window=(5000.0, 8000.0)))
    with pytest.raises(ValueError):
        ImageLevels(img, None)   # 16-bit data needs a window


def test_a_big_fill_is_previewed_from_a_sample_then_refined_to_the_exact_level(monkeypatch):
    from gui.canvas import image_levels
    monkeypatch.setattr(image_levels, "PREVIEW_PIXELS", 100 * 100)
    rng = np.random.default_rng(4)
    img = rng.integers(0, 40000, (701, 1103)).astype(np.uint16)
    win = (20000.0, 30000.0)
    lv = ImageLevels(img, win)
    called = []
    lv.on_rough = lambda: called.append(1)
    lv.level(4).ensure_all()
    # the preview: the stored pixel at each level pixel's centre (the last, partial one: the edge)
    ys, xs = np.minimum(np.arange(176) * 4 + 2, 700), np.minimum(np.arange(276) * 4 + 2, 1102)
    assert np.array_equal(lv.level(4).buf, to_uint8(img[np.ix_(ys, xs)], window=win))
    assert lv.rough() and called
    boxes = []
    while (box := lv.refine()) is not None:
        boxes.append(box)
    assert len(boxes) == 2 and boxes[-1] == (1024, 0, 1103, 701)   # 1 x 2 tiles of 256
    # ... to exactly what is drawn without a preview (small fills are never previewed)
    monkeypatch.setattr(image_levels, "PREVIEW_PIXELS", 1 << 24)
    ref = ImageLevels(img, win)
    ref.level(4).ensure_all()
    assert not ref.rough() and not np.array_equal(ref.level(4).buf, to_uint8(img[np.ix_(ys, xs)], window=win))
    assert not lv.rough() and np.array_equal(lv.level(4).buf, ref.level(4).buf)
    # the exact reduction is kept: a new window maps it at once, nothing is previewed again
    monkeypatch.setattr(image_levels, "PREVIEW_PIXELS", 100 * 100)
    lv.set_window((10000.0, 5000.0))
    ref.set_window((10000.0, 5000.0))
    lv.level(4).ensure_all()
    ref.level(4).ensure_all()
    assert not lv.rough() and np.array_equal(lv.level(4).buf, ref.level(4).buf)


def _instances(shape, n, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        r = int(rng.integers(6, 40))
        cx, cy = int(rng.integers(r, shape[1] - r)), int(rng.integers(r, shape[0] - r))
        m = np.zeros((2 * r + 1, 2 * r + 1), np.uint8)
        cv2.circle(m, (r, r), r, 1, -1)
        out.append(Instance(mask=m.astype(bool), x0=cx - r, y0=cy - r, label="cell", id=f"{k:08x}"))
    return out


def test_big_overlay_renders_only_shown_tiles_and_tiles_match_a_full_render():
    shape = (2600, 2100)   # larger than EAGER_PIXELS: rendered when shown
    assert shape[0] * shape[1] > EAGER_PIXELS
    insts = _instances(shape, 150)
    ov = Overlay(*shape)
    ov.set_palette(palette([(255, 0, 0)], 0.5))
    ov.render(insts, lambda i: 0, set(), set())
    assert ov.level(1).filled_tiles == 0
    ov.ensure(1, 300, 300, 310, 310)
    assert ov.level(1).filled_tiles == 1
    # the same content redrawn in small (eager) pieces, which cut through tiles
    ref = Overlay(*shape)
    ref.set_content(insts, lambda i: 0, set(), set())
    for y in range(0, shape[0], 700):
        for x in range(0, shape[1], 900):
            ref.redraw((x, y, x + 900, y + 700))
    assert ref.level(1).filled_tiles == 0   # eager redraws do not go through the tile fill
    tiled = ov.buf
    assert np.array_equal(tiled, ref.level(1).buf)
    covered = np.zeros(shape, bool)
    for i in insts:
        covered[i.y0:i.y0 + i.height, i.x0:i.x0 + i.width] |= i.mask
    assert np.array_equal(tiled != 0, covered)
    assert set(np.unique(tiled)) == {0, slot(0) + FILL, slot(0) + OUTLINE}


def test_coarse_overlay_level_samples_level_pixel_centres():
    shape = (1000, 1200)
    insts = _instances(shape, 60, seed=3)
    ov = Overlay(*shape)
    ov.render(insts, lambda i: 0, set(), set())
    full = ov.buf
    ov.level(4).ensure_all()
    coarse = ov.level(4).buf
    assert coarse.shape == (250, 300)
    assert np.array_equal(coarse != 0, full[2::4, 2::4] != 0)
    # outlines are one level pixel wide: every drawn instance keeps inside pixels too
    assert (coarse == slot(0) + OUTLINE).any() and (coarse == slot(0) + FILL).any()


def test_brush_preview_touches_only_the_tiles_under_the_dab():
    shape = (3000, 3000)
    ov = Overlay(*shape)
    ov.render(_instances(shape, 100), lambda i: 0, set(), set())
    ov.level(8)
    dab = np.zeros((11, 11), np.uint8)
    cv2.circle(dab, (5, 5), 5, 1, -1)
    ov.paint_mask(dab.view(bool), 1000, 1000, 9)
    assert ov.level(1).filled_tiles == 1 and ov.level(8).filled_tiles == 1
    assert ov.level(1).buf[1005, 1005] == 9 and ov.level(8).buf[125, 125] == 9
    assert ov.level(1).stale.sum() == ov.level(1).stale.size - 1


# -- in the window ------------------------------------------------------------------------

@pytest.fixture
def big_project(tmp_path):
    """A 3072 x 4096 16-bit image with 400 instances."""
    import tifffile
    from engine.annotations import ItemAnnotation
    from engine.project import Project
    shape = (3072, 4096)
    rng = np.random.default_rng(5)
    img = (1000 + rng.integers(0, 500, shape)).astype(np.uint16)
    insts = _instances(shape, 400, seed=7)
    for i in insts:
        img[i.y0:i.y0 + i.height, i.x0:i.x0 + i.width][i.mask] += 20000
    (tmp_path / "images").mkdir()
    tifffile.imwrite(tmp_path / "images" / "big.tif", img)
    proj = Project.create(tmp_path / "proj", ["cell"])
    proj.add([tmp_path / "images" / "big.tif"])
    proj.save_annotation(ItemAnnotation(proj.items[0].id, shape[0], shape[1], insts, "reviewed"))
    return proj


def _tiles_in_view(cv) -> int:
    r = cv.mapToScene(cv.viewport().rect()).boundingRect()
    return (int(r.width()) // TILE + 2) * (int(r.height()) // TILE + 2)


def test_big_image_opens_zooms_and_brushes_converting_only_what_is_shown(qtbot, big_project, monkeypatch):
    from engine.imageio import tiff
    from gui.main_window import MainWindow
    monkeypatch.setattr(tiff, "MAP_MIN_BYTES", 0)   # the image is shown from a map of the file
    win = MainWindow(loop=False)
    qtbot.addWidget(win)
    win.resize(1100, 800)
    win.show()
    qtbot.waitExposed(win)
    try:
        assert win.open_project(big_project.root)   # opens fitted to the view
        assert not win.controller.image.flags.writeable and not win.controller.image.flags.owndata
        cv = win.canvas
        QtWidgets.QApplication.processEvents()
        cv.viewport().repaint()
        f = level_for(cv.zoom)
        assert f >= 4
        assert (cv.image_layer.last_level, cv.overlay_layer.last_level) == (f, f), \
            (cv.image_layer.paint_count, cv.isVisible(), cv.viewport().size(), cv.zoom)
        img_levels = cv.image_levels
        # the fit view was drawn from level f alone: no full-size conversion, no full render
        assert img_levels.levels() == [f]
        assert cv.overlay.level(1).filled_tiles == 0
        total = img_levels.level(f).stale.size
        assert img_levels.level(f).filled_tiles == total

        cv.set_zoom(1.0)
        cv.centerOn(2048, 1536)
        cv.viewport().repaint()
        assert cv.image_layer.last_level == 1 and cv.overlay_layer.last_level == 1
        shown = _tiles_in_view(cv)
        level1 = img_levels.level(1)
        assert 0 < level1.filled_tiles <= shown < level1.stale.size // 4
        ov1 = cv.overlay.level(1)
        assert 0 < ov1.filled_tiles <= shown

        image_tiles, overlay_tiles = level1.filled_tiles, ov1.filled_tiles
        cv.setFocus()
        qtbot.keyClick(cv, Qt.Key_B)
        assert cv.tool.name == "brush"
        cv.brush_size = 9
        win.controller.set_selection([])
        n = len(win.controller.annotation.instances)
        drag(win, [(2000, 1500), (2040, 1510), (2060, 1540)])
        QtWidgets.QApplication.processEvents()
        assert len(win.controller.annotation.instances) == n + 1
        # the stroke converted no image tile and rendered no overlay tile off screen
        assert level1.filled_tiles == image_tiles
        assert ov1.filled_tiles == overlay_tiles
        assert ov1.buf[1505, 2020] != 0
    finally:
        win.controller.close_project(force=True)


def test_the_first_paint_previews_then_settles_to_the_exact_picture(qtbot, big_project, monkeypatch):
    from gui.canvas import image_levels
    from gui.main_window import MainWindow
    monkeypatch.setattr(image_levels, "PREVIEW_PIXELS", 512 * 512)
    win = MainWindow(loop=False)
    qtbot.addWidget(win)
    win.resize(1100, 800)
    win.show()
    qtbot.waitExposed(win)
    try:
        refined = []
        real_refine = ImageLevels.refine
        monkeypatch.setattr(ImageLevels, "refine", lambda self: refined.append(real_refine(self)) or refined[-1])
        assert win.open_project(big_project.root)
        cv = win.canvas
        QtWidgets.QApplication.processEvents()
        cv.viewport().repaint()
        f = cv.image_layer.last_level
        assert f >= 4
        qtbot.waitUntil(lambda: cv.settled, timeout=60000)
        assert any(b is not None for b in refined)   # tiles were drawn from a sample first
        cv.viewport().repaint()
        monkeypatch.setattr(image_levels, "PREVIEW_PIXELS", 1 << 24)
        ref = ImageLevels(win.controller.image, win.controller.window)
        ref.level(f).ensure_all()
        assert not ref.rough() and np.array_equal(cv.image_levels.level(f).buf, ref.level(f).buf)
    finally:
        win.controller.close_project(force=True)


def test_a_stroke_keeps_only_the_pixels_around_it_and_equals_a_full_image_mask():
    from gui.canvas.tools.brush import StrokePixels
    H, W = 16384, 16384
    sp = StrokePixels(H, W)
    rng = np.random.default_rng(8)
    ref = {}
    x, y = 9000, 9000
    for _ in range(200):   # a wandering stroke of 15 px dabs, also off the edge of the margin
        x, y = int(np.clip(x + rng.integers(-40, 41), 0, W - 15)), int(np.clip(y + rng.integers(-40, 41), 0, H - 15))
        m = np.zeros((15, 15), np.uint8)
        cv2.circle(m, (7, 7), 7, 1, -1)
        sp.add(m.view(bool), x, y)
        ref[(x, y)] = m.view(bool)
    xs, ys = [k[0] for k in ref], [k[1] for k in ref]
    x0, y0, x1, y1 = min(xs), min(ys), max(xs) + 15, max(ys) + 15
    full = np.zeros((y1 - y0, x1 - x0), bool)
    for (px, py), m in ref.items():
        full[py - y0:py - y0 + 15, px - x0:px - x0 + 15] |= m
    assert np.array_equal(sp.crop(x0, y0, x1, y1), full)
    assert sp.buf.size <= (y1 - y0 + 2 * sp.MARGIN) * (x1 - x0 + 2 * sp.MARGIN) < H * W // 100
    edge = StrokePixels(100, 80)   # at the image corner the margin is cut by the image
    edge.add(np.ones((3, 3), bool), 77, 97)
    assert edge.buf.shape == (100, 80) and edge.crop(77, 97, 80, 100).all()
