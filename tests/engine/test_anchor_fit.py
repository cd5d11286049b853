"""Anchor fitting: coverage measured on the anchor grids, and the fitted layout."""
import numpy as np

from engine.model.anchor_fit import anchor_coverage, best_anchor_iou, fit_anchors, level_sizes


def test_a_box_equal_to_an_anchor_has_iou_one():
    # a 16x16 box centred on the stride-4 grid point (8, 8): the P2 anchor of size 16
    iou = best_anchor_iou([[0, 0, 16, 16]], (16, 32, 64, 128, 256), (1.0,))
    assert iou[0] == 1.0


def test_objects_between_octaves_lack_positive_anchors_with_one_size_per_level():
    # 23 px objects: IoU with 16 is 0.48, with 32 0.52 -> no positive anchor (>= 0.7)
    boxes = [[x, y, x + 23, y + 23] for x in range(0, 200, 37) for y in range(0, 200, 41)]
    one, _ = anchor_coverage(boxes, (16, 32, 64, 128, 256), (0.5, 1.0, 2.0))
    three, _ = anchor_coverage(boxes, level_sizes(16, 3), (0.5, 1.0, 2.0))
    assert one == 0.0
    assert three > 0.9


def test_fit_finds_small_elongated_objects():
    rng = np.random.default_rng(0)
    w = rng.uniform(5, 7, 300)
    h = w * 3.0                            # tall thin objects, 15..21 px high
    x = rng.uniform(0, 400, 300)
    y = rng.uniform(0, 400, 300)
    boxes = np.stack([x, y, x + w, y + h], 1)
    fit = fit_anchors(boxes)
    default_cov, _ = anchor_coverage(boxes, (16, 32, 64, 128, 256), (0.5, 1.0, 2.0))
    assert fit.coverage > default_cov + 0.3
    assert max(fit.ratios) >= 2.5          # torchvision ratio = height / width
    assert len(fit.sizes) == 5 and all(len(level) * len(fit.ratios) <= 9 for level in fit.sizes)
    assert fit.to_json()["objects"] == 300


def test_no_boxes_no_fit():
    assert fit_anchors([]) is None
    assert fit_anchors([[5, 5, 5, 9]]) is None   # zero width
