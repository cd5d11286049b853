"""Propagation through a stack: one instance becomes a 3-D object slice by slice.

The rule (one place): on the adjacent slice, the prompt is the selected instance's box
grown by `margin` (a fraction of its size, at least `min_margin` px); whatever answers
prompts (GrabCut on the display image, or the model's box prompt) turns it into a mask.
The answer joins the same 3-D object (`Instance.object_id`). Propagation stops when

- the answer vanishes (no mask, or fewer than `min_area` pixels), or
- its mask IoU with the previous slice's mask falls below `min_iou` (default 0.3), or
- it reaches the end of the stack (or `max_slices` steps).

A sphere's cross-sections shrink towards its ends, but adjacent slices of one object
still overlap well (a radius-20 sphere: IoU 0.5 one slice before its tip), while an
answer that wandered onto background or a neighbour overlaps poorly; 0.3 separates the
two on the synthetic spheres and on CT grains.

The answerer is a callable `answer(slice_index, box) -> Instance | None`, box =
(x0, y0, x1, y1) exclusive image pixels, so the rule does not know which engine answers.
numpy only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from .annotations import Instance, new_id
from .jobs import CancelToken, ProgressFn, check, report
from .masks import iou

Box = tuple[int, int, int, int]
Answerer = Callable[[int, Box], Optional[Instance]]


@dataclass(frozen=True)
class PropagationRule:
    margin: float = 0.15     # box growth, as a fraction of the box's width/height
    min_margin: int = 3      # ... and at least this many pixels
    min_iou: float = 0.3     # stop when IoU with the previous slice's mask is below
    min_area: int = 4        # a smaller answer counts as vanished


def grown_box(inst: Instance, shape: tuple[int, int], rule: PropagationRule = PropagationRule()) -> Box:
    """The instance's tight box grown by the rule's margin, clipped to the image."""
    t = inst.copy().tight()
    H, W = shape[:2]
    mx = max(rule.min_margin, int(round(rule.margin * t.width)))
    my = max(rule.min_margin, int(round(rule.margin * t.height)))
    return (max(0, t.x0 - mx), max(0, t.y0 - my),
            min(W, t.x0 + t.width + mx), min(H, t.y0 + t.height + my))


def propagate(answer: Answerer, start: Instance, start_index: int, n_slices: int,
              shape: tuple[int, int], *, direction: int = 1, rule: PropagationRule = PropagationRule(),
              max_slices: Optional[int] = None, progress: Optional[ProgressFn] = None,
              cancel: Optional[CancelToken] = None) -> list[tuple[int, Instance]]:
    """[(slice index, new instance)] from start_index + direction onwards, in order.

    `start` gets an object id if it has none (the caller saves that change); the new
    instances carry it, the start's label, and source "prompt".
    """
    if direction not in (1, -1):
        raise ValueError("direction must be +1 (next slices) or -1 (previous slices)")
    if start.object_id is None:
        start.object_id = new_id()
    limit = n_slices if max_slices is None else max(0, int(max_slices))
    out: list[tuple[int, Instance]] = []
    prev, k = start, start_index + direction
    while 0 <= k < n_slices and len(out) < limit:
        check(cancel)
        got = answer(k, grown_box(prev, shape, rule))
        if got is None or got.area < rule.min_area or iou(got, prev) < rule.min_iou:
            break
        inst = got.copy(label=start.label, source="prompt", object_id=start.object_id,
                        score=None, model=None).tight()
        out.append((k, inst))
        report(progress, len(out), limit, f"slice {k}")
        prev, k = inst, k + direction
    return out


def propagate_object(answer: Answerer, start: Instance, start_index: int, n_slices: int,
                     shape: tuple[int, int], *, rule: PropagationRule = PropagationRule(),
                     cancel: Optional[CancelToken] = None) -> list[tuple[int, Instance]]:
    """Both directions, "to the ends of the object": [(slice, instance)] in slice order."""
    back = propagate(answer, start, start_index, n_slices, shape, direction=-1, rule=rule, cancel=cancel)
    fwd = propagate(answer, start, start_index, n_slices, shape, direction=1, rule=rule, cancel=cancel)
    return list(reversed(back)) + fwd
