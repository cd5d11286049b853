"""Uncertainty scores kept with the model (models/<run>/uncertainty.json) and the
per-instance doubt matched by box (engine.model.uncertainty)."""
import json

import numpy as np
import pytest
import torch

from engine.annotations import Instance
from engine.cli import run as cli_run
from engine.errors import CancelledError
from engine.jobs import CancelToken
from engine.model import normalize as N
from engine.model.checkpoint import save_checkpoint
from engine.model.uncertainty import (SCORES_FILE, Uncertainty, instance_doubts, load_scores, rank_and_store,
                                      save_scores, scores_path)
from engine.model.weights import build_model

from test_rank import LEFT_A, CENTRE, LeftHandedPredictor, project  # noqa: F401  (fixture)


@pytest.fixture
def run_model(project):  # noqa: F811
    folder = project.models_dir / "run-a"
    folder.mkdir(parents=True)
    (folder / "model.pt").write_bytes(b"")     # the fake predictor never reads it
    return folder / "model.pt"


def test_scores_are_kept_beside_the_run_and_read_back(project, run_model):  # noqa: F811
    ranked = rank_and_store(project, LeftHandedPredictor(), run_model)
    path = run_model.parent / SCORES_FILE
    assert scores_path(project, run_model) == path and path.is_file()
    back = load_scores(project, run_model)
    assert set(back) == {"a_sure", "b_doubt", "c_half"}
    for item, score, u in ranked:
        assert back[item].score() == pytest.approx(score, abs=1e-6)
        assert back[item].boxes == u.boxes and back[item].instance_doubt == pytest.approx(u.instance_doubt)
    # a second ranking of one item adds to the file, it does not drop the others
    rank_and_store(project, LeftHandedPredictor(), run_model, ["d_done"])
    assert set(load_scores(project, run_model)) == {"a_sure", "b_doubt", "c_half", "d_done"}
    # another detection threshold: the old scores are not mixed in
    rank_and_store(project, LeftHandedPredictor(), run_model, ["a_sure"], score_threshold=0.8)
    assert set(load_scores(project, run_model)) == {"a_sure"}


def test_cancel_keeps_what_was_scored(project, run_model):  # noqa: F811
    token = CancelToken()

    def progress(done, total, message):
        if done == 1:      # cancelled while the second item is scored: it is finished, the third is not
            token.cancel()
    with pytest.raises(CancelledError):
        rank_and_store(project, LeftHandedPredictor(), run_model, progress=progress, cancel=token)
    assert set(load_scores(project, run_model)) == {"a_sure", "b_doubt"}


def test_nothing_is_written_for_a_checkpoint_outside_the_project(project, tmp_path):  # noqa: F811
    outside = tmp_path / "elsewhere" / "model.pt"
    outside.parent.mkdir()
    outside.write_bytes(b"")
    assert scores_path(project, outside) is None
    assert save_scores(project, outside, {"a_sure": Uncertainty(0.5, 0.0, 1)}) is None
    assert load_scores(project, outside) == {} and not (outside.parent / SCORES_FILE).exists()


def test_an_unreadable_file_means_no_scores(project, run_model):  # noqa: F811
    (run_model.parent / SCORES_FILE).write_text("{not json", encoding="utf-8")
    assert load_scores(project, run_model) == {}
    rank_and_store(project, LeftHandedPredictor(), run_model, ["b_doubt"])   # and ranking rewrites it
    assert load_scores(project, run_model)["b_doubt"].flip == pytest.approx(1.0)


def test_instance_doubts_match_instances_to_detections_by_box():
    u = Uncertainty(flip=0.5, mid=0.0, detections=2, instance_doubt=[0.9, 0.1],
                    boxes=[(5, 5, 10, 10), (40, 20, 16, 16)])
    near = Instance(mask=np.ones((10, 11), bool), x0=5, y0=5, id="near")       # an edited outline
    other = Instance(mask=np.ones((16, 16), bool), x0=40, y0=20, id="other")
    drawn = Instance(mask=np.ones((6, 6), bool), x0=80, y0=50, id="drawn")      # no detection there
    assert instance_doubts(u, [drawn, near, other]) == pytest.approx({"near": 0.9, "other": 0.1})
    assert instance_doubts(None, [near]) == {} and instance_doubts(u, []) == {}


def test_rank_command_keeps_the_scores_for_the_gui(project, capsys):  # noqa: F811
    torch.manual_seed(0)
    model = build_model("r18fpn", 2)
    with torch.no_grad():   # a model sure there is nothing: the plumbing, quickly
        model.roi_heads.box_predictor.cls_score.bias.copy_(torch.tensor([20.0, -20.0]))
    run_dir = project.models_dir / "run-x"
    run_dir.mkdir(parents=True)
    save_checkpoint(run_dir / "model.pt", model, label_names=["blob"], normalization=N.range_policy(0, 255),
                    run="run-x")
    assert cli_run(["rank", str(project.root), "--model", "run-x", "--items", "a_sure", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["item"] == "a_sure"
    data = json.loads((run_dir / SCORES_FILE).read_text(encoding="utf-8"))
    assert set(data["items"]) == {"a_sure"} and data["items"]["a_sure"]["flip"] == 0.0
