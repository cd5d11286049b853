"""engine.editing: edit intents → changes (no Qt), and engine.history's undo patches."""
import numpy as np

from engine import editing
from engine.annotations import Instance, ItemAnnotation
from engine.history import build_and_apply, replay


def square(x0, y0, x1, y1, **kw):
    return Instance(mask=np.ones((y1 - y0, x1 - x0), bool), x0=x0, y0=y0, label="cell", **kw)


def stroke(x0, y0, w=5, h=5):
    return np.ones((h, w), bool), x0, y0


def test_a_stroke_away_from_the_selection_starts_a_new_instance():
    a = square(10, 10, 30, 30, id="A")
    ann = ItemAnnotation("i", 100, 100, [a])
    far = editing.brush_stroke(ann, [a], *stroke(70, 70), "cell")
    assert [ch.old for ch in far.changes] == [None] and far.select != ["A"]
    near = editing.brush_stroke(ann, [a], *stroke(30, 12), "cell")   # adjacent to A's right edge
    assert near.changes[0].old is a and near.select is None
    extended = editing.brush_stroke(ann, [a], *stroke(70, 70), "cell", extend=True)  # Shift
    assert extended.changes[0].old is a
    ops, _region, _s = build_and_apply(ann, extended.changes)
    assert ann.find("A").mask.sum() == 400 + 25
    replay(ann, ops, forward=False)
    assert ann.find("A").mask.sum() == 400


def test_wand_tolerance_follows_the_displayed_range():
    ct = np.zeros((8, 8), np.uint16)
    ct[0, 0] = 25000
    assert editing.wand_tolerance(0.1, (12500.0, 25000.0), ct) == 2500.0
    assert editing.wand_tolerance(0.1, None, ct) == 2500.0          # no window: the value range
    assert editing.wand_tolerance(0.1, None, ct.astype(np.uint8)) == 25.5


def test_wand_finds_a_noisy_object_on_a_wide_range_image():
    rng = np.random.default_rng(0)
    img = rng.normal(2000, 300, (64, 64)).astype(np.float32)
    img[20:40, 20:40] = rng.normal(20000, 300, (20, 20))
    ann = ItemAnnotation("i", 64, 64, [])
    tol = editing.wand_tolerance(0.1, (11000.0, 25000.0), img)
    edit = editing.magic_wand(ann, img, [], 30, 30, tol, "cell")
    assert edit.changes[0].new.mask.sum() == 400                    # the whole square
    small = editing.magic_wand(ann, img, [], 30, 30, 50.0, "cell")    # the old raw default
    assert small.changes[0].new.mask.sum() < 20


def test_merge_needs_two_and_split_cuts():
    a, b = square(0, 0, 10, 10, id="A"), square(10, 0, 20, 10, id="B")
    assert not editing.merge([a]) and editing.merge([a]).message
    m = editing.merge([a, b])
    assert len(m.changes) == 3 and m.changes[-1].new.mask.sum() == 200
    s = editing.split([m.changes[-1].new], [(10, -1), (10, 11)])
    assert len([c for c in s.changes if c.old is None]) == 1
