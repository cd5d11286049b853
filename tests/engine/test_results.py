"""engine.results: the one merge rule for new predictions and the one label check."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.annotations import Instance, ItemAnnotation, LabelSet
from engine.errors import CheckpointError, LabelError
from engine.results import (DUPLICATE_IOU, STORE_SCORE, LabelMismatchError, above_floor, check_labels,
                            is_duplicate, merge_results, merged_annotation, missing_labels)

REPO = Path(__file__).resolve().parents[2]


def box(x, y, w=10, h=10, source="manual", score=None, label="cell"):
    return Instance(np.ones((h, w), bool), x, y, label, score=score, source=source,
                    model="run-1" if source == "model" else None)


def test_results_replace_earlier_output_and_keep_other_work():
    manual, old_pred, classic = box(0, 0), box(40, 40, source="model", score=0.9), box(70, 0, source="classic")
    ann = ItemAnnotation("a", 100, 100, [manual, old_pred, classic], "predicted")
    dup = box(1, 1, source="model", score=0.8)           # IoU 81/119 with the manual one
    far = box(40, 70, source="model", score=0.7)
    remove, add = merge_results(ann, [dup, far], "model")
    assert remove == [old_pred] and add == [far]
    # the classic proposals are replaced by new proposals the same way, model output stays
    remove, add = merge_results(ann, [box(20, 20, source="classic")], "classic")
    assert remove == [classic] and len(add) == 1


def test_duplicate_threshold_is_mask_iou():
    a = box(0, 0)
    assert is_duplicate(box(0, 0), [a])
    assert is_duplicate(box(3, 0), [a])         # IoU 70/130 = 0.54
    assert not is_duplicate(box(4, 0), [a])     # IoU 60/140 = 0.43
    assert not is_duplicate(box(50, 50), [a])
    assert DUPLICATE_IOU == 0.5


def test_reviewed_items_are_never_overwritten_and_status_follows_the_source():
    ann = ItemAnnotation("a", 50, 50, [box(0, 0)], "reviewed")
    assert merged_annotation(ann, [box(30, 30, source="model", score=0.9)]) is None
    forced = merged_annotation(ann, [box(30, 30, source="model", score=0.9)], overwrite_reviewed=True)
    assert forced.status == "predicted" and len(forced.instances) == 2
    new = ItemAnnotation("b", 0, 0, [], "new")
    out = merged_annotation(new, [], shape=(64, 32))
    assert out.status == "predicted" and out.shape == (64, 32)   # nothing found is still "predicted"
    classic_on_new = merged_annotation(new, [box(1, 1, source="classic")], source="classic")
    assert classic_on_new.status == "predicted"
    assert ann.status == "reviewed" and len(ann.instances) == 1   # the input is not changed


def test_score_floor():
    keep = [box(0, 0, source="model", score=0.3), box(0, 0)]
    low = box(0, 0, source="model", score=STORE_SCORE - 0.01)
    assert above_floor(keep + [low]) == keep


def test_label_check_is_one_error_for_both_callers():
    assert missing_labels(["rock", "pore"], LabelSet.from_names(["rock"])) == ["pore"]
    check_labels(["rock"], ["rock", "air"])   # a project may have more labels
    with pytest.raises(LabelMismatchError, match="pore") as ei:
        check_labels(["rock", "pore"], ["rock"], path="m.pt")
    assert isinstance(ei.value, CheckpointError) and isinstance(ei.value, LabelError)
    assert "m.pt" in str(ei.value)
    with pytest.raises(LabelMismatchError, match="do not match"):
        check_labels(["pore", "rock"], ["rock", "pore"], exact=True)


def test_results_imports_no_torch_and_no_qt():
    code = ("import sys, engine.results, engine.runs, engine.events; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'PyQt5')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
