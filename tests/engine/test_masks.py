import numpy as np
import pytest
from pycocotools import mask as coco_mask

from engine import masks
from engine.annotations import Instance
from engine.errors import FormatError


def _blob():
    m = np.zeros((40, 50), bool)
    m[5:30, 8:40] = True
    m[12:20, 15:25] = False  # a hole
    return m


def test_rle_round_trip_and_uncompressed():
    m = _blob()
    rle = masks.rle_encode(m)
    assert isinstance(rle["counts"], str)
    assert np.array_equal(masks.rle_decode(rle), m)
    # uncompressed (list counts, column-major) as COCO iscrowd annotations use
    flat = m.T.flatten().astype(np.uint8)
    counts, cur, run = [], 0, 0
    for v in flat:
        if v == cur:
            run += 1
        else:
            counts.append(run)
            cur, run = v, 1
    counts.append(run)
    assert np.array_equal(masks.rle_decode({"size": [40, 50], "counts": counts}), m)


def test_rle_decode_rejects_junk():
    with pytest.raises(FormatError, match="ann.json: segmentation"):
        masks.rle_decode({"size": [4, 4], "counts": [1, 2]}, "ann.json", "segmentation")
    with pytest.raises(FormatError):
        masks.rle_decode({"counts": "abc"})


def test_polygons_match_pycocotools():
    poly = [[2, 2, 30, 3, 25, 20, 4, 18]]
    m = masks.polygons_to_mask(poly, 25, 35)
    ref = coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects(poly, 25, 35))).astype(bool)
    assert np.array_equal(m, ref)
    with pytest.raises(FormatError):
        masks.polygons_to_mask([[1, 2, 3]], 5, 5)


def test_mask_to_polygons_outlines_each_part():
    m = np.zeros((30, 30), bool)
    m[2:10, 2:10] = True
    m[20:25, 20:28] = True
    polys = masks.mask_to_polygons(m)
    assert len(polys) == 2
    back = masks.polygons_to_mask(polys, 30, 30)
    assert (back & m).sum() / (back | m).sum() > 0.6  # polygons are an approximation


def test_png_b64_round_trip_and_errors():
    m = _blob()
    assert np.array_equal(masks.b64_to_mask(masks.mask_to_b64(m)), m)
    with pytest.raises(FormatError, match="x.json: shapes\\[0\\]"):
        masks.b64_to_mask("not base64!!", "x.json", "shapes[0]")


def test_fill_holes_keeps_border_background():
    m = _blob()
    filled = masks.fill_holes(m)
    assert filled[12:20, 15:25].all()
    assert not filled[0, 0] and filled.sum() == 25 * 32


def test_merge_and_split_are_inverse_on_disjoint_parts():
    a = Instance(np.ones((5, 5), bool), 0, 0, "rock")
    b = Instance(np.ones((5, 5), bool), 10, 0, "rock")
    merged = masks.merge_instances([a, b])
    assert merged.area == 50 and merged.bbox == (0, 0, 15, 5)
    full = np.zeros((20, 20), bool)
    full[2:12, 2:18] = True
    inst = Instance.from_full_mask(full, "rock")
    pieces = masks.split_instance(inst, np.array([[10, 0], [10, 19]]))
    assert len(pieces) == 2
    assert sum(p.area for p in pieces) == inst.area  # no pixel lost under the line
    union = np.zeros((20, 20), bool)
    for p in pieces:
        assert not (union & p.full_mask((20, 20))).any()
        union |= p.full_mask((20, 20))
    assert np.array_equal(union, full)
    assert pieces[0].id == inst.id


def test_split_that_misses_returns_original():
    inst = Instance(np.ones((4, 4), bool), 0, 0, "a")
    assert masks.split_instance(inst, np.array([[10, 10], [12, 12]])) == [inst]


def test_iou():
    a = Instance(np.ones((4, 4), bool), 0, 0, "a")
    b = Instance(np.ones((4, 4), bool), 2, 0, "a")
    assert masks.iou(a, b) == pytest.approx(8 / 24)
    assert masks.iou(a, a) == 1.0
