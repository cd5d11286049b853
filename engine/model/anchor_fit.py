"""Anchor sizes and aspect ratios fitted to the training objects.

An RPN anchor is a positive when its IoU with an object is >= 0.7 (torchvision's
default). Anchors far from the objects' sizes or shapes leave many objects with no
positive anchor at all: only the one "low-quality" best anchor, a weak signal for
learning from a few hundred objects. `fit_anchors` picks, from a small set of candidate
layouts (one size per FPN level, doubling per level, and a few aspect-ratio sets), the
one under which most training objects have a positive anchor, measured on the objects'
real positions on the anchor grids (`anchor_coverage`).

The chosen sizes and ratios are recorded in the model config (checkpoint), so the
Predictor builds the same anchors. numpy only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

STRIDES = (4, 8, 16, 32, 64)            # FPN levels P2..P6 (torchvision's Mask R-CNN)
POSITIVE_IOU = 0.7                       # torchvision's RPN fg_iou_thresh
BASE_SIZES = (8, 12, 16, 24, 32)         # smallest P2 anchor; x2 per level
SCALES_PER_OCTAVE = (1, 2, 3)            # sizes per level: base * 2^(j/n), j < n
RATIO_SETS = ((0.5, 1.0, 2.0), (0.4, 1.0, 2.5), (0.33, 1.0, 3.0), (0.33, 0.5, 1.0, 2.0, 3.0))
MAX_ANCHORS_PER_LOCATION = 9             # RPN cost: anchors per grid point (RetinaNet uses 9)
DEFAULT_RATIOS = (0.5, 1.0, 2.0)


@dataclass
class AnchorFit:
    sizes: tuple            # per FPN level, a tuple of sizes
    ratios: tuple           # height / width, as torchvision's AnchorGenerator
    coverage: float         # fraction of objects with an anchor at IoU >= 0.7
    mean_best_iou: float    # mean over objects of the best anchor IoU
    objects: int

    def to_json(self) -> dict:
        return {"sizes": list(self.sizes), "ratios": list(self.ratios), "coverage": round(self.coverage, 4),
                "mean_best_iou": round(self.mean_best_iou, 4), "objects": self.objects}


def _anchor_shapes(sizes: Sequence, ratios: Sequence[float]) -> list[np.ndarray]:
    """Per level, (n_sizes * n_ratios, 2) anchor (h, w) as torchvision's AnchorGenerator
    makes them (area size^2, h/w = ratio, rounded). A level's entry is a size or a tuple
    of sizes."""
    out = []
    r = np.asarray(ratios, float)
    for level in sizes:
        s = np.asarray(level if isinstance(level, (tuple, list)) else (level,), float)
        h = np.round(np.outer(np.sqrt(r), s)).ravel()
        w = np.round(np.outer(1 / np.sqrt(r), s)).ravel()
        out.append(np.stack([h, w], 1))
    return out


def best_anchor_iou(boxes: np.ndarray, sizes: Sequence[float], ratios: Sequence[float],
                    strides: Sequence[int] = STRIDES) -> np.ndarray:
    """For each box (x0, y0, x1, y1), the highest IoU with any anchor of the grids.

    torchvision centres the anchors of a level with stride s at (i*s, j*s); a box is
    compared with the anchors at the 2x2 grid points around its centre on every level."""
    boxes = np.asarray(boxes, float).reshape(-1, 4)
    best = np.zeros(len(boxes))
    if not len(boxes):
        return best
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    area_b = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    for shapes, s in zip(_anchor_shapes(sizes, ratios), strides):
        for gx in (np.floor(cx / s) * s, np.floor(cx / s) * s + s):
            for gy in (np.floor(cy / s) * s, np.floor(cy / s) * s + s):
                for h, w in shapes:
                    ax0, ax1, ay0, ay1 = gx - w / 2, gx + w / 2, gy - h / 2, gy + h / 2
                    iw = np.clip(np.minimum(ax1, boxes[:, 2]) - np.maximum(ax0, boxes[:, 0]), 0, None)
                    ih = np.clip(np.minimum(ay1, boxes[:, 3]) - np.maximum(ay0, boxes[:, 1]), 0, None)
                    inter = iw * ih
                    iou = inter / (area_b + h * w - inter)
                    best = np.maximum(best, iou)
    return best


def anchor_coverage(boxes, sizes, ratios, strides=STRIDES) -> tuple[float, float]:
    """(fraction of boxes with a positive anchor, mean best IoU)."""
    b = best_anchor_iou(boxes, sizes, ratios, strides)
    if not len(b):
        return 0.0, 0.0
    return float((b >= POSITIVE_IOU).mean()), float(b.mean())


def level_sizes(base: float, per_octave: int, levels: int = len(STRIDES)) -> tuple:
    """((base, base*2^(1/n), ...), (2*base, ...), ...): n sizes per FPN level."""
    return tuple(tuple(int(round(base * 2 ** k * 2 ** (j / per_octave))) for j in range(per_octave))
                 for k in range(levels))


def fit_anchors(boxes: Iterable, *, base_sizes: Sequence[int] = BASE_SIZES,
                scales: Sequence[int] = SCALES_PER_OCTAVE,
                ratio_sets: Sequence[Sequence[float]] = RATIO_SETS,
                max_per_location: int = MAX_ANCHORS_PER_LOCATION) -> AnchorFit | None:
    """The candidate layout (at most `max_per_location` anchors per grid point) with the
    highest coverage, then mean best IoU, then fewer anchors. None without boxes."""
    boxes = np.asarray(list(boxes), float).reshape(-1, 4)
    boxes = boxes[(boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])]
    if not len(boxes):
        return None
    best_key, best = None, None
    for s0 in base_sizes:
        for n in scales:
            sizes = level_sizes(s0, n)
            for ratios in ratio_sets:
                if n * len(ratios) > max_per_location:
                    continue
                cov, miou = anchor_coverage(boxes, sizes, ratios)
                key = (round(cov, 3), round(miou, 3), -n * len(ratios))
                if best_key is None or key > best_key:
                    best_key = key
                    best = AnchorFit(sizes, tuple(float(r) for r in ratios), cov, miou, len(boxes))
    return best


def instance_boxes(items) -> np.ndarray:
    """(x0, y0, x1, y1) of every instance of training items (objects with .instances,
    each with x0, y0, width, height)."""
    rows = [(i.x0, i.y0, i.x0 + i.width, i.y0 + i.height) for it in items for i in it.instances]
    return np.asarray(rows, float).reshape(-1, 4)
