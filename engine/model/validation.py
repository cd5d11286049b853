"""Scoring a model on annotated items: the one loop used by the Trainer's validation and
by the activation rule's fair comparison (the active model on a new run's validation items)."""
from __future__ import annotations

from typing import Callable, Optional

from ..annotations import ItemAnnotation
from .evaluate import evaluate


def limit_proposals(pred, items) -> None:
    """Validation speed: at most max(100, 3x the most objects of a validation image)
    detections per image (COCO AP counts 100 per image), since the mask head runs on every
    detection, and early in training there are hundreds of low-score ones. Proposals are
    left as the Predictor has them, so validation scores what `segment` will produce.
    The same rule is used whenever two models are compared on validation items."""
    most = max((len(it.instances) for it in items), default=0)
    rh = getattr(getattr(pred, "model", None), "roi_heads", None)
    if rh is not None:
        rh.detections_per_img = int(min(rh.detections_per_img, max(100, 3 * most)))


def score_items(pred, dataset, label_names, *, score_threshold: float = 0.05, cancel=None,
                before_item: Optional[Callable[[], None]] = None) -> dict:
    """Metrics (engine.model.evaluate) of Predictor `pred` on the items of an
    InstanceDataset (ground truth: their instances, as reviewed)."""
    limit_proposals(pred, dataset.items)
    pairs = []
    for i, it in enumerate(dataset.items):
        if before_item is not None:
            before_item()
        raw, _ = dataset.raw(i)
        insts = pred.predict(raw, score_threshold=score_threshold, cancel=cancel)
        pairs.append((ItemAnnotation(it.key, it.height, it.width, list(it.instances), "reviewed"), insts))
    return evaluate(pairs, label_names, acc_score_threshold=0.5, per_class=False)
