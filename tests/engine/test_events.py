"""engine.events: the JSON-lines schema (DESIGN.md section 5), including `activated`."""
from __future__ import annotations

import io
import json

import pytest

from engine import events as E


def test_activated_event_round_trips():
    ev = E.activated_event("run-1", False, "kept run-0 as the active model (mask_AP 0.5)")
    line = E.encode_event(ev)
    assert json.loads(line) == {"event": "activated", "run": "run-1", "active": False,
                                "reason": "kept run-0 as the active model (mask_AP 0.5)"}
    assert E.parse_line(line + "\n") == ev


@pytest.mark.parametrize("bad", [
    {"event": "activated", "run": "r", "active": "yes", "reason": "x"},   # active must be a bool
    {"event": "activated", "run": "r", "reason": "x"},
    {"event": "start", "epochs": 1, "iters_per_epoch": 1, "device": "cpu", "train_items": 1, "val_items": 0,
     "weights": "imagenet21k"},
    {"event": "iter", "epoch": 1, "iter": 1, "loss": 1.0, "losses": {"a": "x"}, "lr": 0.1, "eta_s": 1},
    {"event": "progress"},
])
def test_invalid_events_are_rejected_and_skipped(bad):
    with pytest.raises(E.EventError):
        E.encode_event(bad)
    assert E.parse_line(json.dumps(bad)) is None


def test_writer_and_reader(tmp_path):
    stream = io.StringIO()
    with E.JsonlWriter(tmp_path / "log.jsonl", stream=stream) as w:
        w(E.make_event("start", epochs=1, iters_per_epoch=2, device="cpu", train_items=3, val_items=1,
                       weights="coco"))
        w(E.make_event("iter", epoch=1, iter=1, loss=float("inf"), losses={}, lr=0.1, eta_s=2.0))
        w(E.make_event("done", run="r", model="models/r/model.pt", best={}))
        w(E.activated_event("r", True, "made r the active model (there was none)"))
    with open(tmp_path / "log.jsonl", "a") as f:
        f.write('{"event": "iter", "epo')      # a cut last line
    evs = E.read_events(tmp_path / "log.jsonl")
    assert [e["event"] for e in evs] == ["start", "iter", "done", "activated"]
    assert evs[1]["loss"] is None                    # non-finite -> null
    assert stream.getvalue().count("\n") == 4
    s = E.summarize(evs)
    assert s["state"] == "done" and s["activated"]["active"] is True and s["iters"] == [(1, None)]


def test_progress_module_reexports_the_schema():
    from engine.model import progress as P
    assert P.encode_event is E.encode_event and P.JsonlWriter is E.JsonlWriter and "activated" in P.EVENTS
