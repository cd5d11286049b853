"""The JSON-lines event schema of training (DESIGN.md section 5): encode, parse, write.

One event is one JSON object on one line. The Trainer and `maskloop train` emit, in order:

    {"event": "start", "epochs": N, "iters_per_epoch": M, "device": "cuda:0",
     "train_items": K, "val_items": V, "weights": "scratch|coco|imagenet|run|path", ...}
    {"event": "iter", "epoch": e, "iter": i, "loss": x, "losses": {...}, "lr": y, "eta_s": z}
    {"event": "epoch", "epoch": e, "metrics": {"mask_AP": .., "mask_AP50": .., "acc50": ..},
     "checkpoint": ".."}
    {"event": "done", "run": "<run-id>", "model": "models/<run-id>/model.pt", "best": {...}}
    {"event": "error", "kind": "oom|data|cancelled|internal", "message": ".."}
    {"event": "activated", "run": "<run-id>", "active": true|false, "reason": ".."}

`activated` comes after `done` from `maskloop train` (not from the Trainer): the verdict of
the one activation rule (engine.runs.decide_activation); `active` says whether the run is
now the project's active model, `reason` is a sentence for the user. A reader never has
to parse English from stderr.

`epoch` counts from 1 to N and `iter` from 1 to M within an epoch. Extra keys may be
present (e.g. "run", "arch", "base", "weights" in start; "best" in epoch); readers must
ignore keys they do not know. Non-finite numbers are written as null (JSON has no NaN).
Every line ends in a newline and is flushed at once, so a reader (the GUI's QProcess,
`tail -f`) sees each event when it happens; a crash can cut only the last line, which
`parse_line` / `read_events` skip.

Public API (numpy/torch-free; the GUI imports it):
    EVENTS, ERROR_KINDS, WEIGHTS, SCHEMA, EventError
    make_event(name, **fields) -> dict        clean + validated
    activated_event(run, active, reason) -> dict
    encode_event(ev) -> str                   one line, no newline
    parse_line(line) -> dict | None           None for blank / foreign / invalid lines
    read_events(path) -> list[dict]
    validate_event(ev) -> dict
    JsonlWriter(path=None, stream=None)       a sink: call it with an event
    summarize(events) -> dict                 loss / validation curves for plots
"""
from __future__ import annotations

import json
import math
import os
import threading
from pathlib import Path
from typing import Any, Iterable, Optional, TextIO

EVENTS = ("start", "iter", "epoch", "done", "error", "activated")
ERROR_KINDS = ("oom", "data", "cancelled", "internal")
# what a run started from (the "weights" key of start; RunInfo.weights)
WEIGHTS = ("scratch", "coco", "imagenet", "run", "path")

_NUM = (int, float)
# required keys and their types per event ("num" = int or float or None for non-finite)
SCHEMA: dict[str, dict[str, Any]] = {
    "start": {"epochs": int, "iters_per_epoch": int, "device": str, "train_items": int, "val_items": int},
    "iter": {"epoch": int, "iter": int, "loss": "num", "losses": dict, "lr": "num", "eta_s": "num"},
    "epoch": {"epoch": int, "metrics": dict, "checkpoint": str},
    "done": {"run": str, "model": str, "best": dict},
    "error": {"kind": str, "message": str},
    "activated": {"run": str, "active": bool, "reason": str},
}


class EventError(ValueError):
    """An event that does not follow the schema above."""


def _clean(obj):
    """JSON-ready copy: non-finite floats -> None, numpy/torch scalars -> Python numbers."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalar
        try:
            return _clean(obj.item())
        except (TypeError, ValueError):
            pass
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return str(obj)


def _is_num(v) -> bool:
    return v is None or (isinstance(v, _NUM) and not isinstance(v, bool))


def validate_event(ev: dict) -> dict:
    """Raise EventError when `ev` does not follow the schema; return it otherwise."""
    if not isinstance(ev, dict):
        raise EventError(f"an event must be a JSON object, got {type(ev).__name__}")
    kind = ev.get("event")
    if kind not in SCHEMA:
        raise EventError(f"unknown event {kind!r} (known: {', '.join(EVENTS)})")
    for key, typ in SCHEMA[kind].items():
        if key not in ev:
            raise EventError(f"{kind} event without {key!r}")
        v = ev[key]
        if typ == "num":
            ok = _is_num(v)
        elif typ is int:
            ok = isinstance(v, int) and not isinstance(v, bool)
        else:
            ok = isinstance(v, typ)
        if not ok:
            raise EventError(f"{kind} event: {key!r} has the wrong type ({type(v).__name__})")
    if kind == "error" and ev["kind"] not in ERROR_KINDS:
        raise EventError(f"error event of unknown kind {ev['kind']!r} (known: {', '.join(ERROR_KINDS)})")
    if kind == "iter":
        for k, v in ev["losses"].items():
            if not _is_num(v):
                raise EventError(f"iter event: losses[{k!r}] is not a number")
    if kind == "start" and "weights" in ev and ev["weights"] not in WEIGHTS:
        raise EventError(f"start event: unknown weights {ev['weights']!r} (known: {', '.join(WEIGHTS)})")
    return ev


def make_event(event_name: str, **fields) -> dict:
    """A clean, validated event dict ({"event": event_name, **fields}, in that key order)."""
    return validate_event(_clean({"event": event_name, **fields}))


def activated_event(run: str, active: bool, reason: str) -> dict:
    """The verdict of the activation rule for `run` (see engine.runs.decide_activation)."""
    return make_event("activated", run=str(run), active=bool(active), reason=str(reason))


def encode_event(ev: dict) -> str:
    """One line of JSON (no newline); raises EventError for a bad event."""
    ev = validate_event(_clean(ev))
    return json.dumps(ev, ensure_ascii=False, allow_nan=False, separators=(", ", ": "))


def parse_line(line: str) -> Optional[dict]:
    """An event from one line, or None for blank, non-JSON or invalid lines (e.g. a
    half-written last line, or a library's stray print on stdout)."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        return validate_event(json.loads(line))
    except (ValueError, EventError):
        return None


def read_events(path) -> list[dict]:
    """All valid events of a log.jsonl (a missing file gives [])."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return [ev for ev in (parse_line(line) for line in f) if ev is not None]
    except FileNotFoundError:
        return []


class JsonlWriter:
    """A sink that appends events to a file and/or a stream, one flushed line each
    (thread-safe). The file is opened in append mode so a resumed run continues its log."""

    def __init__(self, path=None, stream: Optional[TextIO] = None, fsync: bool = False):
        self.path = Path(path) if path is not None else None
        self.stream = stream
        self.fsync = fsync
        self._lock = threading.Lock()
        self._file = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")

    def __call__(self, ev: dict) -> None:
        line = encode_event(ev) + "\n"
        with self._lock:
            if self._file is not None:
                self._file.write(line)
                self._file.flush()
                if self.fsync or ev.get("event") != "iter":
                    try:
                        os.fsync(self._file.fileno())
                    except OSError:
                        pass
            if self.stream is not None:
                try:
                    self.stream.write(line)
                    self.stream.flush()
                except (OSError, ValueError):  # a closed pipe must not stop training
                    pass

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def summarize(events: Iterable[dict]) -> dict:
    """Loss and validation curves from events (for the GUI and reports):
    {"iters": [(global_iter, loss)], "epochs": [(epoch, metrics)],
     "state": "running|done|error", "start", "done", "error", "activated"}"""
    out = {"iters": [], "epochs": [], "state": "running", "error": None, "done": None, "start": None,
           "activated": None}
    ipe = 1
    for ev in events:
        k = ev.get("event")
        if k == "start":
            out["start"] = ev
            ipe = max(1, int(ev.get("iters_per_epoch") or 1))
            out["state"] = "running"
        elif k == "iter":
            out["iters"].append(((int(ev["epoch"]) - 1) * ipe + int(ev["iter"]), ev.get("loss")))
        elif k == "epoch":
            out["epochs"].append((int(ev["epoch"]), dict(ev.get("metrics") or {})))
        elif k == "done":
            out["state"], out["done"] = "done", ev
        elif k == "error":
            out["state"], out["error"] = "error", ev
        elif k == "activated":
            out["activated"] = ev
    return out
