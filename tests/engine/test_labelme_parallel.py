"""A labelme file with many shapes is converted by a few threads (mask PNG decoding
releases the GIL): the result equals a one-by-one conversion, instance for instance, and
a bad shape's error is the one a plain loop meets first."""
from __future__ import annotations

from collections import Counter

import cv2
import numpy as np
import pytest

from engine.annotations import Instance, ItemAnnotation
from engine.errors import FormatError
from engine.formats import labelme as lm


def _shapes(n: int, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    insts = []
    for k in range(n):
        r = int(rng.integers(3, 25))
        m = np.zeros((2 * r + 1, 2 * r + 1), np.uint8)
        cv2.ellipse(m, (r, r), (r, max(1, r // 2)), float(rng.uniform(0, 180)), 0, 360, 1, -1)
        insts.append(Instance(mask=m.astype(bool), x0=int(rng.integers(0, 900)), y0=int(rng.integers(0, 700)),
                              label="cell" if k % 3 else "debris", score=float(rng.uniform()), source="model"))
    shapes = lm.annotation_to_labelme(ItemAnnotation("x", 800, 1000, insts), "x.tif")["shapes"]
    # the other kinds of shapes in between: polygons, group_id joins, ignored and empty ones
    shapes.insert(5, {"label": "cell", "points": [[10, 10], [40, 12], [30, 50]], "shape_type": "polygon",
                      "group_id": 7})
    shapes.insert(700, {"label": "cell", "points": [[100, 100], [140, 102], [120, 150]],
                        "shape_type": "polygon", "group_id": 7})
    shapes.insert(300, {"label": "__ignore__", "points": [[1, 1], [5, 5]], "shape_type": "rectangle"})
    shapes.insert(900, {"label": "cell", "points": [[3, 3]], "shape_type": "point"})
    return shapes


def _convert(shapes, monkeypatch, parallel: bool):
    monkeypatch.setattr(lm, "PARALLEL_MIN_SHAPES", 1 if parallel else 1 << 30)
    stats = Counter()
    out = lm.shapes_to_instances(shapes, 800, 1000, path="a.json", stats=stats)
    return out, stats


def test_threaded_conversion_equals_the_plain_loop(monkeypatch):
    shapes = _shapes(1500)
    one, s1 = _convert(shapes, monkeypatch, parallel=False)
    many, s2 = _convert(shapes, monkeypatch, parallel=True)
    assert s1 == s2 and s1["joined by group_id"] == 1 and s1["ignored __ignore__"] == 1
    assert len(one) == len(many) > 1400
    for a, b in zip(one, many):
        assert (a.label, a.score, a.source, a.bbox) == (b.label, b.score, b.source, b.bbox)
        assert a.id == b.id or a.source == "imported"   # a plain labelme shape gets a new id
        assert np.array_equal(a.mask, b.mask)


@pytest.mark.parametrize("parallel", [False, True])
def test_the_first_bad_shape_is_reported(monkeypatch, parallel):
    shapes = _shapes(1200, seed=1)
    bad_png = dict(shapes[1100], mask="iVBORw0KGgoAAAANSUhEUg==")       # a cut PNG, late
    shapes[1100] = bad_png
    shapes[600] = dict(shapes[600], group_id="seven")                    # converts; wrong group_id
    with pytest.raises(FormatError) as e:
        _convert(shapes, monkeypatch, parallel)
    assert e.value.field == "shapes[600].group_id"
    shapes[600] = dict(shapes[600], group_id=None)
    with pytest.raises(FormatError) as e:
        _convert(shapes, monkeypatch, parallel)
    assert e.value.field == "shapes[1100].mask"
