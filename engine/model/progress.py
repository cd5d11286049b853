"""Training progress as JSON lines (DESIGN.md section 5), and the sinks that show it.

One event is one JSON object on one line. The Trainer emits, in this order:

    {"event": "start", "epochs": N, "iters_per_epoch": M, "device": "cuda:0",
     "train_items": K, "val_items": V, ...}
    {"event": "iter", "epoch": e, "iter": i, "loss": x, "losses": {...}, "lr": y, "eta_s": z}
    {"event": "epoch", "epoch": e, "metrics": {"mask_AP": .., "mask_AP50": .., "acc50": ..},
     "checkpoint": ".."}
    {"event": "done", "run": "<run-id>", "model": "models/<run-id>/model.pt", "best": {...}}
    {"event": "error", "kind": "oom|data|cancelled|internal", "message": ".."}

`epoch` counts from 1 to N and `iter` from 1 to M within an epoch. Extra keys may be
present (e.g. "run", "time", "best" in an epoch event); readers must ignore keys they do
not know. Non-finite numbers are written as null (JSON has no NaN). Every line ends in
a newline and is flushed at once, so a reader (the GUI's QProcess, `tail -f`) sees each
event when it happens; a crash can cut only the last line, which `read_events` skips.

This module imports no torch: the GUI reads logs with it.
"""
from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, TextIO

EVENTS = ("start", "iter", "epoch", "done", "error")
ERROR_KINDS = ("oom", "data", "cancelled", "internal")

_NUM = (int, float)
# required keys and their types per event ("num" = int or float or None for non-finite)
SCHEMA: dict[str, dict[str, Any]] = {
    "start": {"epochs": int, "iters_per_epoch": int, "device": str, "train_items": int, "val_items": int},
    "iter": {"epoch": int, "iter": int, "loss": "num", "losses": dict, "lr": "num", "eta_s": "num"},
    "epoch": {"epoch": int, "metrics": dict, "checkpoint": str},
    "done": {"run": str, "model": str, "best": dict},
    "error": {"kind": str, "message": str},
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
            ok = v is None or (isinstance(v, _NUM) and not isinstance(v, bool))
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
            if not (v is None or (isinstance(v, _NUM) and not isinstance(v, bool))):
                raise EventError(f"iter event: losses[{k!r}] is not a number")
    return ev


def make_event(event_name: str, **fields) -> dict:
    """A clean, validated event dict ({"event": event_name, **fields}, in that key order)."""
    ev = _clean({"event": event_name, **fields})
    return validate_event(ev)


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
        ev = json.loads(line)
        return validate_event(ev)
    except (ValueError, EventError):
        return None


def read_events(path) -> list[dict]:
    """All valid events of a log.jsonl (a missing file gives [])."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return [ev for ev in (parse_line(line) for line in f) if ev is not None]
    except FileNotFoundError:
        return []


# --------------------------------------------------------------------------------------
# sinks (Trainer callbacks: a callable taking one event dict)
# --------------------------------------------------------------------------------------

class JsonlWriter:
    """Appends events to a file and/or a stream, one flushed line each (thread-safe).

    The file is opened in append mode so a resumed run continues its log.
    """

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


class TerminalBar:
    """A progress bar for a terminal, fed by events (on stderr; quiet when not a tty
    unless force=True). Prints one summary line per epoch."""

    def __init__(self, stream: Optional[TextIO] = None, force: bool = False, width: int = 28):
        self.stream = stream or sys.stderr
        self.enabled = force or (hasattr(self.stream, "isatty") and self.stream.isatty())
        self.width = width
        self.epochs = 0
        self.ipe = 0
        self._last = 0.0

    def __call__(self, ev: dict) -> None:
        kind = ev.get("event")
        out = self.stream
        if kind == "start":
            self.epochs, self.ipe = int(ev.get("epochs", 0)), int(ev.get("iters_per_epoch", 0))
            out.write(f"training on {ev.get('device')}: {ev.get('train_items')} train / "
                      f"{ev.get('val_items')} val items, {self.epochs} epochs x {self.ipe} iterations\n")
            dropped = ev.get("dropped") or {}
            if dropped:
                out.write("left out of the training data: "
                          + ", ".join(f"{n} instance(s): {why}" for why, n in sorted(dropped.items())) + "\n")
            out.flush()
            return
        if kind == "iter":
            if not self.enabled:
                return
            now = time.monotonic()
            i = int(ev.get("iter", 0))
            if i < self.ipe and now - self._last < 0.2:
                return
            self._last = now
            frac = i / self.ipe if self.ipe else 1.0
            n = int(frac * self.width)
            loss = ev.get("loss")
            loss_s = f"{loss:.3f}" if isinstance(loss, _NUM) else "nan"
            eta = ev.get("eta_s") or 0.0
            out.write(f"\repoch {ev.get('epoch')}/{self.epochs} [{'#' * n}{'-' * (self.width - n)}] "
                      f"{i}/{self.ipe} loss {loss_s} eta {_hms(eta)}   ")
            out.flush()
            return
        if kind == "epoch":
            m = ev.get("metrics") or {}
            parts = [f"{k} {m[k]:.3f}" for k in ("mask_AP", "mask_AP50", "acc50") if isinstance(m.get(k), _NUM)]
            prefix = "\r" if self.enabled else ""
            star = " *" if ev.get("best") else ""
            out.write(f"{prefix}epoch {ev.get('epoch')}/{self.epochs}: "
                      f"{', '.join(parts) or 'no validation items'}{star}".ljust(self.width + 40) + "\n")
            out.flush()
            return
        if kind == "error":
            if self.enabled:
                out.write("\n")
            out.flush()


def _hms(seconds: float) -> str:
    s = int(max(0, seconds or 0))
    h, r = divmod(s, 3600)
    m, s = divmod(r, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def tee(*sinks: Optional[Callable[[dict], None]]) -> Callable[[dict], None]:
    """One callable that feeds an event to every sink (None entries skipped)."""
    live = [s for s in sinks if s is not None]

    def send(ev: dict) -> None:
        for s in live:
            s(ev)
    return send


def summarize(events: Iterable[dict]) -> dict:
    """Loss and validation curves from events (for the GUI and reports):
    {"iters": [(global_iter, loss)], "epochs": [(epoch, metrics)], "state": "running|done|error", ...}"""
    out = {"iters": [], "epochs": [], "state": "running", "error": None, "done": None, "start": None}
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
    return out
