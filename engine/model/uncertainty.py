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
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..annotations import Instance
from ..jobs import CancelToken, ProgressFn, check, report
from ..masks import iou

MID_RANGE = (0.3, 0.7)
LOW_SCORE = 0.05          # detections below this are not looked at
MEASURES = ("flip", "mid", "both")


@dataclass
class Uncertainty:
    flip: float
    mid: float
    detections: int
    instance_doubt: list[float] = field(default_factory=list)  # per detection of the image, 1 - IoU

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
                       instance_doubt=doubt)


def rank_items(project, predictor, item_ids: Optional[Sequence[str]] = None, *, by: str = "flip",
               score_threshold: float = 0.5, tile: Optional[int] = None,
               progress: Optional[ProgressFn] = None, cancel: Optional[CancelToken] = None
               ) -> list[tuple[str, float, Uncertainty]]:
    """Unreviewed items (or `item_ids`), most uncertain first: [(item id, score, details)]."""
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
    report(progress, len(item_ids), len(item_ids), "done")
    # most uncertain first; ties keep the project's order
    order = sorted(range(len(out)), key=lambda k: (-out[k][1], k))
    return [out[k] for k in order]
