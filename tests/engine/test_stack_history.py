"""One undo step over many slices (engine.stack_history) for link, split and propagate
(engine.stack_edits): undo restores every slice exactly, redo reapplies, nothing half-written."""
from __future__ import annotations

import numpy as np
import pytest

from engine.annotations import Instance, ItemAnnotation
from engine.errors import ConflictError, ProjectError, WriteError
from engine.project import Project
from engine.stack_edits import link_changes, propagate_changes, split_changes
from engine.stack_history import apply_step, commit_step

tifffile = pytest.importorskip("tifffile")


def _square(x0, y0, x1, y1, **kw) -> Instance:
    return Instance(mask=np.ones((y1 - y0, x1 - x0), bool), x0=x0, y0=y0, label="rock", **kw)


def _sphere_volume(Z=9, H=64, W=72, R=7.0):
    z, y, x = np.mgrid[:Z, :H, :W]
    body = (((z - Z // 2) / 1.0) ** 2 + ((y - 30) / 3.0) ** 2 + ((x - 34) / 3.0) ** 2) <= R * R
    rng = np.random.default_rng(1)
    img = np.where(body, 180.0, 60.0) + rng.normal(0, 8, body.shape)
    return np.clip(img, 0, 255).astype(np.uint8), body


@pytest.fixture
def stack(tmp_path):
    """A 6-slice stack; one body drawn as squares shifting 2 px per slice, no objects yet,
    and a loose speck on slice 4."""
    vol = np.full((6, 64, 72), 50, np.uint8)
    tifffile.imwrite(tmp_path / "scan.tif", vol, photometric="minisblack")
    proj = Project.create(tmp_path / "proj", ["rock"])
    proj.add([tmp_path / "scan.tif"])
    ids = [it.id for it in proj.items]
    for k, item_id in enumerate(ids):
        insts = [_square(10 + 2 * k, 10, 30 + 2 * k, 30, id=f"s{k}")]
        if k == 4:
            insts.append(_square(50, 40, 56, 46, id="speck"))
        proj.save_annotation(ItemAnnotation(item_id, 64, 72, insts, "new"))
    return proj, ids


def _state(root, ids):
    """Every slice as on disk: [(instance id, object id, box, pixels)] per slice."""
    proj = Project.open(root)
    out = []
    for item_id in ids:
        ann = proj.load_annotation(item_id)
        out.append([(i.id, i.object_id, i.bbox, i.mask.tobytes()) for i in ann.instances])
    return out


def test_link_is_one_step_that_undo_restores_on_every_slice_and_redo_reapplies(stack):
    proj, ids = stack
    before = _state(proj.root, ids)
    step, saved = commit_step(proj, "Link objects", link_changes(proj, ids[2]))
    assert sorted(step.item_ids) == sorted(ids)                    # every slice changed
    after = _state(proj.root, ids)
    body = {after[k][0][1] for k in range(6)}
    assert len(body) == 1 and None not in body
    apply_step(proj, step, forward=False)
    assert _state(proj.root, ids) == before                        # object ids exactly as they were
    apply_step(proj, step, forward=True)
    assert _state(proj.root, ids) == after


def test_undo_is_refused_and_nothing_written_when_a_slice_changed_since(stack):
    proj, ids = stack
    step, _ = commit_step(proj, "Link objects", link_changes(proj, ids[0]))
    after = _state(proj.root, ids)
    other = Project.open(proj.root)                                # another program edits slice 3
    other.edit_annotation(ids[3], lambda a: (setattr(a.instances[0], "object_id", "mine"), a)[1])
    changed = _state(proj.root, ids)
    with pytest.raises(ConflictError, match=f"item '{ids[3]}' was changed since") as e:
        apply_step(proj, step, forward=False)
    assert "nothing was changed" in str(e.value)
    assert _state(proj.root, ids) == changed and changed != after


def test_a_failed_write_puts_back_the_slices_already_written_and_names_the_one(stack, monkeypatch):
    proj, ids = stack
    before = _state(proj.root, ids)
    changes = link_changes(proj, ids[0])
    real, calls = proj.save_annotation, []

    def flaky(ann, **kw):
        calls.append(ann.item_id)
        if len(calls) == 4:
            raise WriteError("disk full", proj.annotation_path(ann.item_id))
        return real(ann, **kw)

    monkeypatch.setattr(proj, "save_annotation", flaky)
    with pytest.raises(WriteError, match="could not be saved") as e:
        commit_step(proj, "Link objects", changes)
    assert f"item '{calls[3]}' could not be saved (" in str(e.value) and "disk full" in str(e.value)
    assert "the other items were put back as they were" in str(e.value)
    monkeypatch.undo()
    assert _state(proj.root, ids) == before                        # the three written went back


def test_split_here_gives_later_slices_a_new_object_and_undo_joins_them_again(stack):
    proj, ids = stack
    commit_step(proj, "Link objects", link_changes(proj, ids[0]))
    linked = _state(proj.root, ids)
    oid = linked[0][0][1]
    with pytest.raises(ProjectError, match="starts on this slice"):
        split_changes(proj, ids[0], oid)
    step, _ = commit_step(proj, "Split object", split_changes(proj, ids[3], oid))
    split = _state(proj.root, ids)
    assert [split[k][0][1] for k in range(3)] == [oid] * 3
    later = {split[k][0][1] for k in range(3, 6)}
    assert len(later) == 1 and oid not in later
    assert split[4][1] == linked[4][1]                             # the speck's object is untouched
    apply_step(proj, step, forward=False)
    assert _state(proj.root, ids) == linked
    apply_step(proj, step, forward=True)
    assert _state(proj.root, ids) == split


def test_propagate_both_ways_is_one_step_undo_removes_every_new_instance(tmp_path):
    vol, body = _sphere_volume()
    tifffile.imwrite(tmp_path / "ball.tif", vol, photometric="minisblack")
    proj = Project.create(tmp_path / "proj", ["rock"])
    proj.add([tmp_path / "ball.tif"])
    ids = [it.id for it in proj.items]
    mid = len(ids) // 2
    start = Instance.from_full_mask(body[mid], "rock", id="seed")
    proj.save_annotation(ItemAnnotation(ids[mid], 64, 72, [start], "new"))
    before = _state(proj.root, ids)
    changes = propagate_changes(proj, ids[mid], start, 0, window=None)
    assert start.object_id is None                                 # the caller's instance is not touched
    step, _ = commit_step(proj, "Propagate", changes)
    after = Project.open(proj.root)
    anns = [after.load_annotation(i) for i in ids]
    oid = anns[mid].find("seed").object_id
    reached = [k for k, a in enumerate(anns) if any(i.object_id == oid for i in a.instances)]
    assert len(reached) >= 5 and mid in reached                    # the ball spans 7 slices
    for k in reached:
        if k != mid:
            (inst,) = anns[k].instances
            assert inst.source == "prompt" and inst.label == "rock"
            overlap = (inst.full_mask((64, 72)) & body[k]).sum() / body[k].sum()
            assert overlap > 0.7
    apply_step(proj, step, forward=False)
    assert _state(proj.root, ids) == before                        # all propagated instances gone
    apply_step(proj, step, forward=True)
    again = Project.open(proj.root)
    assert [len(again.load_annotation(i).instances) for i in ids] == [len(a.instances) for a in anns]
    # propagating again stops where the object already is: nothing new
    seed = again.load_annotation(ids[mid]).find("seed")
    assert propagate_changes(again, ids[mid], seed, 0, window=None) == {}
