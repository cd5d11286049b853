"""Model results meet an item: the one merge rule and the one label-compatibility check.

Used by `maskloop segment` (Predictor.predict_items), the GUI's review of auto-segment
results, and the model loaders — so a prediction lands in an item the same way
whichever door it came through. numpy only (no torch, no Qt).

The merge rule (DESIGN.md section 2: never over reviewed work):
- a reviewed item is left as it is (unless the caller explicitly overwrites it);
- earlier instances of the same source ("model" for auto-segment, "classic" for the
  model-free proposals) are replaced by the new results;
- every other instance (manual, imported, prompt, the other source) stays, and a new
  result that duplicates one of them (mask IoU >= DUPLICATE_IOU) is left out;
- the item becomes "predicted" when the results come from a model or it was "new".

The score floor: model predictions below STORE_SCORE are never stored (the GUI's slider
cannot go lower); DEFAULT_SCORE is the threshold `maskloop segment` and the slider start at.

Public API:
    DUPLICATE_IOU, STORE_SCORE, DEFAULT_SCORE
    above_floor(instances, floor=STORE_SCORE) -> list[Instance]
    is_duplicate(inst, others, min_iou=DUPLICATE_IOU) -> bool
    merge_results(ann, results, replace_source="model") -> (remove, add)
    merged_annotation(ann, results, *, source="model", shape=None, overwrite_reviewed=False)
        -> ItemAnnotation | None   (None: reviewed, left alone)
    missing_labels(model_labels, project_labels) -> list[str]
    check_labels(model_labels, project_labels, *, exact=False, path=None)  raises LabelMismatchError
    LabelMismatchError (a CheckpointError and a LabelError)
"""
from __future__ import annotations

from typing import Iterable, Optional, Sequence

from .annotations import Instance, ItemAnnotation
from .errors import CheckpointError, LabelError

DUPLICATE_IOU = 0.5      # a new result this similar to a kept instance is the same object
STORE_SCORE = 0.25       # model predictions below this are not kept at all
DEFAULT_SCORE = 0.5      # `maskloop segment --score` default, the GUI slider's start


# --------------------------------------------------------------------------------------
# merging results into an item
# --------------------------------------------------------------------------------------

def above_floor(instances: Iterable[Instance], floor: float = STORE_SCORE) -> list[Instance]:
    """Instances without a score, or with one >= floor (what is worth storing)."""
    return [i for i in instances if i.score is None or i.score >= floor]


def _boxes_meet(a: Instance, b: Instance) -> bool:
    return (a.x0 < b.x0 + b.width and b.x0 < a.x0 + a.width
            and a.y0 < b.y0 + b.height and b.y0 < a.y0 + a.height)


def is_duplicate(inst: Instance, others: Sequence[Instance], min_iou: float = DUPLICATE_IOU) -> bool:
    """True when `inst` overlaps one of `others` with mask IoU >= min_iou (boxes first,
    so far-apart instances cost nothing)."""
    from .masks import iou  # masks loads OpenCV: importing this module (the CLI does) stays light
    return any(_boxes_meet(inst, q) and iou(inst, q) >= min_iou for q in others)


def merge_results(ann: ItemAnnotation, results: Sequence[Instance],
                  replace_source: str = "model") -> tuple[list[Instance], list[Instance]]:
    """(instances to remove, instances to add) when `results` (all of `replace_source`)
    arrive for `ann`: earlier instances of that source go, other instances stay, and
    results that duplicate a kept instance are left out. Status is not looked at here
    (see merged_annotation)."""
    remove = [i for i in ann.instances if i.source == replace_source]
    kept = [i for i in ann.instances if i.source != replace_source]
    add = [p for p in results if not is_duplicate(p, kept)]
    return remove, add


def merged_annotation(ann: ItemAnnotation, results: Sequence[Instance], *, source: str = "model",
                      shape: Optional[tuple[int, int]] = None,
                      overwrite_reviewed: bool = False) -> Optional[ItemAnnotation]:
    """The item after the merge rule, as a new ItemAnnotation; None when `ann` is reviewed
    (and overwrite_reviewed is False): reviewed work is never replaced. `shape` (h, w) of
    the image fixes the size of an annotation that did not know it yet."""
    if ann.status == "reviewed" and not overwrite_reviewed:
        return None
    remove, add = merge_results(ann, results, source)
    gone = {id(i) for i in remove}
    instances = [i for i in ann.instances if id(i) not in gone] + list(add)
    status = "predicted" if source == "model" or ann.status in ("new", "reviewed") else ann.status
    h, w = shape if shape is not None else (ann.height, ann.width)
    return ItemAnnotation(ann.item_id, int(h), int(w), instances, status)


# --------------------------------------------------------------------------------------
# labels: may this model write into this project?
# --------------------------------------------------------------------------------------

class LabelMismatchError(CheckpointError, LabelError):
    """The model's classes do not fit the project's labels (both a CheckpointError, as a
    model that does not fit, and a LabelError, as a label set that does not match)."""


def _names(labels) -> list[str]:
    return list(labels.names() if hasattr(labels, "names") else labels)


def missing_labels(model_labels, project_labels) -> list[str]:
    """Model classes the project does not have (in the model's order)."""
    known = set(_names(project_labels))
    return [n for n in _names(model_labels) if n not in known]


def check_labels(model_labels, project_labels, *, exact: bool = False, path=None) -> None:
    """LabelMismatchError when the model's classes do not fit the project's labels.

    By default every model class must exist in the project (a project may have more
    labels than the model predicts); exact=True also requires the same names in the
    same order (a run that continues training). `path`: the model file, for the message.
    """
    names, expected = _names(model_labels), _names(project_labels)
    if exact:
        if names != expected:
            raise LabelMismatchError(f"the model's classes {names} do not match the project's labels {expected}",
                                     path, "label_names")
        return
    unknown = missing_labels(names, expected)
    if unknown:
        raise LabelMismatchError(f"the model predicts classes the project does not have: {', '.join(unknown)} "
                                 f"(project labels: {', '.join(expected) or 'none'}); add the labels or "
                                 f"use a model trained on this project", path, "label_names")
