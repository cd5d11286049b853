"""'Correct this next': uncertainty per item (engine.model.uncertainty) and `maskloop rank`."""
import json

import cv2
import numpy as np
import pytest
import torch

from engine.annotations import Instance, ItemAnnotation
from engine.cli import run as cli_run
from engine.masks import components
from engine.model.checkpoint import save_checkpoint
from engine.model.weights import build_model
from engine.model import normalize as N
from engine.model.uncertainty import (Uncertainty, flip_back, flip_disagreement, item_uncertainty, mid_share,
                                      rank_items)
from engine.project import Project


class LeftHandedPredictor:
    """Finds bright blobs but only those whose centre lies in the left half of the image (+2 px),
    so its prediction of the mirror image disagrees exactly where objects are off-centre.
    Scores: 0.9, except blobs wider than 20 px (0.5: a mid-range score)."""

    def predict_many(self, images, *, score_threshold=0.5, tile=None, cancel=None):
        out = []
        for img in images:
            found = []
            for m in components(np.asarray(img) > 100):
                inst = Instance.from_full_mask(m, "blob", source="model")
                if inst.x0 + inst.width / 2 <= img.shape[1] / 2 + 2:
                    inst.score = 0.5 if inst.width > 20 else 0.9
                    if inst.score >= score_threshold:
                        found.append(inst)
            out.append(found)
        return out


def image_with(*boxes, shape=(64, 96)):
    img = np.zeros(shape, np.uint8)
    for x0, y0, x1, y1 in boxes:
        img[y0:y1, x0:x1] = 200
    return img


CENTRE = (40, 20, 56, 36)      # straddles the middle: seen the same way in the mirror image
LEFT_A = (5, 5, 15, 15)
LEFT_B = (5, 40, 15, 50)
LEFT_WIDE = (2, 30, 30, 40)


def test_flip_disagreement_and_mid_share():
    a = Instance(mask=np.ones((10, 10), bool), x0=0, y0=0)
    shifted = Instance(mask=np.ones((10, 10), bool), x0=5, y0=0)
    assert flip_disagreement([], []) == (0.0, [])
    assert flip_disagreement([a], [a.copy()])[0] == pytest.approx(0.0)
    d, per = flip_disagreement([a], [shifted])
    assert d == pytest.approx(1 - 50 / 150) and per == [pytest.approx(1 - 50 / 150)]
    assert flip_disagreement([a], [])[0] == 1.0 and flip_disagreement([], [a])[0] == 1.0
    assert mid_share([0.9, 0.5, 0.35, 0.1]) == pytest.approx(2 / 3) and mid_share([]) == 0.0
    back = flip_back([Instance(mask=np.eye(3, dtype=bool), x0=1, y0=2)], 10)[0]
    assert (back.x0, back.y0) == (6, 2) and back.mask[0, 2] and not back.mask[0, 0]
    with pytest.raises(ValueError):
        Uncertainty(0, 0, 0).score("entropy")


def test_item_uncertainty_from_the_mirror_prediction():
    p = LeftHandedPredictor()
    assert item_uncertainty(p, image_with(CENTRE)).flip == pytest.approx(0.0)
    assert item_uncertainty(p, image_with(LEFT_A)).flip == pytest.approx(1.0)
    u = item_uncertainty(p, image_with(LEFT_A, LEFT_B, CENTRE))
    assert u.flip == pytest.approx(2 / 3) and u.detections == 3
    assert sorted(u.instance_doubt) == pytest.approx([0.0, 1.0, 1.0])
    assert item_uncertainty(p, image_with(LEFT_WIDE, CENTRE)).mid == pytest.approx(0.5)


@pytest.fixture
def project(tmp_path):
    imgdir = tmp_path / "images"
    imgdir.mkdir()
    layouts = {"a_sure": [CENTRE], "b_doubt": [LEFT_A], "c_half": [LEFT_A, LEFT_B, CENTRE], "d_done": [LEFT_A]}
    for name, boxes in layouts.items():
        assert cv2.imwrite(str(imgdir / f"{name}.png"), image_with(*boxes))
    proj = Project.create(tmp_path / "proj", ["blob"])
    proj.add([imgdir])
    proj.save_annotation(ItemAnnotation("d_done", 64, 96, [], status="reviewed"))
    return proj


def test_rank_puts_the_most_uncertain_unreviewed_items_first(project):
    ranked = rank_items(project, LeftHandedPredictor())
    assert [i for i, _, _ in ranked] == ["b_doubt", "c_half", "a_sure"]      # reviewed item left out
    assert [round(s, 3) for _, s, _ in ranked] == [1.0, 0.667, 0.0]
    by_mid = rank_items(project, LeftHandedPredictor(), ["a_sure", "d_done"], by="mid")
    assert [i for i, _, _ in by_mid] == ["a_sure", "d_done"]                # ties keep the order


def test_rank_command(project, capsys):
    torch.manual_seed(0)
    model = build_model("r18fpn", 2)
    with torch.no_grad():   # a model sure that there is nothing: the command's plumbing, quickly
        model.roi_heads.box_predictor.cls_score.bias.copy_(torch.tensor([20.0, -20.0]))
    run_dir = project.root / "models" / "run-x"
    run_dir.mkdir(parents=True)
    save_checkpoint(run_dir / "model.pt", model, label_names=["blob"], normalization=N.range_policy(0, 255),
                      run="run-x")
    root = str(project.root)
    assert cli_run(["rank", root]) == 1                                   # no active model yet
    assert "model" in capsys.readouterr().err
    assert cli_run(["rank", root, "--model", "run-x", "--json", "--score", "0.05"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["item"] for r in rows] == ["a_sure", "b_doubt", "c_half"]   # all sure: project order
    assert all(r["score"] == 0.0 and r["detections"] == 0 for r in rows)
    assert cli_run(["rank", root, "--model", "run-x", "--limit", "1", "--by", "mid"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[:2] == ["item", "mid"] and len(lines) == 2
    assert cli_run(["rank", root, "--model", "run-x", "--items", "nope"]) == 1
    assert "nope" in capsys.readouterr().err
