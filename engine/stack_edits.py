"""Edits of 3-D objects that span a stack's slices, as {item id: [Change]} for one undo step.

Each function reads the stack's annotations from disk (the caller saves the slice it
holds first), works out what a user action changes on every slice, and returns the
changes; engine.stack_history.commit_step writes them as one step, undoable as one.
No Qt; the long ones take progress/cancel (engine.jobs) so the GUI runs them off its thread.

- `link_changes`: the overlap linker (engine.objects.link_stack) over the whole stack.
- `split_changes`: an object cut at a slice: that slice and the ones after it get a new id.
- `propagate_changes`: an instance carried slice by slice (engine.propagate) with an
  answerer (GrabCut on the displayed slice by default). Propagation stops at a slice that
  already holds the object (its instance there is the user's), so running it again, or
  towards a part drawn by hand, never stacks two instances of one object on a slice.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from .annotations import Instance, ItemAnnotation
from .errors import ProjectError
from .history import Change
from .jobs import CancelToken, ProgressFn, check, report
from .objects import DEFAULT_MIN_IOU, link_stack, object_extent, split_object, stack_items
from .propagate import Answerer, PropagationRule, propagate
from .stack_history import changes_between

Changes = dict[str, list[Change]]


def _stop_rule(rule: PropagationRule = PropagationRule()) -> str:
    return (f"it stops where the answer vanishes (under {rule.min_area} px), where its IoU with the previous "
            f"slice's mask is under {rule.min_iou:g}, at a slice that holds the object already, "
            f"or at the end of the stack")


#: The stop rule of propagate_changes in words (the GUI's tips and messages).
STOP_RULE = _stop_rule()


def slice_ids(project, item_id: str) -> list[str]:
    """The item ids of the stack that holds `item_id`, in slice order (ProjectError for a
    plain 2-D item)."""
    it = project.item(item_id)
    if project.sources[it.source].n_slices <= 1:
        raise ProjectError(f"item {item_id!r} is not a slice of a stack or series", project.manifest_path)
    return [i.id for i in stack_items(project, it.source)]


def load_stack(project, ids: list[str], progress: Optional[ProgressFn] = None,
               cancel: Optional[CancelToken] = None) -> list[ItemAnnotation]:
    out = []
    for k, item_id in enumerate(ids):
        check(cancel)
        out.append(project.load_annotation(item_id))
        report(progress, k + 1, len(ids), "reading slices")
    return out


def _as_changes(anns: list[ItemAnnotation], changed: list[ItemAnnotation]) -> Changes:
    by_id = {a.item_id: a for a in anns}
    return {new.item_id: changes_between(by_id[new.item_id], new) for new in changed}


def link_changes(project, item_id: str, min_iou: float = DEFAULT_MIN_IOU, *,
                 progress: Optional[ProgressFn] = None, cancel: Optional[CancelToken] = None) -> Changes:
    """Link the stack of `item_id` by overlap (`maskloop link` does the same, and saves)."""
    anns = load_stack(project, slice_ids(project, item_id), progress, cancel)
    return _as_changes(anns, link_stack(anns, min_iou, progress=progress, cancel=cancel))


def split_changes(project, item_id: str, object_id: str, *, progress: Optional[ProgressFn] = None,
                  cancel: Optional[CancelToken] = None) -> Changes:
    """Split `object_id` at the slice `item_id`: from it on, the object's instances get a
    new id. ProjectError when the object does not reach over that slice."""
    ids = slice_ids(project, item_id)
    anns = load_stack(project, ids, progress, cancel)
    at = ids.index(item_id)
    ext = object_extent(anns, object_id)
    if ext is not None and ext[0] == at:
        raise ProjectError(f"the object starts on this slice ({at + 1}); go to a later slice of it to "
                           f"split it there", project.annotation_path(item_id))
    return _as_changes(anns, split_object(anns, object_id, at))


def slice_display(project, item_id: str, window: Optional[tuple[float, float]]) -> np.ndarray:
    """A slice as the canvas shows it (8-bit through the window): what GrabCut sees."""
    from .imageio import to_uint8
    image = project.load_image(item_id)
    if window is None and image.dtype == np.uint8:
        return image
    return to_uint8(image, window=window)


def grabcut_for_stack(project, ids: list[str], window) -> Answerer:
    from .prompt_classic import grabcut_answerer
    return grabcut_answerer(lambda k: slice_display(project, ids[k], window))


def propagate_changes(project, item_id: str, start: Instance, direction: int, *,
                      window: Optional[tuple[float, float]] = None,
                      answer_for: Optional[Callable[[list[str]], Answerer]] = None,
                      rule: PropagationRule = PropagationRule(), max_slices: Optional[int] = None,
                      progress: Optional[ProgressFn] = None, cancel: Optional[CancelToken] = None) -> Changes:
    """Carry `start` (an instance on slice `item_id`) up (-1), down (+1) or both ways (0).

    New instances join start's object (start gets one if it has none: a change on its own
    slice) with source "prompt". `answer_for(ids)` makes the answerer (default: GrabCut on
    each slice's display through `window`); `max_slices` limits each direction (1: the
    adjacent slice only, the GUI's "Propagate to next slice")."""
    if direction not in (-1, 0, 1):
        raise ValueError("direction must be -1 (up), +1 (down) or 0 (both)")
    ids = slice_ids(project, item_id)
    anns = load_stack(project, ids, None, cancel)
    at = ids.index(item_id)
    seed = start.copy()                      # propagate gives it an object id when it has none
    base = (answer_for or (lambda i: grabcut_for_stack(project, i, window)))(ids)
    had = {k for k, a in enumerate(anns) if seed.object_id and any(i.object_id == seed.object_id
                                                                      for i in a.instances)}

    def answer(k: int, box):
        return None if k in had else base(k, box)   # the object is there already: stop

    shape = (anns[at].height, anns[at].width)
    found: list[tuple[int, Instance]] = []
    for d in ((-1, 1) if direction == 0 else (direction,)):
        def step_progress(done, total, msg="", _d=d):
            report(progress, done, total, f"{'up' if _d < 0 else 'down'}: {msg}")
        found += propagate(answer, seed, at, len(ids), shape, direction=d, rule=rule, max_slices=max_slices,
                           progress=step_progress, cancel=cancel)
    check(cancel)
    out: Changes = {}
    if start.object_id != seed.object_id:
        out[item_id] = [Change(start, start.copy(object_id=seed.object_id))]
    for k, inst in sorted(found, key=lambda p: p[0]):
        out.setdefault(ids[k], []).append(Change(None, inst))
    return out
