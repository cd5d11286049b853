"""Training progress on a terminal: TerminalBar, a sink fed by events.

The event schema itself (make_event, encode_event, parse_line, read_events, JsonlWriter,
summarize, ...) lives in engine.events; its names are re-exported here for old callers.
This module imports no torch.
"""
from __future__ import annotations

import sys
import time
from typing import Optional, TextIO

from ..events import (ERROR_KINDS, EVENTS, SCHEMA, EventError, JsonlWriter, encode_event,  # noqa: F401
                      make_event, parse_line, read_events, summarize, validate_event)

_NUM = (int, float)


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
            weights = {"scratch": "from scratch", "coco": "from COCO weights", "imagenet": "from ImageNet weights",
                       "run": "from another run", "path": "from a checkpoint file"}.get(ev.get("weights"), "")
            plan = (f"planned to end within {ev['minutes']:g} min" if ev.get("minutes")
                    else f"{self.epochs} epochs x {self.ipe} iterations")
            out.write(f"training on {ev.get('device')} {weights}: {ev.get('train_items')} train / "
                      f"{ev.get('val_items')} val items, {plan}\n".replace("  ", " "))
            dropped = ev.get("dropped") or {}
            if dropped:
                out.write("left out of the training data: "
                          + ", ".join(f"{n} instance(s): {why}" for why, n in sorted(dropped.items())) + "\n")
            out.flush()
            return
        if kind in ("iter", "epoch") and isinstance(ev.get("epochs"), int):
            self.epochs = ev["epochs"]  # a time budget's plan
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
