import numpy as np
import pytest

from engine.annotations import Instance, ItemAnnotation, LabelSet
from engine.errors import LabelError


def test_from_full_mask_crops_to_bbox_and_pastes_back():
    full = np.zeros((20, 30), bool)
    full[5:9, 10:17] = True
    full[7, 20] = True
    inst = Instance.from_full_mask(full, "rock")
    assert inst.bbox == (10, 5, 11, 4)
    assert inst.area == full.sum()
    assert np.array_equal(inst.full_mask(full.shape), full)


def test_empty_mask_gives_no_instance():
    assert Instance.from_full_mask(np.zeros((4, 4), bool), "x") is None


def test_paste_clips_at_image_border():
    inst = Instance(np.ones((4, 4), bool), x0=-2, y0=8, label="a")
    out = inst.full_mask((10, 10))
    assert out.sum() == 2 * 2
    assert not inst.fits((10, 10))


def test_tight_and_same_pixels_ignore_padding():
    m = np.zeros((6, 6), bool)
    m[2:4, 1:3] = True
    a = Instance(m, x0=10, y0=10, label="a")
    b = Instance(m[2:4, 1:3].copy(), x0=11, y0=12, label="a")
    assert a.same_pixels(b)
    a.tight()
    assert a.bbox == (11, 12, 2, 2)


def test_label_image_orders_instances():
    ann = ItemAnnotation("i", 5, 5, [Instance(np.ones((2, 2), bool), 0, 0, "a"),
                                     Instance(np.ones((2, 2), bool), 1, 1, "a")])
    lab = ann.label_image()
    assert lab[0, 0] == 1 and lab[1, 1] == 2 and lab[4, 4] == 0


def test_labelset_ids_stable_across_rename_and_not_reused():
    ls = LabelSet.from_names(["rock", "matrix"])
    rock_id = ls.get("rock").id
    ls.rename("rock", "grain")
    assert ls.get("grain").id == rock_id and "rock" not in ls
    ls.remove("matrix")
    assert ls.add("pore").id == 3
    again = LabelSet.from_json(ls.to_json())
    assert again.names() == ["grain", "pore"] and again.get("pore").color == ls.get("pore").color


def test_labelset_rejects_duplicates_and_unknown():
    ls = LabelSet.from_names(["a"])
    with pytest.raises(LabelError):
        ls.rename("a", "")
    ls.add("b")
    with pytest.raises(LabelError):
        ls.rename("a", "b")
    with pytest.raises(LabelError, match="unknown label 'zzz'"):
        ls.require("zzz")
    with pytest.raises(LabelError, match=r"labels\[1\]"):
        LabelSet.from_json([{"id": 1, "name": "a", "color": [1, 2, 3]}, {"id": 1, "name": "b", "color": [1, 2, 3]}])
