"""Uncertainty of the model about an item, to choose what a person corrects next.

Two measures from the model itself, both in [0, 1] (higher: more doubtful):

- `flip`: disagreement between the prediction of the image and the prediction of its
  mirror image (flipped back). Detections (score >= `score_threshold`) of the two are
  matched one-to-one by mask IoU (Hungarian); agreement = sum of matched IoUs /
  (|A| + |B| - matched), so a detection only one of the two sees counts as a full
  disagreement and a poor outline as a partial one. flip = 1 - agreement (0 when both
  are empty: the model is sure there is nothing).
- `mid`: the share of detections with a mid-range score, n(0.3 <= s < 0.7) / n(s >= 0.3):
  objects the model half believes in.

The item's score is `flip` by default (`by="mid"` for the other; `by="both"`: their
mean). Which ranks better is measured by benchmarks/bench_active.py, not assumed; the
figures are in docs/benchmarks.md. Per instance, `1 - best IoU with the mirror
prediction` orders the instances of an item (the doubtful ones first).

Scores are kept beside the model that made them: models/<run>/uncertainty.json holds
each scored item's flip, mid and its detections' boxes with their doubt (`save_scores`,
`load_scores`; `rank_and_store` ranks and writes, keeping what was scored when cancelled).
They depend only on the model and the item's pixels, not on its annotation, so they stay
true until another model is active; `maskloop rank` and the GUI read and write the same
file. `instance_doubts` gives an annotation's instances the doubt of the detection each
one is (matched by box), so a panel can sort a slice's instances without a model run.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..annotations import Instance
from ..fsutil import atomic_write_json, is_inside
from ..jobs import CancelToken, ProgressFn, check, report
from ..masks import iou

MID_RANGE = (0.3, 0.7)
LOW_SCORE = 0.05          # detections below this are not looked at
MEASURES = ("flip", "mid", "both")
DEFAULT_MEASURE = "flip"
SCORES_FILE = "uncertainty.json"
SCORES_SCHEMA = 1
BOX_MATCH = 0.5           # an instance is a detection when their boxes overlap this much (IoU)


@dataclass
class Uncertainty:
    flip: float
    mid: float
    detections: int
    instance_doubt: list[float] = field(default_factory=list)  # per detection of the image, 1 - IoU
    boxes: list[tuple[int, int, int, int]] = field(default_factory=list)  # (x0, y0, w, h) per detection

    def score(self, by: str = "flip") -> float:
        if by == "flip":
            return self.flip
        if by == "mid":
            return self.mid
        if by == "both":
            return 0.5 * (self.flip + self.mid)
        raise ValueError(f"unknown uncertainty measure {by!r} (use {', '.join(MEASURES)})")


def flip_back(instances: Iterable[Instance], width: int) -> list[Instance]:
    """Instances predicted on image[:, ::-1], mirrored back onto the image."""
    return [i.copy(mask=i.mask[:, ::-1].copy(), x0=width - (i.x0 + i.width)) for i in instances]


def _boxes_meet(a: Instance, b: Instance) -> bool:
    return (a.x0 < b.x0 + b.width and b.x0 < a.x0 + a.width and
            a.y0 < b.y0 + b.height and b.y0 < a.y0 + a.height)


def iou_matrix(a: Sequence[Instance], b: Sequence[Instance]) -> np.ndarray:
    m = np.zeros((len(a), len(b)))
    for i, p in enumerate(a):
        for j, q in enumerate(b):
            if _boxes_meet(p, q):
                m[i, j] = iou(p, q)
    return m


def flip_disagreement(a: Sequence[Instance], b: Sequence[Instance]) -> tuple[float, list[float]]:
    """(1 - matched-IoU agreement between two predictions, per-instance doubt of a)."""
    if not a and not b:
        return 0.0, []
    m = iou_matrix(a, b)
    matched, total_iou = 0, 0.0
    best = np.zeros(len(a))
    if m.size:
        rows, cols = linear_sum_assignment(-m)
        for r, c in zip(rows, cols):
            if m[r, c] > 0:
                matched += 1
                total_iou += m[r, c]
                best[r] = m[r, c]
    agreement = total_iou / (len(a) + len(b) - matched)
    return float(1.0 - agreement), [float(1.0 - v) for v in best]


def mid_share(scores: Sequence[float], lo: float = MID_RANGE[0], hi: float = MID_RANGE[1]) -> float:
    s = np.asarray([v for v in scores if v is not None], float)
    n = int(np.count_nonzero(s >= lo))
    return float(np.count_nonzero((s >= lo) & (s < hi)) / n) if n else 0.0


def item_uncertainty(predictor, image: np.ndarray, *, score_threshold: float = 0.5,
                     tile: Optional[int] = None, cancel: Optional[CancelToken] = None) -> Uncertainty:
    """Two predictions (image and mirror image) -> the item's Uncertainty."""
    arr = np.asarray(image)
    W = arr.shape[1]
    both = predictor.predict_many([arr, arr[:, ::-1]], score_threshold=LOW_SCORE, tile=tile, cancel=cancel)
    plain = both[0]
    mirror = flip_back(both[1], W)
    a = [i for i in plain if (i.score or 0.0) >= score_threshold]
    b = [i for i in mirror if (i.score or 0.0) >= score_threshold]
    flip, doubt = flip_disagreement(a, b)
    return Uncertainty(flip=flip, mid=mid_share([i.score for i in plain]), detections=len(a),
                       instance_doubt=doubt, boxes=[(i.x0, i.y0, i.width, i.height) for i in a])


def rank_items(project, predictor, item_ids: Optional[Sequence[str]] = None, *, by: str = "flip",
               score_threshold: float = 0.5, tile: Optional[int] = None,
               progress: Optional[ProgressFn] = None, cancel: Optional[CancelToken] = None,
               on_scored: Optional[Callable[[str, Uncertainty], None]] = None
               ) -> list[tuple[str, float, Uncertainty]]:
    """Unreviewed items (or `item_ids`), most uncertain first: [(item id, score, details)].
    `on_scored(item id, details)` is called as each item is done (to keep partial work)."""
    Uncertainty(0, 0, 0).score(by)   # an unknown measure fails before any work
    if item_ids is None:
        st = project.statuses()
        item_ids = [it.id for it in project.items if st.get(it.id) != "reviewed"]
    out = []
    for k, item_id in enumerate(item_ids):
        check(cancel)
        report(progress, k, len(item_ids), str(item_id))
        u = item_uncertainty(predictor, project.load_image(item_id), score_threshold=score_threshold,
                             tile=tile, cancel=cancel)
        out.append((item_id, u.score(by), u))
        if on_scored is not None:
            on_scored(item_id, u)
    report(progress, len(item_ids), len(item_ids), "done")
    # most uncertain first; ties keep the project's order
    order = sorted(range(len(out)), key=lambda k: (-out[k][1], k))
    return [out[k] for k in order]


# ---------------------------------------------------------------------- kept with the model

def scores_path(project, model_path) -> Optional[Path]:
    """models/<run>/uncertainty.json for a model of the project's runs; None for a
    checkpoint elsewhere (nothing is written beside a file the project does not own)."""
    path = Path(model_path)
    if not is_inside(path, project.models_dir) or path.parent == project.models_dir:
        return None
    return path.parent / SCORES_FILE


def _record(u: Uncertainty) -> dict:
    return {"flip": round(u.flip, 6), "mid": round(u.mid, 6), "detections": u.detections,
            "doubt": [round(d, 6) for d in u.instance_doubt], "boxes": [list(b) for b in u.boxes]}


def _from_record(r: dict) -> Uncertainty:
    boxes = [tuple(int(v) for v in b) for b in r.get("boxes") or [] if isinstance(b, list) and len(b) == 4]
    doubt = [float(d) for d in r.get("doubt") or []]
    if len(doubt) != len(boxes):
        boxes, doubt = [], []
    return Uncertainty(flip=float(r["flip"]), mid=float(r["mid"]), detections=int(r.get("detections", 0)),
                       instance_doubt=doubt, boxes=boxes)


def load_scores(project, model_path) -> dict[str, Uncertainty]:
    """The stored Uncertainty of every item scored with this model ({} when none, or when
    the file is unreadable: scores are a hint that ranking again rebuilds)."""
    path = scores_path(project, model_path)
    if path is None or not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        items = data["items"]
        return {str(k): _from_record(v) for k, v in items.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def stored_threshold(project, model_path) -> Optional[float]:
    path = scores_path(project, model_path)
    try:
        return float(json.loads(path.read_text(encoding="utf-8"))["score_threshold"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def save_scores(project, model_path, scored: dict[str, Uncertainty], *,
                score_threshold: float = 0.5) -> Optional[Path]:
    """Add these items' scores to the model's file (atomically); scores made at another
    detection threshold are replaced, not mixed. Returns the file (None: not a run)."""
    path = scores_path(project, model_path)
    if path is None:
        return None
    keep = load_scores(project, model_path) if stored_threshold(project, model_path) == score_threshold else {}
    keep.update(scored)
    atomic_write_json(path, {"schema": SCORES_SCHEMA, "score_threshold": score_threshold,
                             "items": {k: _record(u) for k, u in keep.items()}},
                      indent=None, inside=project.models_dir)
    return path


def rank_and_store(project, predictor, model_path, item_ids: Optional[Sequence[str]] = None, *,
                   by: str = DEFAULT_MEASURE, score_threshold: float = 0.5, tile: Optional[int] = None,
                   progress: Optional[ProgressFn] = None, cancel: Optional[CancelToken] = None
                   ) -> list[tuple[str, float, Uncertainty]]:
    """rank_items, and the scores saved with the model (`save_scores`), also the part
    done before a cancel or an error."""
    scored: dict[str, Uncertainty] = {}
    try:
        return rank_items(project, predictor, item_ids, by=by, score_threshold=score_threshold, tile=tile,
                          progress=progress, cancel=cancel, on_scored=scored.__setitem__)
    finally:
        if scored:
            save_scores(project, model_path, scored, score_threshold=score_threshold)


def _box_iou(a, b) -> float:
    ax0, ay0, aw, ah = a
    bx0, by0, bw, bh = b
    w = min(ax0 + aw, bx0 + bw) - max(ax0, bx0)
    h = min(ay0 + ah, by0 + bh) - max(ay0, by0)
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / float(aw * ah + bw * bh - inter)


def instance_doubts(u: Optional[Uncertainty], instances: Sequence[Instance]) -> dict[str, float]:
    """{instance id: doubt} for the instances that are one of the model's detections
    (box IoU >= BOX_MATCH, one-to-one); others (drawn by hand, or no score stored) are absent."""
    if u is None or not u.boxes or not instances:
        return {}
    m = np.array([[_box_iou((i.x0, i.y0, i.width, i.height), b) for b in u.boxes] for i in instances])
    rows, cols = linear_sum_assignment(-m)
    return {instances[r].id: u.instance_doubt[c] for r, c in zip(rows, cols) if m[r, c] >= BOX_MATCH}
