"""The Trainer's hooks: everything around the optimisation step.

A hook is a `Callback` (the same interface user callbacks have); the Trainer calls its
own hooks first, in this order, then the user's callbacks:

    JsonLog      on_event: every event to the run's log.jsonl (rank 0; made by the Trainer
                 first, so that errors during setup are logged too)
    Cancel       before_step / before_validation: stop between iterations when asked
    Eta          after_step: time per step, ETA, and the "iter" event
    Validation   after_epoch: score the model, track the best epoch, decide early stop
    Checkpoint   after_epoch: best.pt, last.pt (resumable) and the "epoch" event;
                 on_cancel: last.pt at the point reached; after_train: model.pt, metrics.json
    TimeBudget   after_step / after_epoch: plan the run's length to end inside `minutes`

Hooks share the Trainer's state (trainer.epoch, .iter, .global_iter, .total, .best,
.history, ...); see engine.model.trainer.
"""
from __future__ import annotations

import math
import time
from typing import Callable, Optional

import torch

from ..errors import CancelledError
from ..events import JsonlWriter
from ..fsutil import atomic_write_json
from ..runs import metrics_record
from . import distributed


class Callback:
    """Base class for Trainer hooks; every method is optional. `trainer` exposes model,
    optimizer, epoch, iter, global_iter, total, config (resolved), run_id, cancel and
    request_stop()."""

    def on_event(self, event: dict) -> None: ...
    def before_train(self, trainer) -> None: ...
    def before_epoch(self, trainer) -> None: ...
    def before_step(self, trainer) -> None: ...
    def after_step(self, trainer) -> None: ...
    def before_validation(self, trainer) -> None: ...
    def after_epoch(self, trainer) -> None: ...
    def after_train(self, trainer) -> None: ...
    def on_cancel(self, trainer) -> None: ...


class FnCallback(Callback):
    """A plain callable `fn(event)` as a callback."""

    def __init__(self, fn: Callable[[dict], None]):
        self.fn = fn

    def on_event(self, event: dict) -> None:
        self.fn(event)


def scalars(metrics: dict) -> dict:
    return {k: v for k, v in (metrics or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def jsonable(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    return obj


class JsonLog(Callback):
    """Every event, one JSON line, to the run's log.jsonl (appended: a resume continues it)."""

    def __init__(self, path):
        self.writer = JsonlWriter(path)

    def on_event(self, event: dict) -> None:
        self.writer(event)

    def close(self) -> None:
        self.writer.close()


class Cancel(Callback):
    """Stop between iterations (and before validation) when the token or request_stop()
    asks; all ranks agree. The Trainer turns the CancelledError into a saved, resumable state."""

    def _check(self, trainer) -> None:
        if distributed.agree(trainer.stop_wanted(), trainer.device):
            raise CancelledError()

    before_step = _check
    before_validation = _check


class Eta(Callback):
    """Seconds per step (the first step of a start or resume is not counted: warm-up),
    validation seconds per epoch, the ETA, and the "iter" event."""

    def __init__(self):
        self.step_s, self.steps = 0.0, 0
        self.val_s, self.vals = 0.0, 0
        self.val_probe_s: Optional[float] = None   # a validation's cost, estimated before one ran
        self._t0 = None
        self._first = True

    def mean_step(self, fallback: float) -> float:
        return self.step_s / self.steps if self.steps else fallback

    def validation_estimate(self, trainer, per_step: float) -> float:
        """Seconds per validation: measured once one has run; before that the time
        budget's probe (`val_probe_s`), else a guess from the step time."""
        if not trainer.val_items:
            return 0.0
        if self.vals:
            return self.val_s / self.vals
        if self.val_probe_s is not None:
            return self.val_probe_s
        return per_step * max(1, len(trainer.val_items)) * 0.5

    def restart_clock(self) -> None:
        """The next step's time starts now (work between steps is not step time)."""
        self._t0 = time.monotonic()

    def after_step(self, trainer) -> None:
        now = time.monotonic()
        dt, self._t0 = now - self._t0, now
        if not self._first:
            self.step_s += dt
            self.steps += 1
        self._first = False
        avg = self.mean_step(dt)
        epochs_left = trainer.planned_epochs() - trainer.epoch + 1
        eta = (trainer.total - trainer.global_iter) * avg + epochs_left * self.validation_estimate(trainer, avg)
        if trainer.deadline is not None:  # a time budget: never later than its end
            eta = min(eta, max(0.0, trainer.deadline - now))
        trainer.emit("iter", epoch=trainer.epoch, iter=trainer.iter, loss=trainer.step_loss,
                     losses=dict(trainer.last_loss), lr=float(trainer.optimizer.param_groups[0]["lr"]),
                     eta_s=float(eta), epochs=trainer.planned_epochs())

    def after_validation(self, seconds: float) -> None:
        self.val_s += seconds
        self.vals += 1

    def before_epoch(self, trainer) -> None:
        self.restart_clock()  # validation and saving are not step time


class TimeBudget(Callback):
    """`minutes`: plan the total number of iterations so the run (steps, a validation and
    a checkpoint per epoch) ends inside the budget; the LR schedule (and a default
    warm-up) follow the plan, which all ranks share.

    What a plan reserves besides steps is measured before the plan is made, since a
    validation can cost many steps (a loaded CPU, big validation images, an untrained
    model's many detections): right after the first step it times a prediction on the
    smallest validation image, scaled to all of them by pixels, and a checkpoint write
    (last.pt, resumable as on cancel; twice that is reserved per epoch, for last.pt and
    best.pt). Once an epoch has ended, its measured validation and saving replace the
    probes. Planned after PROBE_STEPS timed steps, revised after every epoch and whenever
    the run falls behind its plan (the machine got slower). The run always ends with a
    validation and a checkpoint, even when the budget is smaller than a few steps.
    `plan` keeps the last plan's arithmetic (tests, logs)."""

    PROBE_STEPS = 3        # timed steps before the first plan
    MARGIN = 0.9           # plan for 90 % of the budget: estimates are estimates
    SAVE_S = 0.5           # a checkpoint write before one was timed

    def __init__(self, minutes: float, eta: Eta, auto_warmup: bool, *, last_path=None,
                 clock: Callable[[], float] = time.monotonic):
        self.budget_s = float(minutes) * 60.0
        self.eta = eta
        self.auto_warmup = auto_warmup
        self.last_path = last_path     # where the save probe writes (the run's last.pt)
        self.clock = clock
        self.planned = False
        self.probed = False
        self.save_s: Optional[float] = None   # reserved per epoch for checkpoints
        self.epoch_costs: list[float] = []    # measured validation + checkpoint of each epoch
        self._val_started: Optional[float] = None
        self.plan: dict = {}

    # -- what to reserve ------------------------------------------------------------------
    def probe(self, trainer) -> None:
        """Time one validation image and one checkpoint write (rank 0; only rank 0 plans)."""
        self.probed = True
        if trainer.rank != 0:
            return
        items = list(trainer.val_items)
        if items:
            area = [max(1, int(it.height) * int(it.width)) for it in items]
            k = min(range(len(items)), key=area.__getitem__)
            t0 = self.clock()
            trainer.validate(items=[items[k]])
            self.eta.val_probe_s = (self.clock() - t0) * sum(area) / area[k]
        if self.last_path is not None:
            t0 = self.clock()
            trainer.save_state(self.last_path, epoch_done=False)
            self.save_s = 2.0 * (self.clock() - t0)
        self.eta.restart_clock()

    def per_epoch(self, trainer, per_step: float) -> float:
        """Seconds reserved for each epoch's validation and checkpoints."""
        if self.epoch_costs:
            return sum(self.epoch_costs) / len(self.epoch_costs)
        save = self.SAVE_S if self.save_s is None else self.save_s
        return self.eta.validation_estimate(trainer, per_step) + save

    # -- the plan -------------------------------------------------------------------------
    def _plan(self, trainer, validated: int) -> None:
        """Set the run's total iterations: the most that fit, with one validation and
        checkpoint for every epoch they end (`validated` epochs are done)."""
        per_step = self.eta.mean_step(0.0)
        if per_step <= 0:
            return
        per_epoch = self.per_epoch(trainer, per_step)
        left = self.budget_s * self.MARGIN - (self.clock() - trainer.t_start)
        done, ipe = trainer.global_iter, trainer.ipe

        def cost(n: int) -> float:
            return n * per_step + (math.ceil((done + n) / ipe) - validated) * per_epoch

        lo, hi = 0, max(0, trainer.cap - done)
        while lo < hi:  # the largest n with cost(n) <= left (cost grows with n)
            mid = (lo + hi + 1) // 2
            if cost(mid) <= left:
                lo = mid
            else:
                hi = mid - 1
        self.plan = {"per_step_s": per_step, "per_epoch_s": per_epoch, "left_s": left, "iters": lo,
                     "epochs_left": math.ceil((done + lo) / ipe) - validated}
        trainer.set_total(distributed.from_rank0(done + lo, trainer.device), auto_warmup=self.auto_warmup)
        self.planned = True

    def _projected_end(self, trainer, per_step: float) -> float:
        """Seconds from the start at which the current plan would end."""
        left_iters = max(0, trainer.total - trainer.global_iter)
        epochs_left = trainer.planned_epochs() - trainer.epoch + 1
        return (self.clock() - trainer.t_start) + left_iters * per_step + epochs_left * self.per_epoch(trainer, per_step)

    def after_step(self, trainer) -> None:
        if not self.probed:
            self.probe(trainer)
        if self.planned:
            # behind the plan (the machine got slower): plan again, shorter
            behind = self._projected_end(trainer, self.eta.mean_step(0.0)) > self.budget_s
            if distributed.agree(behind, trainer.device, src_rank_only=True):
                self._plan(trainer, validated=trainer.epoch - 1)
            return
        if self.eta.steps >= self.PROBE_STEPS:
            self._plan(trainer, validated=trainer.epoch - 1)
            return
        # before the plan: stop as soon as one more slow step would not fit with a validation
        # (rank 0 decides; every rank takes part in the vote at every step)
        spent = self.clock() - trainer.t_start
        avg = self.eta.mean_step(spent / max(1, trainer.global_iter))
        late = spent + avg + self.per_epoch(trainer, avg) > self.budget_s * self.MARGIN
        if distributed.agree(late, trainer.device, src_rank_only=True):
            trainer.set_total(trainer.global_iter, auto_warmup=self.auto_warmup)
            self.planned = True

    def before_validation(self, trainer) -> None:
        self._val_started = self.clock()

    def after_epoch(self, trainer) -> None:
        # the hooks before this one validated and saved: that is what an epoch end costs
        if self._val_started is not None:
            self.epoch_costs.append(self.clock() - self._val_started)
        if trainer.global_iter < trainer.total:
            self._plan(trainer, validated=trainer.epoch)  # revise with the measured cost


BUDGET_STALL_SHARE = 0.25  # under a time budget, early stop needs this share of it without a gain


class Validation(Callback):
    """After each epoch: score the model on the validation items (rank 0), keep the best
    epoch by the monitor (ties: higher mask AP50), and decide early stop (all ranks)."""

    def __init__(self, eta: Eta):
        self.eta = eta
        self.best_at = None  # when the best validation so far was reached
        self.clock = time.monotonic

    def after_epoch(self, trainer) -> None:
        cfg = trainer.resolved
        metrics = {}
        t0 = time.monotonic()
        if trainer.rank == 0 and trainer.val_items:
            metrics = trainer.validate()
            self.eta.after_validation(time.monotonic() - t0)
        trainer.metrics = metrics
        trainer.train_loss = trainer.loss_sum / trainer.loss_n if trainer.loss_n else None
        trainer.improved = False
        if trainer.rank == 0:
            score = metrics.get(cfg.monitor) if metrics else None
            if score is None:  # no validation data: the latest epoch is the best
                improved = True
            else:
                tie = metrics.get("mask_AP50", 0.0)
                improved = (score > trainer.best_score + 1e-9) or (
                    abs(score - trainer.best_score) <= 1e-9 and tie > trainer.best.get("mask_AP50", -1.0))
            if improved:
                trainer.best_score = score if score is not None else trainer.best_score
                trainer.best = {"epoch": trainer.epoch, **scalars(metrics)}
                trainer.bad_epochs = 0
            else:
                trainer.bad_epochs += 1
            trainer.improved = improved
            trainer.history.append({"epoch": trainer.epoch, "metrics": scalars(metrics),
                                    "train_loss": trainer.train_loss,
                                    "lr": float(trainer.optimizer.param_groups[0]["lr"])})
        now = self.clock()
        if trainer.improved or self.best_at is None:
            self.best_at = now
        # under a time budget a stall counts once the model finds objects (from scratch the
        # first epochs all score 0: slow learning, not a plateau) and only when it lasts a
        # good part of the budget: validations come every few seconds on small data, and a
        # few noisy ones without a gain ended a 10-minute run at 6 (docs/benchmarks.md)
        stalled = cfg.minutes is None or (
            trainer.best_score > 0 and now - self.best_at >= BUDGET_STALL_SHARE * 60.0 * float(cfg.minutes))
        stop = (bool(cfg.early_stop) and trainer.bad_epochs >= int(cfg.early_stop)
                and trainer.epoch < trainer.planned_epochs() and stalled)
        trainer.stop_early = distributed.agree(stop, trainer.device, src_rank_only=True)


class Checkpoint(Callback):
    """best.pt when an epoch improved, last.pt (resumable: optimizer, RNG, position)
    after every epoch and on cancel, the "epoch" event, and at the end model.pt and
    metrics.json. Rank 0 only writes."""

    def __init__(self, run_dir):
        self.last, self.best, self.model = run_dir / "last.pt", run_dir / "best.pt", run_dir / "model.pt"
        self.metrics = run_dir / "metrics.json"

    def after_epoch(self, trainer) -> None:
        if trainer.rank == 0:
            if trainer.improved:
                trainer.save_model(self.best, trainer.metrics)
            trainer.save_state(self.last, epoch_done=True)
        trainer.emit("epoch", epoch=trainer.epoch, metrics=main_metrics(trainer.metrics),
                     checkpoint=trainer.shown(self.last), best=trainer.improved, train_loss=trainer.train_loss,
                     all_metrics=scalars(trainer.metrics), model=trainer.shown(self.best),
                     early_stop=trainer.stop_early, epochs=trainer.planned_epochs())

    def on_cancel(self, trainer) -> None:
        # a consistent state (between two steps) is saved; an interrupt inside a step
        # leaves the checkpoint of the last epoch
        if trainer.rank == 0 and not trainer.in_step:
            trainer.save_state(self.last, epoch_done=False)
            self.write_metrics(trainer, "cancelled")

    def after_train(self, trainer) -> None:
        if trainer.rank != 0:
            return
        if self.best.exists():
            self.best.replace(self.model)  # a finished run (engine.runs) has model.pt
        self.write_metrics(trainer, "done", stopped_early=trainer.stopped_early,
                           seconds=time.monotonic() - trainer.t_start)
        if not trainer.resolved.keep_last and self.last.exists():
            self.last.unlink()

    def write_metrics(self, trainer, status: str, **extra) -> None:
        out = metrics_record(status=status, monitor=trainer.resolved.monitor, best=trainer.best,
                             history=trainer.history, train_items=len(trainer.train_items),
                             val_items=len(trainer.val_items), dropped=trainer.data.dropped, **extra)
        atomic_write_json(self.metrics, jsonable(out))


def main_metrics(metrics: dict) -> dict:
    keys = ("mask_AP", "mask_AP50", "acc50", "mask_AP75", "precision50", "recall50")
    return {k: float(metrics[k]) for k in keys if k in (metrics or {})}


def default_hooks(trainer, run_dir) -> list[Callback]:
    """The Trainer's own hooks after the log, in calling order (see the module docstring)."""
    eta = Eta()
    hooks: list[Callback] = [Cancel(), eta, Validation(eta), Checkpoint(run_dir)]
    cfg = trainer.resolved
    if cfg.minutes and not trainer.resumed:
        hooks.append(TimeBudget(cfg.minutes, eta, auto_warmup=trainer.config.warmup_iters is None,
                                last_path=run_dir / "last.pt"))
    return hooks

