"""Edit intents (paint, erase, polygon, magic wand, split, merge, fill holes, relabel) → changes.

Each function looks at an item's annotation and returns an `Edit`: the list of
engine.history.Change records (old → new instance) to apply as one undo step, and the
instance ids to select afterwards (None: keep the selection). Nothing is applied here:
the caller hands the changes to engine.history.build_and_apply (the GUI through its undo
stack). No Qt: the same rules serve the canvas, scripts and tests.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
from scipy import ndimage

from . import masks as emasks
from .annotations import Instance, ItemAnnotation
from .history import Change, inst_region, intersect_region, window_of


@dataclass
class Edit:
    text: str                                   # the undo step's name
    changes: list = field(default_factory=list)
    select: Optional[list] = None               # ids to select after it; None = keep
    message: str = ""                           # why nothing changed (for the status bar)

    def __bool__(self) -> bool:
        return bool(self.changes)


def clip_to_image(shape: tuple[int, int], mask: np.ndarray, x0: int, y0: int
                  ) -> Optional[tuple[np.ndarray, int, int]]:
    """A cropped mask cut to the image (None when nothing of it is inside or set)."""
    H, W = shape[:2]
    mask = np.asarray(mask, bool)
    h, w = mask.shape
    cx0, cy0, cx1, cy1 = max(0, x0), max(0, y0), min(W, x0 + w), min(H, y0 + h)
    if cx1 <= cx0 or cy1 <= cy0:
        return None
    out = mask[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
    return (out, cx0, cy0) if out.any() else None


def touches(inst: Instance, mask: np.ndarray, x0: int, y0: int) -> bool:
    """True when the mask overlaps the instance or lies next to it (8-neighbourhood)."""
    grown = ndimage.binary_dilation(np.pad(mask, 1), structure=np.ones((3, 3), bool))
    h, w = grown.shape
    return bool((window_of(inst, (x0 - 1, y0 - 1, x0 - 1 + w, y0 - 1 + h)) & grown).any())


def _union(target: Instance, mask: np.ndarray, x0: int, y0: int) -> Change:
    h, w = mask.shape
    box = (min(target.x0, x0), min(target.y0, y0),
           max(target.x0 + target.width, x0 + w), max(target.y0 + target.height, y0 + h))
    new_mask = window_of(target, box)
    new_mask[y0 - box[1]:y0 - box[1] + h, x0 - box[0]:x0 - box[0] + w] |= mask
    return Change(target, target.copy(mask=new_mask, x0=box[0], y0=box[1]), hint=(x0, y0, x0 + w, y0 + h))


def add_region(ann: ItemAnnotation, selected: Sequence[Instance], mask: np.ndarray, x0: int, y0: int,
               label: str, *, text: str = "Add region", new: bool = False, source: str = "manual") -> Edit:
    """Add pixels onto the one selected instance, or as a new instance of `label` whose
    source is `source` (e.g. "prompt" for a mask a prompt answered)."""
    clipped = clip_to_image(ann.shape, mask, int(x0), int(y0))
    if clipped is None:
        return Edit(text)
    mask, x0, y0 = clipped
    if len(selected) == 1 and not new:
        return Edit(text, [_union(selected[0], mask, x0, y0)])
    inst = Instance(mask=mask.copy(), x0=x0, y0=y0, label=label, source=source).tight()
    return Edit(text, [Change(None, inst)], select=[inst.id])


def brush_stroke(ann: ItemAnnotation, selected: Sequence[Instance], mask: np.ndarray, x0: int, y0: int,
                 label: str, *, extend: bool = False) -> Edit:
    """A finished brush stroke. It grows the one selected instance when it touches it (or
    when `extend`, Shift held); a stroke elsewhere starts a new instance, so two objects
    painted one after the other never become one by accident."""
    clipped = clip_to_image(ann.shape, mask, int(x0), int(y0))
    if clipped is None:
        return Edit("Brush stroke")
    mask, x0, y0 = clipped
    grow = len(selected) == 1 and (extend or touches(selected[0], mask, x0, y0))
    return add_region(ann, selected, mask, x0, y0, label, text="Brush stroke", new=not grow)


def erase_stroke(ann: ItemAnnotation, targets: Sequence[Instance], mask: np.ndarray, x0: int, y0: int) -> Edit:
    """Remove the stroke's pixels from each target instance it touches."""
    clipped = clip_to_image(ann.shape, mask, int(x0), int(y0))
    if clipped is None:
        return Edit("Eraser stroke")
    mask, x0, y0 = clipped
    h, w = mask.shape
    region = (x0, y0, x0 + w, y0 + h)
    changes = []
    for inst in targets:
        inter = intersect_region(region, inst_region(inst))
        if inter is None:
            continue
        ix0, iy0, ix1, iy1 = inter
        cut = mask[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0]
        sub = inst.mask[iy0 - inst.y0:iy1 - inst.y0, ix0 - inst.x0:ix1 - inst.x0]
        if not (sub & cut).any():
            continue
        new = inst.copy()
        new.mask[iy0 - inst.y0:iy1 - inst.y0, ix0 - inst.x0:ix1 - inst.x0] &= ~cut
        new.tight()
        changes.append(Change(inst, new, hint=region if not new.is_empty() else None))
    return Edit("Eraser stroke", changes)


def polygon_mask(points_xy) -> Optional[tuple[np.ndarray, int, int]]:
    """(mask, x0, y0) of a polygon in pixel coordinates (pixel centres are integers)."""
    pts = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)
    if len(pts) < 3:
        return None
    x0, y0 = np.floor(pts.min(axis=0)).astype(int) - 1
    x1, y1 = np.ceil(pts.max(axis=0)).astype(int) + 2
    return emasks.fill_polygon(pts - (x0, y0), int(y1 - y0), int(x1 - x0)), int(x0), int(y0)


def wand_tolerance(fraction: float, window: Optional[tuple[float, float]], image: np.ndarray) -> float:
    """The magic wand's tolerance in raw units: a fraction of the displayed range (the
    window's width, else the image's value range), so one setting means the same on an
    8-bit photo and on a 0…25000 CT slice."""
    if window is not None:
        span = float(window[1])
    else:
        span = 255.0 if image.dtype == np.uint8 else float(np.ptp(image)) or 1.0
    return max(0.0, float(fraction)) * span


def magic_wand(ann: ItemAnnotation, image: np.ndarray, selected: Sequence[Instance], x: int, y: int,
               tolerance: float, label: str, *, new: bool = False) -> Edit:
    """Flood fill from (x, y) within `tolerance` raw units, added like a painted region."""
    from .classic import flood_fill
    H, W = image.shape[:2]
    roi = None if H * W <= 4096 * 4096 else (x - 2048, y - 2048, x + 2048, y + 2048)
    res = flood_fill(image, (x, y), tolerance, roi=roi)
    if res is None:
        return Edit("Magic wand")
    return add_region(ann, selected, res[0], res[1], res[2], label, text="Magic wand", new=new)


def delete(selected: Sequence[Instance]) -> Edit:
    return Edit("Delete", [Change(i, None) for i in selected], select=[])


def relabel(selected: Sequence[Instance], label: str) -> Edit:
    return Edit("Relabel", [Change(i, i.copy(label=label)) for i in selected if i.label != label])


def fill_holes(selected: Sequence[Instance]) -> Edit:
    return Edit("Fill holes", [Change(i, i.copy(mask=emasks.fill_holes(i.mask))) for i in selected])


def merge(selected: Sequence[Instance]) -> Edit:
    if len(selected) < 2:
        return Edit("Merge", message="select two or more instances to merge (Shift+click)")
    merged = emasks.merge_instances(selected)
    return Edit("Merge", [Change(i, None) for i in selected] + [Change(None, merged)], select=[merged.id])


def split(targets: Sequence[Instance], points_xy, thickness: int = 1) -> Edit:
    """Cut each target the polyline crosses into pieces (the first keeps the id)."""
    pts = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)
    if len(pts) < 2:
        return Edit("Split")
    lx0, ly0 = np.floor(pts.min(axis=0)).astype(int)
    lx1, ly1 = np.ceil(pts.max(axis=0)).astype(int) + 1
    changes, ids = [], []
    for inst in targets:
        if intersect_region((lx0, ly0, lx1, ly1), inst_region(inst)) is None:
            continue
        pieces = emasks.split_instance(inst, pts, thickness=thickness)
        if len(pieces) < 2:
            continue
        first = inst.copy(mask=pieces[0].mask, x0=pieces[0].x0, y0=pieces[0].y0)
        changes.append(Change(inst, first))
        changes += [Change(None, p) for p in pieces[1:]]
        ids += [inst.id] + [p.id for p in pieces[1:]]
    if not changes:
        return Edit("Split", message="the line does not cut an instance in two")
    return Edit("Split", changes, select=ids)
