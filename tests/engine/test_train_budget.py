"""`maskloop train --minutes N`: the run plans its length from its first steps and ends
inside the budget with a validation and a checkpoint (issue 10, first item)."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from engine.demo import synthetic_project
from engine.events import parse_line, read_events
from engine.model.hooks import Eta, TimeBudget
from engine.runs import list_runs

REPO = Path(__file__).resolve().parents[2]


class FakeTrainer(SimpleNamespace):
    """What TimeBudget reads and calls on a Trainer."""

    def set_total(self, total, *, auto_warmup=False):
        self.total = total
        self.auto_warmup = auto_warmup


def planned_total(*, per_step, val_items, budget_min, spent_s, done, ipe, cap, epoch=1, val_s=None):
    eta = Eta()
    eta.step_s, eta.steps = per_step * 5, 5
    if val_s is not None:
        eta.val_s, eta.vals = val_s, 1
    t = FakeTrainer(t_start=time.monotonic() - spent_s, global_iter=done, ipe=ipe, cap=cap, epoch=epoch,
                    val_items=[0] * val_items, total=cap, device=None)
    TimeBudget(budget_min, eta, auto_warmup=True)._plan(t, validated=epoch - 1)
    return t.total


def test_plan_fits_steps_and_one_validation_per_epoch_into_the_budget():
    # 60 s budget, 90 % planned = 54 s, 4 s spent: 50 s for steps of 1 s and, per epoch of
    # 10 steps, a validation of 2 s (measured) + 0.5 s saving
    total = planned_total(per_step=1.0, val_items=4, budget_min=1.0, spent_s=4.0, done=5, ipe=10, cap=1000,
                          val_s=2.0)
    more = total - 5
    epochs = math.ceil(total / 10)
    assert more * 1.0 + epochs * 2.5 <= 50.0 < (more + 1) * 1.0 + math.ceil((total + 1) / 10) * 2.5
    # never beyond the --epochs cap, never before what is done
    assert planned_total(per_step=0.001, val_items=1, budget_min=10, spent_s=1, done=5, ipe=10, cap=40) == 40
    assert planned_total(per_step=5.0, val_items=1, budget_min=0.1, spent_s=30, done=7, ipe=10, cap=40) == 7


@pytest.fixture(scope="module")
def budget_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("budget") / "p"
    synthetic_project(root, "nuclei", 4, 96)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [sys.executable, str(REPO / "main.py"), "train", str(root), "--minutes", "0.1", "--device", "cpu",
           "--arch", "r18fpn", "--base", "scratch", "--batch-size", "2", "--val-fraction", "0.25",
           "--epochs", "50", "--progress", "jsonl"]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    return root, r


def test_tiny_budget_ends_with_a_validation_and_a_checkpoint(budget_run):
    root, r = budget_run
    assert r.returncode == 0, r.stderr
    events = [parse_line(line) for line in r.stdout.splitlines()]
    assert None not in events
    start, kinds = events[0], [e["event"] for e in events]
    assert start["event"] == "start" and start["minutes"] == 0.1 and start["weights"] == "scratch"
    assert kinds[-2:] == ["done", "activated"] and "epoch" in kinds
    iters = [e for e in events if e["event"] == "iter"]
    # the budget, not the 50-epoch cap (100 iterations), ended the run
    assert 1 <= len(iters) < 100
    last_epoch = [e for e in events if e["event"] == "epoch"][-1]
    assert set(last_epoch["metrics"]) >= {"mask_AP", "mask_AP50", "acc50"}       # it validated
    (info,) = list_runs(root / "models")
    assert info.finished and info.model_path.is_file() and info.score() is not None
    cfg = json.loads((info.folder / "config.json").read_text())
    assert cfg["train"]["minutes"] == 0.1 and cfg["train"]["max_iters"] == len(iters)
    assert info.epochs == last_epoch["epoch"] == math.ceil(len(iters) / start["iters_per_epoch"])
    assert "from scratch" in r.stderr     # train's summary names the starting weights
    assert [e["event"] for e in read_events(info.folder / "log.jsonl")][-2:] == ["done", "activated"]


def test_minutes_is_a_usage_error_with_resume_or_when_not_positive(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    for extra in (["--minutes", "0"], ["--minutes", "1", "--resume", "run-x"]):
        r = subprocess.run([sys.executable, str(REPO / "main.py"), "train", str(tmp_path), *extra],
                           capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
        assert r.returncode == 2, (extra, r.stderr)
        assert "--minutes" in r.stderr
