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


class FakeClock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class ProbedTrainer(FakeTrainer):
    """A FakeTrainer whose validation and checkpoint take fake-clock time."""

    def validate(self, items=None):
        self.validated.append(items)
        self.clock.advance(self.val_item_s)
        return {}

    def save_state(self, path, *, epoch_done):
        self.saved.append((path, epoch_done))
        self.clock.advance(self.save_item_s)


def probed_budget(*, minutes=1.0, per_step=1.0, setup_s=4.0, val_item_s=2.0, save_s=0.75):
    clock = FakeClock()
    eta = Eta()
    eta.step_s, eta.steps = per_step * 5, 5
    items = [SimpleNamespace(key="big1", height=100, width=100), SimpleNamespace(key="small", height=50, width=50),
             SimpleNamespace(key="big2", height=100, width=100)]
    t = ProbedTrainer(rank=0, t_start=clock(), global_iter=5, ipe=10, cap=1000, epoch=1, val_items=items,
                      total=1000, device=None, clock=clock, validated=[], saved=[], val_item_s=val_item_s,
                      save_item_s=save_s)
    t.planned_epochs = lambda: max(1, math.ceil(t.total / t.ipe))
    budget = TimeBudget(minutes, eta, auto_warmup=True, last_path=Path("run/last.pt"), clock=clock)
    clock.advance(setup_s)   # setup and the first steps
    return budget, t, clock, eta


def test_the_plan_reserves_the_probed_validation_and_checkpoint_time():
    """Before the first plan the budget times one validation image and one checkpoint
    write, and the plan reserves what they say (fake clock: the planner's arithmetic)."""
    budget, t, clock, eta = probed_budget()
    budget.probe(t)
    assert [[it.key for it in items] for items in t.validated] == [["small"]]   # the cheapest image
    assert t.saved == [(Path("run/last.pt"), False)]      # a resumable state, as on cancel
    assert eta.val_probe_s == pytest.approx(2.0 * (10000 + 2500 + 10000) / 2500)   # 18 s, by pixels
    assert budget.save_s == pytest.approx(1.5)            # last.pt and best.pt
    budget._plan(t, validated=0)
    # 54 s planned (90 % of 60), 4 + 2 + 0.75 s spent: 47.25 s left; every epoch end costs
    # 18 + 1.5 s. 5 more steps end epoch 1 (5 + 19.5 = 24.5 s); 8 more also end epoch 2
    # (8 + 2 x 19.5 = 47 s); 9 more would need 48 s.
    assert budget.plan["per_epoch_s"] == pytest.approx(19.5)
    assert budget.plan["left_s"] == pytest.approx(47.25)
    assert budget.plan["iters"] == 8 and t.total == 13 and budget.plan["epochs_left"] == 2
    # without the probes (the step-time guess: 3 images x 1 s x 0.5 + 0.5 s) the same
    # state would have planned 3 epochs ending at 54 s, and the real validations
    # (18 s each) would have run 36 s past the budget
    naive = planned_total(per_step=1.0, val_items=3, budget_min=1.0, spent_s=6.75, done=5, ipe=10, cap=1000)
    assert naive > t.total
    # an epoch's measured validation and saving replace the probes
    t.global_iter = 10
    budget.before_validation(t)
    clock.advance(30.0)
    budget.after_epoch(t)
    assert budget.epoch_costs == [30.0] and budget.plan["per_epoch_s"] == 30.0
    # 54 - (6.75 + 30) = 17.25 s left: not enough for steps and another 30 s validation
    assert t.total == 10


def test_a_run_that_falls_behind_its_plan_plans_again():
    budget, t, clock, eta = probed_budget(val_item_s=0.5, save_s=0.25)
    budget.probe(t)
    budget._plan(t, validated=0)
    first = t.total
    budget.after_step(t)              # on plan: nothing changes
    assert t.total == first
    eta.step_s = 3.0 * eta.steps      # the machine got three times slower
    budget.after_step(t)
    assert t.total < first and budget.plan["per_step_s"] == 3.0


def test_a_budget_too_small_for_a_second_step_ends_after_the_first():
    budget, t, clock, eta = probed_budget(minutes=0.1, setup_s=3.0, val_item_s=0.5)
    t.global_iter, eta.step_s, eta.steps = 1, 0.0, 0
    budget.after_step(t)             # probes (1.5 s validation, 0.75 s save), then: late
    assert t.validated and t.total == 1


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
    assert all(0 <= e["eta_s"] <= 6.0 for e in iters)   # the ETA never points past the budget's end
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
