"""3-D objects: linking instances across slices, and the hand edits link/unlink/split."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from engine import objects
from engine.annotations import Instance, ItemAnnotation


def _ball(shape, centre, radii):
    zz, yy, xx = np.ogrid[:shape[0], :shape[1], :shape[2]]
    cz, cy, cx = centre
    rz, ry, rx = radii
    return ((zz - cz) / rz) ** 2 + ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def _slice_into_annotations(bodies: np.ndarray, labels: dict) -> list[ItemAnnotation]:
    """Each body value's 2-D connected components on each slice -> one instance each,
    with no object ids (what auto-segment gives)."""
    anns = []
    for z in range(bodies.shape[0]):
        ann = ItemAnnotation(f"s{z:03d}", bodies.shape[1], bodies.shape[2], [], "reviewed")
        for v, lab in labels.items():
            cc, n = ndimage.label(bodies[z] == v)
            for k in range(1, n + 1):
                inst = Instance.from_full_mask(cc == k, lab)
                inst.body = v  # test bookkeeping only
                ann.instances.append(inst)
        anns.append(ann)
    return anns


def _apply(anns, changed):
    by = {a.item_id: a for a in changed}
    return [by.get(a.item_id, a) for a in anns]


def _bodies_per_object(anns, original):
    """object id -> set of body values, via the instances' pixel identity."""
    body_of = {}
    for a in original:
        for i in a.instances:
            body_of[(a.item_id, i.id)] = i.body
    out = {}
    for a in anns:
        for i in a.instances:
            out.setdefault(i.object_id, set()).add(body_of[(a.item_id, i.id)])
    return out


def _scene():
    """Spheres and ellipsoids (two touching in x-y at different z, one elongated in z),
    plus a body that forks into two legs along z."""
    shape = (40, 96, 96)
    bodies = np.zeros(shape, np.int32)
    specs = [((10, 20, 20), (6, 9, 9)), ((12, 20, 42), (7, 5, 12)), ((28, 24, 22), (9, 8, 8)),
             ((20, 70, 20), (16, 6, 10)), ((30, 50, 50), (5, 14, 6))]
    for v, (c, r) in enumerate(specs, start=1):
        bodies[_ball(shape, c, r) & (bodies == 0)] = v
    # a fork: a trunk on slices 5..19, two legs diverging from slice 20 to 34
    fork = 10
    for z in range(5, 35):
        if z < 20:
            bodies[z, 60:76, 60:76] = fork
        else:
            d = (z - 20) // 2
            bodies[z, 60:76, 60 - d:66 - d] = fork
            bodies[z, 60:76, 70 + d:76 + d] = fork
    labels = {v: ("rock" if v % 2 else "pore") for v in range(1, 6)}
    labels[fork] = "rock"
    return bodies, labels


def test_link_stack_gives_one_object_per_body_and_a_fork_stays_one():
    bodies, labels = _scene()
    anns = _slice_into_annotations(bodies, labels)
    # the fork really is two instances on its lower slices
    assert sum(1 for i in anns[30].instances if i.body == 10) == 2
    changed = objects.link_stack(anns, 0.3)
    linked = _apply(anns, changed)
    per_obj = _bodies_per_object(linked, anns)
    assert all(len(v) == 1 for v in per_obj.values()), per_obj
    assert sorted(next(iter(v)) for v in per_obj.values()) == sorted(labels)  # exactly one per body
    assert all(i.object_id for a in linked for i in a.instances)
    # the input was not changed (pure)
    assert all(i.object_id is None for a in anns for i in a.instances)


def test_link_without_fork_rule_would_split_the_fork():
    """The one-to-one pass alone leaves the second leg as its own object: the fork rule is
    what keeps it (this guards the rule, not just the outcome)."""
    bodies, labels = _scene()
    anns = _slice_into_annotations(bodies, labels)
    orig = objects._attach_candidates
    try:
        objects._attach_candidates = lambda *a, **k: None
        linked = _apply(anns, objects.link_stack(anns, 0.3))
    finally:
        objects._attach_candidates = orig
    per_obj = _bodies_per_object(linked, anns)
    assert sum(1 for v in per_obj.values() if v == {10}) == 2


def test_labels_never_link_and_low_overlap_does_not():
    a = ItemAnnotation("a", 20, 20, [Instance(np.ones((6, 6), bool), 2, 2, "rock"),
                                     Instance(np.ones((6, 6), bool), 12, 12, "rock")])
    b = ItemAnnotation("b", 20, 20, [Instance(np.ones((6, 6), bool), 2, 2, "pore"),   # other label
                                     Instance(np.ones((6, 6), bool), 16, 16, "rock")])  # IoU 4/68
    linked = _apply([a, b], objects.link_stack([a, b], 0.3))
    ids = [i.object_id for x in linked for i in x.instances]
    assert len(set(ids)) == 4


def test_relinking_keeps_ids_and_changes_nothing():
    bodies, labels = _scene()
    anns = _slice_into_annotations(bodies, labels)
    linked = _apply(anns, objects.link_stack(anns, 0.3))
    assert objects.link_stack(linked, 0.3) == []


def test_hand_edits_link_unlink_split():
    bodies, labels = _scene()
    anns = _slice_into_annotations(bodies, labels)
    body = {(a.item_id, i.id): i.body for a in anns for i in a.instances}

    def of4(state, z=None):
        return [i for k, a in enumerate(state) for i in a.instances
                if body[(a.item_id, i.id)] == 4 and (z is None or k == z)]

    linked = _apply(anns, objects.link_stack(anns, 0.3))
    # the elongated body 4 spans slices 5..35
    zs = [z for z, a in enumerate(linked) for i in a.instances if body[(a.item_id, i.id)] == 4]
    oid = of4(linked)[0].object_id
    assert objects.object_extent(linked, oid) == (zs[0], zs[-1])

    split = _apply(linked, objects.split_object(linked, oid, 20))
    assert len({i.object_id for i in of4(split)}) == 2 and oid in {i.object_id for i in of4(split)}
    assert objects.object_extent(split, oid) == (zs[0], 19)

    # link the two halves back together by naming one instance of each
    lo, hi = of4(split, 19)[0], of4(split, 20)[0]
    joined = _apply(split, objects.link(split, [("s019", lo.id), ("s020", hi.id)]))
    assert {i.object_id for i in of4(joined)} == {oid}

    # unlink one instance: it becomes its own object, the rest keeps the id
    mid = of4(joined, 15)[0]
    un = _apply(joined, objects.unlink(joined, [("s015", mid.id)]))
    ids = [i.object_id for i in of4(un)]
    assert ids.count(oid) == len(ids) - 1
    with pytest.raises(Exception, match="split must fall inside"):
        objects.split_object(linked, oid, 0)


def test_link_after_segment_links_only_the_stacks_segmented(tmp_path):
    import tifffile
    from engine.project import Project
    data = tmp_path / "d"
    data.mkdir()
    tifffile.imwrite(data / "stack.tif", np.zeros((3, 20, 20), np.uint16), photometric="minisblack")
    tifffile.imwrite(data / "plain.tif", np.zeros((20, 20), np.uint16), photometric="minisblack")
    proj = Project.create(tmp_path / "p", ["rock"])
    proj.add([data / "stack.tif", data / "plain.tif"])
    stack = objects.stack_items(proj, objects.find_stack(proj))
    plain = next(it for it in proj.items if it.source != stack[0].source)
    for it in stack + [plain]:
        proj.save_annotation(ItemAnnotation(it.id, 20, 20, [Instance(np.ones((5, 5), bool), 4, 4, "rock")],
                                            "predicted"))
    assert objects.link_after_segment(proj, [plain.id]) == {}
    res = objects.link_after_segment(proj, [stack[1].id])
    assert res["objects"] == 1 and res["stacks"] == 1
    ids = {proj.load_annotation(it.id).instances[0].object_id for it in stack}
    assert len(ids) == 1 and None not in ids
    assert proj.load_annotation(plain.id).instances[0].object_id is None
