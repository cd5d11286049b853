"""engine.synthetic: CT-like and nuclei images with exact ground truth."""
from __future__ import annotations

import numpy as np
import pytest

from engine import synthetic as S
from engine.annotations import ItemAnnotation


@pytest.mark.parametrize("kind", S.KINDS)
def test_deterministic_and_seeded(kind):
    a = S.sample(kind, 200, seed=3)
    b = S.sample(kind, 200, seed=3)
    c = S.sample(kind, 200, seed=4)
    assert np.array_equal(a.image, b.image)
    assert np.array_equal(a.label_image(), b.label_image())
    assert [i.bbox for i in a.instances] == [i.bbox for i in b.instances]
    assert not np.array_equal(a.image, c.image)


@pytest.mark.parametrize("kind,size", [("ct", 256), ("ct", (300, 420)), ("nuclei", 256), ("nuclei", (320, 240))])
def test_image_and_ground_truth_are_consistent(kind, size):
    s = S.sample(kind, size, seed=1)
    h, w = (size, size) if isinstance(size, int) else size
    assert s.image.dtype == np.uint16 and s.image.shape == (h, w)
    ann = s.annotation
    assert isinstance(ann, ItemAnnotation) and ann.shape == (h, w) and ann.status == "reviewed"
    assert len(ann.instances) >= 10
    # exact ground truth: instances never overlap, lie inside the image, have known labels
    total = np.zeros((h, w), np.int32)
    for inst in ann.instances:
        assert inst.fits((h, w)) and not inst.is_empty()
        assert inst.label in s.labels
        total += inst.full_mask((h, w))
    assert total.max() == 1
    # the objects are really there: mean intensity inside vs. outside differs clearly
    fg = total.astype(bool)
    if kind == "nuclei":
        assert s.image[fg].mean() > 3 * s.image[~fg].mean()
    else:
        rock = np.zeros((h, w), bool)
        for inst in ann.instances:
            if inst.label == "rock":
                inst.paste_into(rock)
        assert s.image[rock].mean() > s.image[~fg].mean() + 5000


def test_ct_with_pores_has_two_classes_and_16bit_range():
    s = S.ct_sample(384, seed=2, pores=True)
    labels = {i.label for i in s.instances}
    assert labels == {"rock", "pore"} and s.labels == ("rock", "pore")
    assert s.image.max() > 255 * 40  # really 16-bit data, not 8-bit scaled up
    pore = np.zeros(s.image.shape, bool)
    for i in s.instances:
        if i.label == "pore":
            i.paste_into(pore)
    assert s.image[pore].mean() < np.median(s.image)


def test_nuclei_some_touch():
    s = S.nuclei_sample(256, seed=0, touching=0.6)
    lab = s.label_image()
    # touching: two different instances are 4-neighbours somewhere
    a, b = lab[:, :-1], lab[:, 1:]
    touching = (a > 0) & (b > 0) & (a != b)
    assert touching.sum() > 10


def test_counts_and_sizes_are_configurable():
    few = S.nuclei_sample(256, seed=0, n_nuclei=5)
    assert len(few.instances) == 5
    big = S.ct_sample(512, seed=0, grain_radius=(20, 30), n_grains=20)
    assert len(big.instances) == 20
    assert min(i.area for i in big.instances if i.fits((512, 512))) > 200


def test_samples_and_stack():
    out = S.samples("nuclei", 3, size=128, seed=5)
    assert [s.annotation.item_id for s in out] == ["nuclei_000", "nuclei_001", "nuclei_002"]
    vol, anns = S.ct_stack(2, 96, seed=1)
    assert vol.shape == (2, 96, 96) and vol.dtype == np.uint16 and len(anns) == 2
    with pytest.raises(ValueError):
        S.sample("xray", 64)
    with pytest.raises(ValueError):
        S.ct_sample(8)


def test_ct_volume_bodies_are_single_3d_pieces_across_slices():
    from scipy import ndimage
    v = S.ct_volume(12, 96, seed=2)
    assert v.image.shape == (12, 96, 96) and v.image.dtype == np.uint16
    assert v.spacing == (0.5, 0.2, 0.2)
    assert set(v.labels_of.values()) == {"rock", "pore"}
    for k in v.labels_of:
        assert ndimage.label(v.objects == k)[1] == 1
    anns = v.annotations([f"s{z}" for z in range(12)])
    ids = {}
    for z, a in enumerate(anns):
        for i in a.instances:
            ids.setdefault(i.object_id, set()).add(z)
    assert set(ids) == {str(k) for k in v.labels_of}
    assert sum(1 for zs in ids.values() if len(zs) > 1) > 0.8 * len(ids)   # bodies span slices
    # rocks are brighter than the matrix, pores darker
    rock = v.image[v.objects == next(k for k, l in v.labels_of.items() if l == "rock")].mean()
    pore = v.image[v.objects == next(k for k, l in v.labels_of.items() if l == "pore")].mean()
    assert rock > np.median(v.image) > pore


def test_demo_has_a_ct_stack_with_spacing_and_linked_rocks(tmp_path):
    from engine import objects
    from engine.demo import build_demo
    proj = build_demo(tmp_path / "demo", n_nuclei=2, n_ct=8, size=96, reviewed=1)
    s = objects.find_stack(proj)
    assert proj.sources[s].geometry is not None and proj.sources[s].geometry.spacing == (0.5, 0.2, 0.2)
    items = objects.stack_items(proj, s)
    anns = [proj.load_annotation(it.id) for it in items]
    assert [a.status for a in anns] == ["reviewed"] * 4 + ["new"] * 4
    objs = objects.objects(anns)
    assert objs and all(i.object_id for a in anns for i in a.instances)
    multi = [o for o in objs.values() if len({z for z, _, _ in o}) > 1]
    assert len(multi) > len(objs) / 2
    # the objects are what linking by overlap finds too, for most bodies
    fresh = [a.copy() for a in anns]
    for a in fresh:
        for i in a.instances:
            i.object_id = None
    linked = objects.link_stack(fresh)
    same = {frozenset(v) for v in objects.objects(linked).values()} & {frozenset(v) for v in objs.values()}
    assert len(same) >= 0.8 * len(objs)
