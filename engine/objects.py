"""3-D objects: instances on a stack's slices that share an object id (numpy only).

An object is the set of instances, on the slices of one stack (TIFF stack, DICOM series),
whose `Instance.object_id` is the same string. This module makes and edits objects:

- `link_stack(annotations, min_iou)` links instances of the same label on adjacent slices
  by overlap. The rule (docs/design-notes.md, "Linking"):
  1. one-to-one: between slices z and z+1, candidate pairs (same label, overlapping boxes)
     are taken best IoU first; a pair is linked when both are still free and IoU >= min_iou;
  2. forks, merges and caps: an instance left without a one-to-one partner toward a
     neighbouring slice joins the object of the neighbour (same label) that covers at
     least MIN_COVER (half) of its pixels -- the best-IoU such neighbour over both sides,
     one attachment per instance. A body that splits in two along z keeps one object: the
     larger branch is linked one-to-one, the other lies mostly on the parent and joins it.
     A merge is a fork read from the other side; the tiny first or last section of a
     sphere (IoU far below min_iou with the next section) joins its body the same way.
     Limit: two bodies of one label that touch face to face along z can be joined (the
     overlap of adjacent 2-D sections cannot tell them from a fork); unlink/split mend it.
  Every instance ends in an object (a body seen on one slice is a one-slice object).
  Existing ids are kept where they can be: an object takes the id most of its instances
  already carry, unless a larger object took it first.
- `link`, `unlink`, `split_object` are the hand edits. All functions are pure: they take
  ItemAnnotations and return copies of the ones that changed, so the GUI can make each
  edit one undo step and the CLI can save them.
- `link_project(project, stack, min_iou)` does `link_stack` on a project's stack and saves.

Stacks are sources with more than one slice (`stack_sources`, `find_stack`).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

from .annotations import ItemAnnotation, new_id
from .errors import ProjectError
from .jobs import check, report

DEFAULT_MIN_IOU = 0.3
#: an instance without a one-to-one partner joins a neighbour covering this share of it
MIN_COVER = 0.5

InstanceRef = tuple  # (item_id, instance_id)


# --- stacks of a project -----------------------------------------------------------------

def stack_sources(project) -> list[int]:
    """Indices of the project's sources that are stacks or series (more than one slice)."""
    return [k for k, s in enumerate(project.sources) if s.n_slices > 1]


def find_stack(project, name: Optional[str] = None) -> int:
    """The source index of a stack named by its name, file or folder name, stem or index;
    with no name, the project's only stack. ProjectError otherwise, listing the stacks."""
    stacks = stack_sources(project)
    names = ", ".join(project.sources[k].name or Path(project.sources[k].path).name for k in stacks) or "none"
    if name is None:
        if len(stacks) == 1:
            return stacks[0]
        raise ProjectError(f"the project has {len(stacks)} stacks ({names}); name one with --stack",
                           project.manifest_path)
    for k in stacks:
        src = project.sources[k]
        p = Path(src.path)
        if name in (src.name, p.name, p.stem, str(k), src.path):
            return k
    raise ProjectError(f"no stack {name!r} in the project (stacks: {names})", project.manifest_path)


def stack_items(project, source_index: int) -> list:
    """The items of one source in slice order."""
    return sorted((it for it in project.items if it.source == source_index), key=lambda i: i.slice)


# --- linking -----------------------------------------------------------------------------

class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = np.arange(n)

    def find(self, i: int) -> int:
        p = self.parent
        root = i
        while p[root] != root:
            root = p[root]
        while p[i] != root:
            p[i], i = root, p[i]
        return int(root)

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


@dataclass
class _Slice:
    """One slice's instances as arrays: global index, boxes (x0, y0, x1, y1), areas, labels."""
    start: int
    insts: list
    boxes: np.ndarray
    areas: np.ndarray
    labels: np.ndarray


def _slices(anns: Sequence[ItemAnnotation], label_codes: dict) -> list[_Slice]:
    out, start = [], 0
    for ann in anns:
        insts = [i for i in ann.instances if not i.is_empty()]
        boxes = np.array([(i.x0, i.y0, i.x0 + i.width, i.y0 + i.height) for i in insts],
                         dtype=np.int64).reshape(-1, 4)
        areas = np.array([i.area for i in insts], dtype=np.int64)
        labels = np.array([label_codes.setdefault(i.label, len(label_codes)) for i in insts], dtype=np.int64)
        out.append(_Slice(start, insts, boxes, areas, labels))
        start += len(insts)
    return out


def _crop(inst, box) -> np.ndarray:
    x0, y0, x1, y1 = box
    return inst.mask[y0 - inst.y0:y1 - inst.y0, x0 - inst.x0:x1 - inst.x0]


def _candidates(a: _Slice, b: _Slice):
    """(i, j, inter) for instance pairs of the same label whose pixels overlap."""
    if not len(a.insts) or not len(b.insts):
        return []
    ba, bb = a.boxes[:, None, :], b.boxes[None, :, :]
    ix0 = np.maximum(ba[..., 0], bb[..., 0])
    iy0 = np.maximum(ba[..., 1], bb[..., 1])
    ix1 = np.minimum(ba[..., 2], bb[..., 2])
    iy1 = np.minimum(ba[..., 3], bb[..., 3])
    ok = (ix1 > ix0) & (iy1 > iy0) & (a.labels[:, None] == b.labels[None, :])
    out = []
    for i, j in zip(*np.nonzero(ok)):
        box = (ix0[i, j], iy0[i, j], ix1[i, j], iy1[i, j])
        inter = int(np.count_nonzero(_crop(a.insts[i], box) & _crop(b.insts[j], box)))
        if inter:
            out.append((int(i), int(j), inter))
    return out


def _one_to_one(a: _Slice, b: _Slice, cands, min_iou: float, uf: _UnionFind):
    """Best IoU first; returns partner maps a->b and b->a."""
    scored = []
    for i, j, inter in cands:
        iou = inter / float(a.areas[i] + b.areas[j] - inter)
        if iou >= min_iou:
            scored.append((iou, i, j))
    scored.sort(key=lambda t: (-t[0], t[1], t[2]))  # ties broken by position: deterministic
    a2b: dict = {}
    b2a: dict = {}
    for _, i, j in scored:
        if i in a2b or j in b2a:
            continue
        a2b[i], b2a[j] = j, i
        uf.union(a.start + i, b.start + j)
    return a2b, b2a


def _attach_candidates(a: _Slice, b: _Slice, cands, a2b: dict, b2a: dict, best: dict) -> None:
    """Offer each instance that has no one-to-one partner across this slice pair its
    neighbours that cover at least MIN_COVER of it; best[g] keeps (iou, target) of the best."""
    for i, j, inter in cands:
        ga, gb = a.start + i, b.start + j
        iou = inter / float(a.areas[i] + b.areas[j] - inter)
        if j not in b2a and inter >= MIN_COVER * b.areas[j] and iou > best.get(gb, (-1.0, 0))[0]:
            best[gb] = (iou, ga)
        if i not in a2b and inter >= MIN_COVER * a.areas[i] and iou > best.get(ga, (-1.0, 0))[0]:
            best[ga] = (iou, gb)


def link_stack(annotations: Sequence[ItemAnnotation], min_iou: float = DEFAULT_MIN_IOU, *,
               progress=None, cancel=None) -> list[ItemAnnotation]:
    """Link the instances of a stack's slices (annotations in slice order) into objects.

    Returns copies of the annotations whose object ids changed (the others are unchanged)."""
    if not 0.0 < float(min_iou) <= 1.0:
        raise ValueError(f"min_iou must be in (0, 1], got {min_iou}")
    codes: dict = {}
    sl = _slices(annotations, codes)
    n = sum(len(s.insts) for s in sl)
    uf = _UnionFind(n)
    attach: dict = {}
    for z in range(len(sl) - 1):
        check(cancel)
        report(progress, z, max(1, len(sl) - 1), "linking slices")
        a, b = sl[z], sl[z + 1]
        cands = _candidates(a, b)
        a2b, b2a = _one_to_one(a, b, cands, min_iou, uf)
        _attach_candidates(a, b, cands, a2b, b2a, attach)
    for g, (_, target) in sorted(attach.items()):   # forks, merges and caps
        uf.union(g, target)
    report(progress, max(1, len(sl) - 1), max(1, len(sl) - 1), "")
    flat = [inst for s in sl for inst in s.insts]
    roots = np.array([uf.find(i) for i in range(n)], dtype=np.int64)
    ids = _choose_ids(flat, roots)
    return _apply_ids(annotations, {id(inst): ids[r] for inst, r in zip(flat, roots)})


def _choose_ids(flat: list, roots: np.ndarray) -> dict:
    """root -> object id: an existing id carried by most of the group's instances, given to
    the largest group that wants it; a new id otherwise."""
    groups: dict = {}
    for k, r in enumerate(roots.tolist()):
        groups.setdefault(r, []).append(k)
    out, taken = {}, set()
    for r in sorted(groups, key=lambda r: (-len(groups[r]), r)):
        votes = Counter(flat[k].object_id for k in groups[r] if flat[k].object_id)
        chosen = next((oid for oid, _ in votes.most_common() if oid not in taken), None)
        out[r] = chosen or new_id()
        taken.add(out[r])
    return out


def _apply_ids(annotations: Sequence[ItemAnnotation], new_ids: dict) -> list[ItemAnnotation]:
    changed = []
    for ann in annotations:
        if not any(id(i) in new_ids and i.object_id != new_ids[id(i)] for i in ann.instances):
            continue
        out = ann.copy()
        for old, new in zip(ann.instances, out.instances):
            if id(old) in new_ids:
                new.object_id = new_ids[id(old)]
        changed.append(out)
    return changed


# --- reading objects -------------------------------------------------------------------

def objects(annotations: Sequence[ItemAnnotation]) -> dict[str, list[tuple[int, str, str]]]:
    """object id -> [(slice position, item id, instance id)] in slice order."""
    out: dict = {}
    for z, ann in enumerate(annotations):
        for inst in ann.instances:
            if inst.object_id:
                out.setdefault(inst.object_id, []).append((z, ann.item_id, inst.id))
    return out


def object_extent(annotations: Sequence[ItemAnnotation], object_id: str) -> Optional[tuple[int, int]]:
    """(first, last) slice position of an object, or None when no instance carries it."""
    zs = [z for z, ann in enumerate(annotations) for i in ann.instances if i.object_id == object_id]
    return (min(zs), max(zs)) if zs else None


# --- hand edits (pure) ---------------------------------------------------------------------

def _with_ids(annotations: Sequence[ItemAnnotation], decide) -> list[ItemAnnotation]:
    """Copies of the annotations where decide(z, ann, inst) returns an id other than the
    instance's own (None = keep)."""
    changed = []
    for z, ann in enumerate(annotations):
        new = {inst.id: decide(z, ann, inst) for inst in ann.instances}
        if not any(v is not None and v != inst.object_id for inst in ann.instances for v in [new[inst.id]]):
            continue
        out = ann.copy()
        for inst in out.instances:
            if new[inst.id] is not None:
                inst.object_id = new[inst.id]
        changed.append(out)
    return changed


def _find_refs(annotations: Sequence[ItemAnnotation], refs: Iterable[InstanceRef]) -> list:
    by_item = {ann.item_id: ann for ann in annotations}
    out = []
    for item_id, inst_id in refs:
        ann = by_item.get(item_id)
        inst = ann.find(inst_id) if ann is not None else None
        if inst is None:
            raise ProjectError(f"no instance {inst_id!r} on item {item_id!r}")
        out.append(inst)
    return out


def link(annotations: Sequence[ItemAnnotation], refs: Sequence[InstanceRef]) -> list[ItemAnnotation]:
    """Join the objects of the given instances (and every instance already in them) into
    one object, which keeps the first linked instance's object id."""
    insts = _find_refs(annotations, refs)
    if len(insts) < 2:
        return []
    target = next((i.object_id for i in insts if i.object_id), None) or new_id()
    merged = {i.object_id for i in insts if i.object_id}
    chosen = {id(i) for i in insts}
    return _with_ids(annotations, lambda z, a, i: target if (id(i) in chosen or i.object_id in merged) else None)


def unlink(annotations: Sequence[ItemAnnotation], refs: Sequence[InstanceRef]) -> list[ItemAnnotation]:
    """Take the given instances out of their objects: each becomes an object of its own."""
    insts = {id(i) for i in _find_refs(annotations, refs)}
    return _with_ids(annotations, lambda z, a, i: new_id() if id(i) in insts else None)


def split_object(annotations: Sequence[ItemAnnotation], object_id: str, at: int) -> list[ItemAnnotation]:
    """Cut an object along z: its instances on slice positions >= `at` get a new object id."""
    ext = object_extent(annotations, object_id)
    if ext is None:
        raise ProjectError(f"no object {object_id!r} on this stack")
    if not ext[0] < at <= ext[1]:
        raise ProjectError(f"object {object_id!r} spans slices {ext[0]}-{ext[1]}; "
                           f"a split must fall inside it (got {at})")
    fresh = new_id()
    return _with_ids(annotations, lambda z, a, i: fresh if (i.object_id == object_id and z >= at) else None)


# --- on a project ----------------------------------------------------------------------------

def link_project(project, stack: Optional[str] = None, min_iou: float = DEFAULT_MIN_IOU, *,
                 progress=None, cancel=None) -> dict:
    """Link every stack (or the named one) of a project and save the changed items.

    Returns {"stacks": n, "objects": n, "instances": n, "items_changed": n}."""
    sources = [find_stack(project, stack)] if stack is not None else stack_sources(project)
    if not sources:
        raise ProjectError("the project has no stack or series to link", project.manifest_path)
    return _link_sources(project, sources, min_iou, progress, cancel)


def link_after_segment(project, item_ids: Iterable[str], min_iou: float = DEFAULT_MIN_IOU, *,
                       progress=None, cancel=None) -> dict:
    """Link the stacks that hold any of `item_ids` (the items just segmented); {} when
    none is a slice of a stack."""
    wanted = set(item_ids)
    sources = sorted({it.source for it in project.items
                      if it.id in wanted and project.sources[it.source].n_slices > 1})
    return _link_sources(project, sources, min_iou, progress, cancel) if sources else {}


def _link_sources(project, sources: list, min_iou: float, progress, cancel) -> dict:
    totals = Counter()
    for s in sources:
        items = stack_items(project, s)
        anns = [project.load_annotation(it.id) for it in items]
        changed = link_stack(anns, min_iou, progress=progress, cancel=cancel)
        check(cancel)
        for ann in changed:
            project.save_annotation(ann)
        by_id = {a.item_id: a for a in changed}
        final = [by_id.get(a.item_id, a) for a in anns]
        totals["stacks"] += 1
        totals["objects"] += len(objects(final))
        totals["instances"] += sum(len(a.instances) for a in final)
        totals["items_changed"] += len(changed)
    return dict(totals)
