"""engine.runs: RunInfo from one schema (old runs still readable), listing, and the one
activation rule."""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from engine.runs import (RunInfo, config_record, decide_activation, list_runs, metrics_record, read_run,
                         weights_kind)


def write_run(models: Path, run: str, *, ap=0.5, labels=("cell",), base="scratch", model=True, old=False):
    folder = models / run
    folder.mkdir(parents=True)
    if old:  # as this codebase wrote runs before the schema key (no "created", no "weights")
        cfg = {"run": run, "arch": "r18fpn", "base": base, "labels": list(labels), "normalization": {},
               "train": {"epochs": 3, "arch": "r18fpn"},
               "data": {"origin": "project", "train_items": ["a", "b"], "val_items": ["c"], "dropped": {}},
               "world_size": 1, "torch": "2"}
        met = {"status": "done", "monitor": "mask_AP", "best": {"epoch": 2, "mask_AP": ap, "mask_AP50": 0.9},
               "mask_AP": ap, "mask_AP50": 0.9, "epoch": 2, "history": [{}, {}, {}], "train_items": 2,
               "val_items": 1, "dropped": {}}
    else:
        cfg = config_record(run=run, arch="r18fpn", base=base, labels=labels, normalization={},
                            train={"epochs": 3}, origin="project", train_keys=["a", "b"], val_keys=["c"],
                            dropped={})
        met = metrics_record(status="done", monitor="mask_AP", best={"epoch": 2, "mask_AP": ap, "mask_AP50": 0.9},
                             history=[{}, {}, {}], train_items=2, val_items=1, dropped={}, seconds=12.5)
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "metrics.json").write_text(json.dumps(met))
    if model:
        (folder / "model.pt").write_bytes(b"x")
    return folder


def test_new_and_old_runs_read_the_same(tmp_path):
    models = tmp_path / "models"
    new = read_run(write_run(models, "run-20260101-120000"))
    old = read_run(write_run(models, "run-20250101-080910", old=True))
    for info in (new, old):
        assert info.finished and info.status == "done" and info.problem is None
        assert (info.arch, info.weights, info.base, info.labels) == ("r18fpn", "scratch", "scratch", ["cell"])
        assert (info.train_items, info.val_items, info.val_keys, info.epochs, info.epochs_run) == (2, 1, ["c"], 3, 3)
        assert info.metrics == {"mask_AP": 0.5, "mask_AP50": 0.9, "acc50": None} and info.best_epoch == 2
        assert info.score() == 0.5 and info.score("mask_AP50") == 0.9
    assert old.created == dt.datetime(2025, 1, 1, 8, 9, 10)       # from the run id
    assert new.created is not None and new.created.tzinfo is not None and new.seconds == 12.5


def test_weights_of_a_run_started_from_another_run(tmp_path):
    models = tmp_path / "models"
    first = write_run(models, "run-1")
    second = read_run(write_run(models, "run-2", base=str(first / "model.pt")))
    assert second.weights == "run" and second.base == "run-1"
    assert weights_kind(tmp_path / "elsewhere.pt") == "path"
    assert weights_kind("coco") == "coco"


def test_listing_and_unfinished_runs(tmp_path):
    models = tmp_path / "models"
    write_run(models, "run-2")
    write_run(models, "run-1")
    write_run(models, "run-3", model=False)
    (models / "run-3" / "last.pt").write_bytes(b"x")
    (models / "junk").mkdir()
    (models / "junk" / "config.json").write_text("{not json")
    assert [r.run for r in list_runs(models)] == ["run-1", "run-2"]
    every = {r.run: r for r in list_runs(models, finished_only=False)}
    assert every["run-3"].resumable and "did not finish" in every["run-3"].problem
    assert every["junk"].arch is None and not every["junk"].finished
    assert list_runs(tmp_path / "nothing") == []


def test_the_activation_rule(tmp_path):
    models = tmp_path / "models"
    good, bad = read_run(write_run(models, "good", ap=0.6)), read_run(write_run(models, "bad", ap=0.3))
    assert decide_activation(good, None) == (True, "made good the active model (there was none)")
    assert decide_activation(good, good)[0] is True
    ok, why = decide_activation(good, bad)
    assert ok and "mask_AP 0.600" in why and "bad: 0.300" in why
    ok, why = decide_activation(bad, good)
    assert not ok and why.startswith("kept good as the active model")
    # the fair comparison (the active model scored on the new run's validation items) wins
    ok, why = decide_activation(bad, good, current_score=0.2)
    assert ok and "on bad's validation items" in why
    assert decide_activation(bad, good, current_score=0.3)[0] is True     # a tie keeps the newer run
    # other classes, unreadable, or no score: replaced; a new run without a score: not activated
    other = read_run(write_run(models, "other", ap=0.9, labels=("rock",)))
    assert decide_activation(bad, other)[0] is True
    gone = RunInfo("gone", models / "gone", problem="run gone has no model file")
    assert decide_activation(bad, gone)[0] is True
    unscored = read_run(write_run(models, "unscored", ap=None))
    ok, why = decide_activation(unscored, good)
    assert not ok and "no validation score" in why
    assert decide_activation(good, unscored)[0] is True
    unfinished = read_run(write_run(models, "unfinished", model=False))
    assert decide_activation(unfinished, None)[0] is False
