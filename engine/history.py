"""Undoable edits of one item's annotation, stored as bbox-cropped before/after patches.

An edit is a list of ops applied in order (undo: reverse order, backwards). A mask change
keeps only the pixels of the changed rectangle, bit-packed, before and after (as napari's
Labels layer does), so one brush stroke on a huge instance costs a few bytes per changed
pixel, not two copies of the instance. Added/removed instances keep their (bbox-cropped)
Instance object. No Qt here: gui.undo wraps a list of ops in a QUndoCommand.
The edit intents that produce the changes live in engine.editing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from engine.annotations import Instance, ItemAnnotation

Region = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive), image pixels


def union_region(a: Optional[Region], b: Optional[Region]) -> Optional[Region]:
    if a is None:
        return b
    if b is None:
        return a
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


def intersect_region(a: Region, b: Region) -> Optional[Region]:
    r = (max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3]))
    return r if r[2] > r[0] and r[3] > r[1] else None


def inst_region(inst: Instance) -> Region:
    return (inst.x0, inst.y0, inst.x0 + inst.width, inst.y0 + inst.height)


def window_of(inst: Instance, region: Region) -> np.ndarray:
    """The instance's mask over `region` (pixels outside its crop are False); a copy."""
    x0, y0, x1, y1 = region
    out = np.zeros((y1 - y0, x1 - x0), bool)
    inter = intersect_region(region, inst_region(inst))
    if inter is not None:
        ix0, iy0, ix1, iy1 = inter
        out[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0] = \
            inst.mask[iy0 - inst.y0:iy1 - inst.y0, ix0 - inst.x0:ix1 - inst.x0]
    return out


def reshape_to(inst: Instance, geom: tuple[int, int, int, int]) -> None:
    """Re-crop the instance's mask to geom (x0, y0, w, h), keeping overlapping pixels."""
    x0, y0, w, h = geom
    if (inst.x0, inst.y0, inst.width, inst.height) == geom:
        return
    new = window_of(inst, (x0, y0, x0 + w, y0 + h))
    inst.mask, inst.x0, inst.y0 = new, x0, y0


def geometry_of(inst: Instance) -> tuple[int, int, int, int]:
    return (inst.x0, inst.y0, inst.width, inst.height)


class PackedBits:
    """A bool array stored bit-packed (8x smaller)."""
    __slots__ = ("shape", "data")

    def __init__(self, arr: np.ndarray) -> None:
        self.shape = arr.shape
        self.data = np.packbits(arr, axis=None)

    def unpack(self) -> np.ndarray:
        n = int(np.prod(self.shape))
        return np.unpackbits(self.data, count=n).astype(bool).reshape(self.shape)

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)


class Op:
    def apply(self, ann: ItemAnnotation, forward: bool) -> Optional[Region]:
        raise NotImplementedError

    structural = False  # True when the instance list (membership/order) changes
    nbytes = 0


@dataclass
class PatchOp(Op):
    """The mask of one instance changed inside `region`."""
    inst_id: str
    region: Region
    before_geom: tuple[int, int, int, int]
    after_geom: tuple[int, int, int, int]
    before: PackedBits
    after: PackedBits

    @classmethod
    def make(cls, inst: Instance, new: Instance, hint: Optional[Region] = None) -> Optional["PatchOp"]:
        """Diff inst -> new (same id); None when the pixels and crop are identical."""
        region = union_region(inst_region(inst), inst_region(new))
        if hint is not None:
            region = intersect_region(region, hint) or (hint[0], hint[1], hint[0], hint[1])
        if region[2] <= region[0] or region[3] <= region[1]:
            if geometry_of(inst) == geometry_of(new):
                return None
            region = (region[0], region[1], region[0], region[1])
            a = b = np.zeros((0, 0), bool)
        else:
            a, b = window_of(inst, region), window_of(new, region)
            diff = a ^ b
            rows = np.flatnonzero(diff.any(axis=1))
            if rows.size == 0:
                if geometry_of(inst) == geometry_of(new):
                    return None
                region = (region[0], region[1], region[0], region[1])
                a = b = np.zeros((0, 0), bool)
            else:
                cols = np.flatnonzero(diff.any(axis=0))
                r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
                a, b = a[r0:r1, c0:c1], b[r0:r1, c0:c1]
                region = (region[0] + int(c0), region[1] + int(r0), region[0] + int(c1), region[1] + int(r1))
        return cls(inst.id, region, geometry_of(inst), geometry_of(new), PackedBits(a), PackedBits(b))

    def apply(self, ann: ItemAnnotation, forward: bool) -> Optional[Region]:
        inst = ann.find(self.inst_id)
        if inst is None:
            raise RuntimeError(f"undo history out of step: no instance {self.inst_id}")
        geom, bits = (self.after_geom, self.after) if forward else (self.before_geom, self.before)
        reshape_to(inst, geom)
        x0, y0, x1, y1 = self.region
        if x1 > x0 and y1 > y0:
            patch = bits.unpack()
            inter = intersect_region(self.region, inst_region(inst))
            if inter is not None:
                ix0, iy0, ix1, iy1 = inter
                inst.mask[iy0 - inst.y0:iy1 - inst.y0, ix0 - inst.x0:ix1 - inst.x0] = \
                    patch[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0]
        return self.region if (x1 > x0 and y1 > y0) else None

    @property
    def nbytes(self) -> int:  # type: ignore[override]
        return self.before.nbytes + self.after.nbytes


@dataclass
class AddOp(Op):
    index: int
    inst: Instance
    structural = True

    def apply(self, ann: ItemAnnotation, forward: bool) -> Optional[Region]:
        if forward:
            ann.instances.insert(self.index, self.inst)
        else:
            ann.instances = [i for i in ann.instances if i.id != self.inst.id]
        return inst_region(self.inst)

    @property
    def nbytes(self) -> int:  # type: ignore[override]
        return int(self.inst.mask.nbytes)


@dataclass
class RemoveOp(Op):
    index: int
    inst: Instance
    structural = True

    def apply(self, ann: ItemAnnotation, forward: bool) -> Optional[Region]:
        if forward:
            ann.instances = [i for i in ann.instances if i.id != self.inst.id]
        else:
            ann.instances.insert(self.index, self.inst)
        return inst_region(self.inst)

    @property
    def nbytes(self) -> int:  # type: ignore[override]
        return int(self.inst.mask.nbytes)


@dataclass
class AttrOp(Op):
    inst_id: str
    name: str
    before: object
    after: object
    structural = True  # the instances table shows label/source/score

    def apply(self, ann: ItemAnnotation, forward: bool) -> Optional[Region]:
        inst = ann.find(self.inst_id)
        if inst is None:
            raise RuntimeError(f"undo history out of step: no instance {self.inst_id}")
        setattr(inst, self.name, self.after if forward else self.before)
        return inst_region(inst) if self.name == "label" else None


@dataclass
class StatusOp(Op):
    before: str
    after: str

    def apply(self, ann: ItemAnnotation, forward: bool) -> Optional[Region]:
        ann.status = self.after if forward else self.before
        return None


class Change:
    """One requested change: old -> new instance (either may be None). `hint` bounds the
    pixels that may differ (e.g. a brush stroke's box), which keeps diffs cheap."""
    __slots__ = ("old", "new", "hint", "index")

    def __init__(self, old: Optional[Instance], new: Optional[Instance],
                 hint: Optional[Region] = None, index: Optional[int] = None) -> None:
        self.old, self.new, self.hint, self.index = old, new, hint, index


def build_and_apply(ann: ItemAnnotation, changes: list[Change]) -> tuple[list[Op], Optional[Region], bool]:
    """Turn changes into ops, applying each at once (so indices are those at apply time).

    Returns (ops, changed region, structural). An empty new instance is removed.
    """
    ops: list[Op] = []
    region: Optional[Region] = None
    structural = False
    for ch in changes:
        old, new = ch.old, ch.new
        if new is not None and new.is_empty():
            new = None
            if old is None:
                continue
        op_list: list[Op] = []
        if old is None and new is not None:
            index = len(ann.instances) if ch.index is None else max(0, min(ch.index, len(ann.instances)))
            op_list.append(AddOp(index, new))
        elif old is not None and new is None:
            cur = ann.find(old.id)
            if cur is None:
                continue
            op_list.append(RemoveOp(next(k for k, i in enumerate(ann.instances) if i is cur), cur))
        elif old is not None and new is not None:
            cur = ann.find(old.id)
            if cur is None:
                continue
            patch = PatchOp.make(cur, new, ch.hint)
            if patch is not None:
                op_list.append(patch)
            after = {name: getattr(new, name) for name in ("label", "score", "source", "model", "object_id")}
            if (patch is not None or new.label != cur.label) and cur.source == new.source == "model":
                # a corrected prediction is the user's now: auto-segment replaces model
                # output but keeps manual instances, so the correction survives a re-run
                after.update(source="manual", score=None, model=None)
            for name, value in after.items():
                if getattr(cur, name) != value:
                    op_list.append(AttrOp(cur.id, name, getattr(cur, name), value))
        for op in op_list:
            region = union_region(region, op.apply(ann, True))
            structural = structural or op.structural
            ops.append(op)
    return ops, region, structural


def replay(ann: ItemAnnotation, ops: list[Op], forward: bool) -> tuple[Optional[Region], bool]:
    """Apply recorded ops again (redo) or backwards (undo); (changed region, structural)."""
    region: Optional[Region] = None
    structural = False
    for op in (ops if forward else reversed(ops)):
        region = union_region(region, op.apply(ann, forward))
        structural = structural or op.structural
    return region, structural


def touches_status(ops: list[Op]) -> bool:
    return any(isinstance(o, StatusOp) for o in ops)


def rename_label_in_ops(ops: list[Op], old: str, new: str) -> None:
    """A renamed label: recorded history names it too, so undo brings back the new name."""
    for op in ops:
        if isinstance(op, AttrOp) and op.name == "label":
            op.before = new if op.before == old else op.before
            op.after = new if op.after == old else op.after
        elif isinstance(op, (AddOp, RemoveOp)) and op.inst.label == old:
            op.inst.label = new
