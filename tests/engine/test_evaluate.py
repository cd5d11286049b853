"""engine.model.evaluate: COCO mask AP (pycocotools) and the microscopy accuracy acc50."""
from __future__ import annotations

import numpy as np
import pytest

from engine import synthetic as S
from engine.annotations import Instance, ItemAnnotation
from engine.model.evaluate import evaluate, match_counts


def as_pred(insts, score=0.9, label=None):
    return [i.copy(score=score, source="model", label=label or i.label) for i in insts]


def box_inst(x0, y0, w, h, label="nucleus", score=None):
    return Instance(np.ones((h, w), bool), x0, y0, label, score=score)


@pytest.fixture(scope="module")
def nuclei():
    return S.nuclei_sample(256, seed=0).annotation


def test_perfect_predictions_score_one(nuclei):
    r = evaluate([(nuclei, as_pred(nuclei.instances))], ["nucleus"])
    assert r["mask_AP"] == pytest.approx(1.0) and r["mask_AP50"] == pytest.approx(1.0)
    assert r["acc50"] == 1.0 and r["tp"] == len(nuclei.instances) and r["fp"] == r["fn"] == 0
    assert r["per_class"]["nucleus"]["AP"] == pytest.approx(1.0)


def test_partial_matches_give_sensible_numbers(nuclei):
    gt = nuclei.instances
    half = as_pred(gt[::2])
    r = evaluate([(nuclei, half)], ["nucleus"])
    n, k = len(gt), len(half)
    assert r["tp"] == k and r["fn"] == n - k and r["fp"] == 0
    assert r["acc50"] == pytest.approx(k / n)
    assert 0.4 < r["mask_AP50"] < 0.6 and r["recall50"] == pytest.approx(k / n) and r["precision50"] == 1.0
    # add false positives in empty places, with low scores: AP barely changes, acc50 drops
    fps = [box_inst(0, 0, 2, 2, score=0.6), box_inst(250, 250, 3, 3, score=0.55)]
    r2 = evaluate([(nuclei, half + fps)], ["nucleus"])
    assert r2["fp"] == 2 and r2["acc50"] == pytest.approx(k / (n + 2))
    assert r2["mask_AP50"] == pytest.approx(r["mask_AP50"], abs=0.02)


def test_iou_thresholds_shape_ap_and_acc50():
    gt = ItemAnnotation("a", 100, 100, [box_inst(10, 10, 40, 40)])
    # IoU 0.575: a hit at 0.5 and 0.55, a miss from 0.6 up
    pred = box_inst(10, 10, 40, 23, score=0.9)  # 920 / 1600
    r = evaluate([(gt, [pred])], ["nucleus"])
    assert r["acc50"] == 1.0 and r["mask_AP50"] == pytest.approx(1.0)
    assert r["mask_AP"] == pytest.approx(0.2, abs=0.01)  # 2 of 10 IoU thresholds
    # IoU 0.4: a miss everywhere
    r = evaluate([(gt, [box_inst(10, 10, 40, 16, score=0.9)])], ["nucleus"])
    assert r["acc50"] == 0.0 and r["mask_AP50"] == 0.0 and r["fp"] == 1 and r["fn"] == 1


def test_one_to_one_matching_and_classes():
    gt = ItemAnnotation("a", 100, 100, [box_inst(10, 10, 20, 20, "rock"), box_inst(60, 60, 20, 20, "pore")])
    preds = [box_inst(10, 10, 20, 20, "rock", 0.9), box_inst(10, 10, 20, 20, "rock", 0.8),  # duplicate
             box_inst(60, 60, 20, 20, "rock", 0.9)]                                         # wrong class
    r = evaluate([(gt, preds)], ["rock", "pore"])
    assert (r["tp"], r["fp"], r["fn"]) == (1, 2, 1)
    assert r["acc50"] == pytest.approx(1 / 4)
    assert r["per_class"]["rock"]["AP50"] == pytest.approx(1.0)
    assert r["per_class"]["pore"]["AP50"] == 0.0
    assert r["mask_AP50"] == pytest.approx(0.5)


def test_acc50_uses_a_score_threshold_but_ap_uses_all(nuclei):
    low = as_pred(nuclei.instances, score=0.3)
    r = evaluate([(nuclei, low)], ["nucleus"])
    assert r["mask_AP"] == pytest.approx(1.0) and r["acc50"] == 0.0
    assert evaluate([(nuclei, low)], ["nucleus"], acc_score_threshold=0.2)["acc50"] == 1.0


def test_empty_ground_truth_and_empty_predictions(nuclei):
    empty = ItemAnnotation("e", 64, 64)
    assert evaluate([(empty, [])], ["nucleus"])["mask_AP"] == 1.0
    r = evaluate([(empty, [box_inst(1, 1, 5, 5, score=0.9)])], ["nucleus"])
    assert r["mask_AP"] == 0.0 and r["acc50"] == 0.0 and r["fp"] == 1
    r = evaluate([(nuclei, [])], ["nucleus"])
    assert r["mask_AP"] == 0.0 and r["acc50"] == 0.0 and r["fn"] == len(nuclei.instances)
    r = evaluate([], ["nucleus"])
    assert r["images"] == 0 and r["acc50"] == 1.0
    # an empty image next to a normal one: no crash, the normal one decides AP
    r = evaluate([(nuclei, as_pred(nuclei.instances)), (empty, [])], ["nucleus"])
    assert r["mask_AP"] == pytest.approx(1.0) and r["images"] == 2
    # ItemAnnotation as prediction, scores None, labels outside the list
    pred_ann = ItemAnnotation("a", 256, 256, [i.copy() for i in nuclei.instances] + [box_inst(0, 0, 3, 3, "cell")])
    r = evaluate([(nuclei, pred_ann)], ["nucleus"])
    assert r["mask_AP"] == pytest.approx(1.0) and r["ignored"] == 1


def test_more_than_1000_instances_per_image():
    s = S.nuclei_sample(1024, seed=0, n_nuclei=1400, radius=(4, 6), touching=0.0)
    gt = s.annotation
    assert len(gt.instances) > 1000
    r = evaluate([(gt, as_pred(gt.instances))], ["nucleus"])
    assert r["mask_AP"] == pytest.approx(1.0) and r["tp"] == len(gt.instances)


def test_fast_matching_equals_pycocotools():
    rng = np.random.default_rng(0)
    s = S.ct_sample(256, seed=1, pores=True)
    gt = s.annotation
    pred = []
    for i in gt.instances:
        if rng.random() < 0.2:
            continue
        label = i.label if rng.random() < 0.9 else ("pore" if i.label == "rock" else "rock")
        pred.append(i.copy(x0=i.x0 + int(rng.integers(-3, 4)), y0=i.y0 + int(rng.integers(-3, 4)),
                           score=float(rng.random()), label=label))
        if rng.random() < 0.15:
            pred.append(i.copy(score=float(rng.random())))
    pairs = [(gt, pred), (ItemAnnotation("e", 256, 256), pred[:3])]
    fast = evaluate(pairs, ["rock", "pore"])
    slow = evaluate(pairs, ["rock", "pore"], fast=False)
    assert fast == slow and 0.05 < fast["mask_AP"] < 0.9


def test_rle_of_cropped_instances_matches_full_image_encoding():
    from pycocotools import mask as cm
    from engine.model.evaluate import _rle
    rng = np.random.default_rng(0)
    for k in range(30):
        h, w = rng.integers(1, 30, 2)
        m = rng.random((h, w)) > 0.4
        inst = Instance(m, int(rng.integers(-10, 50)), int(rng.integers(-10, 40)), "x")
        full = np.asfortranarray(inst.full_mask((40, 50)).astype(np.uint8))
        ref, mine = cm.encode(full), _rle(inst, (40, 50))
        assert cm.decode(mine).tolist() == full.tolist()
        assert mine["counts"] == ref["counts"]


def test_match_counts_edge_cases():
    assert match_counts([], [], [], []) == (0, 0, 0)
    from pycocotools import mask as cm
    m = np.zeros((10, 10), np.uint8, order="F")
    m[2:5, 2:5] = 1
    r = cm.encode(m)
    assert match_counts([r], [1], [], []) == (0, 0, 1)
    assert match_counts([], [], [r, r], [1, 1]) == (0, 2, 0)
    assert match_counts([r], [1], [r, r], [1, 1]) == (1, 1, 0)
