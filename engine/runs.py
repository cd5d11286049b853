"""Training runs on disk: one schema for config.json / metrics.json, listing, and the one
activation rule. No torch, no Qt: the CLI, the training child and the GUI's Models panel
all read runs and decide activation here.

A run folder models/<run-id>/ holds model.pt (a finished run), last.pt (resumable),
log.jsonl (engine.events), snapshot.json, and the two files below, written by the Trainer
through `config_record` / `metrics_record` (schema 1; runs written before the "schema"
key existed are read the same way, with `created` and `weights` derived):

config.json
    {"schema": 1, "run": str, "created": "2026-12-02T01:00:00+00:00", "arch": str,
     "base": "scratch|coco|imagenet|<checkpoint path>", "weights": "scratch|coco|imagenet|run|path",
     "labels": [str], "normalization": {...}, "train": {TrainConfig fields},
     "data": {"origin": str, "train_items": [key], "val_items": [key], "dropped": {why: n}},
     "world_size": int, "torch": str}
metrics.json
    {"schema": 1, "status": "done|cancelled", "monitor": "mask_AP|mask_AP50|acc50",
     "best": {"epoch": int, "mask_AP": x, "mask_AP50": x, "acc50": x, ...},
     "mask_AP": x, "mask_AP50": x, "acc50": x, "epoch": int,      (copies of best)
     "history": [{"epoch", "metrics", "train_loss", "lr"}], "train_items": int, "val_items": int,
     "dropped": {...}, "stopped_early": bool, "seconds": float, "finished": ISO-8601 str}

Public API:
    METRIC_KEYS, SCHEMA_VERSION
    RunInfo (dataclass; .score(monitor=None), .finished, .resumable)
    read_run(folder) -> RunInfo
    list_runs(project_or_models_dir, finished_only=True) -> list[RunInfo]   (oldest first)
    weights_kind(base) -> "scratch|coco|imagenet|run|path"
    config_record(...) / metrics_record(...) -> dict      (what the Trainer writes)
    decide_activation(new, current, *, current_score=None) -> (active: bool, reason: str)
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

SCHEMA_VERSION = 1
METRIC_KEYS = ("mask_AP", "mask_AP50", "acc50")
_STAMP = re.compile(r"(\d{8})-(\d{6})")
_CHECKPOINT_NAMES = ("model.pt", "best.pt", "last.pt")


def _num(v) -> Optional[float]:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _int(v) -> Optional[int]:
    return int(v) if isinstance(v, int) and not isinstance(v, bool) else None


def _read_json(path: Path) -> dict:
    """A run file's object ({} when missing, unreadable or not an object)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def now_iso() -> str:
    """The current UTC time as run files record it."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def weights_kind(base: Any) -> str:
    """What a run started from: scratch, coco, imagenet, run (another run's checkpoint)
    or path (any other checkpoint file)."""
    base = str(base or "scratch")
    if base in ("scratch", "coco", "imagenet"):
        return base
    p = Path(base)
    if p.name in _CHECKPOINT_NAMES and (p.parent / "config.json").is_file():
        return "run"
    return "path"


def _base_display(base: Any, kind: str) -> Optional[str]:
    if base is None:
        return None
    if kind == "run":
        return Path(str(base)).parent.name
    if kind == "path":
        return Path(str(base)).name
    return str(base)


# --------------------------------------------------------------------------------------
# writing (the Trainer) and reading (everyone else)
# --------------------------------------------------------------------------------------

def config_record(*, run: str, arch: str, base: str, labels, normalization: dict, train: dict,
                  origin: str, train_keys, val_keys, dropped: dict, world_size: int = 1,
                  torch_version: str = "", created: Optional[str] = None) -> dict:
    """config.json of a run (schema above)."""
    return {"schema": SCHEMA_VERSION, "run": run, "created": created or now_iso(), "arch": arch,
            "base": str(base), "weights": weights_kind(base), "labels": list(labels),
            "normalization": normalization, "train": train,
            "data": {"origin": origin, "train_items": list(train_keys), "val_items": list(val_keys),
                     "dropped": dict(dropped)},
            "world_size": int(world_size), "torch": torch_version}


def metrics_record(*, status: str, monitor: str, best: dict, history: list, train_items: int,
                   val_items: int, dropped: dict, **extra) -> dict:
    """metrics.json of a run (schema above); extra: stopped_early, seconds, ..."""
    out = {"schema": SCHEMA_VERSION, "status": status, "monitor": monitor, "best": dict(best),
           **{k: best.get(k) for k in METRIC_KEYS if k in best},
           "epoch": best.get("epoch"), "history": list(history), "train_items": int(train_items),
           "val_items": int(val_items), "dropped": dict(dropped), **extra}
    if status == "done":
        out.setdefault("finished", now_iso())
    return out


@dataclass
class RunInfo:
    """One run folder, read from its config.json and metrics.json."""

    run: str
    folder: Path
    model_path: Optional[Path] = None       # model.pt when the run finished
    status: str = "unfinished"              # done | cancelled | unfinished
    created: Optional[_dt.datetime] = None
    arch: Optional[str] = None
    base: Optional[str] = None              # for display: scratch/coco/imagenet, a run id or a file name
    weights: Optional[str] = None           # scratch | coco | imagenet | run | path
    labels: list = field(default_factory=list)
    train_items: Optional[int] = None
    val_items: Optional[int] = None
    val_keys: list = field(default_factory=list)
    epochs: Optional[int] = None            # planned
    epochs_run: Optional[int] = None        # validated epochs so far
    monitor: str = "mask_AP"
    metrics: dict = field(default_factory=dict)   # METRIC_KEYS of the best epoch (None: unknown)
    best_epoch: Optional[int] = None
    seconds: Optional[float] = None
    problem: Optional[str] = None           # why the run cannot be used (e.g. its files are unreadable)

    @property
    def created_text(self) -> Optional[str]:
        """`created` as config.json records it (ISO 8601)."""
        return self.created.isoformat(timespec="seconds") if self.created is not None else None

    @property
    def finished(self) -> bool:
        return self.model_path is not None

    @property
    def resumable(self) -> bool:
        return self.model_path is None and (self.folder / "last.pt").exists()

    def score(self, monitor: Optional[str] = None) -> Optional[float]:
        """The best validation value of `monitor` (default: the run's own monitor)."""
        return self.metrics.get(monitor or self.monitor)


def _created(cfg: dict, run: str, folder: Path) -> Optional[_dt.datetime]:
    when = cfg.get("created")
    if isinstance(when, str):
        try:
            return _dt.datetime.fromisoformat(when.replace("Z", "+00:00"))
        except ValueError:
            pass
    m = _STAMP.search(run)  # runs before schema 1: the id carries the local time
    if m:
        try:
            return _dt.datetime.strptime(m.group(1) + m.group(2), "%Y%m%d%H%M%S")
        except ValueError:
            pass
    try:
        return _dt.datetime.fromtimestamp(folder.stat().st_mtime)
    except OSError:
        return None


def read_run(folder) -> RunInfo:
    """The RunInfo of a run folder; missing or unreadable files give None fields (and
    `problem` when there is no usable model file)."""
    folder = Path(folder)
    cfg, met = _read_json(folder / "config.json"), _read_json(folder / "metrics.json")
    run = cfg.get("run") if isinstance(cfg.get("run"), str) else folder.name
    train = cfg.get("train") if isinstance(cfg.get("train"), dict) else {}
    data = cfg.get("data") if isinstance(cfg.get("data"), dict) else {}
    best = met.get("best") if isinstance(met.get("best"), dict) else {}
    history = met.get("history")
    base = cfg.get("base", train.get("base"))
    kind = cfg.get("weights") if isinstance(cfg.get("weights"), str) else (
        weights_kind(base) if base is not None else None)
    val_keys = data.get("val_items") if isinstance(data.get("val_items"), list) else []
    train_keys = data.get("train_items")
    model = folder / "model.pt"
    info = RunInfo(
        run=run, folder=folder, model_path=model if model.is_file() else None,
        status=met.get("status") if met.get("status") in ("done", "cancelled") else "unfinished",
        created=_created(cfg, run, folder), arch=cfg.get("arch") or train.get("arch"),
        base=_base_display(base, kind or "path"), weights=kind,
        labels=[str(n) for n in cfg.get("labels") or []],
        train_items=_int(met.get("train_items")) if _int(met.get("train_items")) is not None else (
            len(train_keys) if isinstance(train_keys, list) else None),
        val_items=_int(met.get("val_items")) if _int(met.get("val_items")) is not None else len(val_keys),
        val_keys=[str(k) for k in val_keys], epochs=_int(train.get("epochs")),
        epochs_run=len(history) if isinstance(history, list) else None,
        monitor=met.get("monitor") if met.get("monitor") in METRIC_KEYS else "mask_AP",
        metrics={k: _num(best.get(k, met.get(k))) for k in METRIC_KEYS},
        best_epoch=_int(best.get("epoch")), seconds=_num(met.get("seconds")))
    if info.model_path is None:
        info.problem = f"run {run} has no model file (it did not finish)"
    elif not cfg:
        info.problem = f"run {run} has no readable config.json"
    return info


def list_runs(where, finished_only: bool = True) -> list[RunInfo]:
    """Runs of a project (or of a models/ folder), oldest first; finished_only: those
    with a model.pt."""
    models = Path(getattr(where, "models_dir", where))
    if not models.is_dir():
        return []
    runs = [read_run(p) for p in sorted(models.iterdir()) if p.is_dir()]
    return [r for r in runs if r.finished or not finished_only]


# --------------------------------------------------------------------------------------
# the activation rule
# --------------------------------------------------------------------------------------

def decide_activation(new: RunInfo, current: Optional[RunInfo], *, current_score: Optional[float] = None,
                      tol: float = 1e-9) -> tuple[bool, str]:
    """Should the finished run `new` be the active model instead of `current` (the
    active model's run, None when there is none)? Returns (active, reason).

    The rule: a new run becomes active unless the active model is at least as good by
    the new run's monitor. `current_score` is the active model's score on the new run's
    validation items (the fair comparison; the training child computes it); without it
    the active run's own validation score is used. A new run without a validation score
    is not activated (the user chooses, in the Models panel); an active model that is
    unreadable, predicts other classes or has no score is replaced.
    """
    mon = new.monitor
    if new.model_path is None:
        return False, f"run {new.run} has no model; the active model is unchanged"
    if current is None:
        return True, f"made {new.run} the active model (there was none)"
    if current.run == new.run:
        return True, f"{new.run} is already the active model"
    if current.model_path is None or current.problem:
        return True, (f"made {new.run} the active model (the previous one, {current.run}, cannot be read: "
                      f"{current.problem or 'no model file'})")
    if current.labels and new.labels and list(current.labels) != list(new.labels):
        return True, (f"made {new.run} the active model (the previous one, {current.run}, predicts other "
                      f"classes: {', '.join(current.labels)})")
    new_score = new.score(mon)
    if new_score is None:
        return False, (f"kept {current.run} as the active model: {new.run} has no validation score to "
                       f"compare (use 'maskloop evaluate' and the Models panel to choose)")
    where = f"on {new.run}'s validation items" if current_score is not None else "on its own validation items"
    old = current_score if current_score is not None else current.score(mon)
    if old is None:
        return True, f"made {new.run} the active model ({current.run} has no validation score)"
    if new_score >= old - tol:
        return True, (f"made {new.run} the active model ({mon} {new_score:.3f} on its validation items, "
                      f"{current.run}: {old:.3f} {where})")
    return False, (f"kept {current.run} as the active model ({mon} {old:.3f} {where}, "
                   f"{new.run}: {new_score:.3f})")
