"""The inference worker (warm model, per-item results, cancel) and the training runner
(a child process whose JSON lines become signals; crash / OOM / kill reported)."""
from __future__ import annotations

import os
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from engine.annotations import Instance

pytestmark = pytest.mark.gui

from gui.loop.inference import SegmentService  # noqa: E402
from gui.loop.runner import TrainingRunner, describe_exit, entry_args, train_command  # noqa: E402


class FakeProject:
    labels = ["a"]

    def __init__(self, n=4, size=64):
        self.images = {f"item{k}": np.full((size, size), k, np.uint16) for k in range(n)}
        self.loaded = []

    def load_image(self, item_id, **kw):
        self.loaded.append((item_id, threading.current_thread().name))
        return self.images[item_id]


class FakePredictor:
    instances_made = 0
    label_names = ["a"]

    def __init__(self, path, device, delay=0.0):
        self.path, self.device, self.delay = path, device, delay
        self.threads = set()

    def predict(self, image, *, score_threshold, tile=None, progress=None, cancel=None):
        self.threads.add(threading.current_thread().ident)
        end = time.monotonic() + self.delay
        while time.monotonic() < end:
            if cancel is not None:
                cancel.raise_if_cancelled()
            time.sleep(0.005)
        m = np.zeros((4, 4), bool)
        m[1:3, 1:3] = True
        return [Instance(mask=m, x0=int(image[0, 0]), y0=0, label="a", score=0.9, source="model"),
                Instance(mask=m, x0=10, y0=10, label="a", score=0.2, source="model")]


def make_service(qtbot, delay=0.0, fail=False):
    made = []

    def factory(path, device):
        if fail:
            from engine.errors import CheckpointError
            raise CheckpointError("not a MaskLoop checkpoint", path)
        p = FakePredictor(path, device, delay)
        made.append(p)
        return p

    svc = SegmentService(predictor_factory=factory)
    return svc, made


@pytest.fixture
def model_file(tmp_path):
    p = tmp_path / "model.pt"
    p.write_bytes(b"x")
    return p


def test_segment_emits_per_item_results_in_the_worker_thread(qtbot, model_file):
    svc, made = make_service(qtbot)
    proj = FakeProject()
    results, progress = [], []
    svc.itemDone.connect(lambda j, i, insts, dt: results.append((i, insts)))
    svc.progress.connect(lambda j, d, t, eta, msg: progress.append((d, t, eta)))
    try:
        with qtbot.waitSignal(svc.jobFinished, timeout=10000) as blocker:
            jid = svc.segment(proj, ["item0", "item1", "item2"], model_path=str(model_file), run_id="run-1")
        assert blocker.args[0] == jid
        summary = blocker.args[1]
        assert summary["done"] == 3 and not summary["cancelled"]
        assert [r[0] for r in results] == ["item0", "item1", "item2"]
        assert all(i.model == "run-1" and i.source == "model" for _, insts in results for i in insts)
        assert progress[-1][:2] == (3, 3) and progress[-1][2] == 0
        # inference ran off the GUI thread
        assert all(name != threading.main_thread().name for _, name in proj.loaded)
        assert threading.main_thread().ident not in made[0].threads
        assert not svc.busy
    finally:
        svc.shutdown()


def test_model_stays_warm_and_reloads_when_the_file_changes(qtbot, model_file, tmp_path):
    svc, made = make_service(qtbot)
    proj = FakeProject()
    try:
        for _ in range(2):
            with qtbot.waitSignal(svc.jobFinished, timeout=10000):
                svc.segment(proj, ["item0"], model_path=str(model_file))
        assert svc.worker.loads == 1
        # the same run retrained (file replaced): reloaded
        os.utime(model_file, ns=(time.time_ns(), time.time_ns() + 10**9))
        with qtbot.waitSignal(svc.jobFinished, timeout=10000):
            svc.segment(proj, ["item0"], model_path=str(model_file))
        assert svc.worker.loads == 2
        # another model made active: set_model warms it before the next job
        other = tmp_path / "other.pt"
        other.write_bytes(b"y")
        with qtbot.waitSignal(svc.modelLoaded, timeout=10000) as blocker:
            svc.set_model(str(other))
        assert blocker.args[0] == str(other)
        with qtbot.waitSignal(svc.jobFinished, timeout=10000):
            svc.segment(proj, ["item1"])
        assert svc.worker.loads == 3
        assert made[-1].path == str(other)
    finally:
        svc.shutdown()


def test_cancel_stops_between_and_inside_items(qtbot, model_file):
    svc, _ = make_service(qtbot, delay=0.3)
    proj = FakeProject(n=6)
    done = []
    svc.itemDone.connect(lambda j, i, insts, dt: done.append(i))
    try:
        with qtbot.waitSignal(svc.jobFinished, timeout=10000) as blocker:
            svc.segment(proj, list(proj.images), model_path=str(model_file))
            qtbot.waitUntil(lambda: len(done) >= 1, timeout=5000)
            svc.cancel()
        summary = blocker.args[1]
        assert summary["cancelled"]
        assert 1 <= summary["done"] < 6
        assert len(done) == summary["done"]
    finally:
        svc.shutdown()


def test_a_bad_model_is_reported_not_raised(qtbot, model_file):
    svc, _ = make_service(qtbot, fail=True)
    try:
        with qtbot.waitSignal(svc.failed, timeout=10000) as blocker:
            svc.segment(FakeProject(), ["item0"], model_path=str(model_file))
        assert "not a MaskLoop checkpoint" in blocker.args[1]
        qtbot.waitUntil(lambda: not svc.busy, timeout=2000)
    finally:
        svc.shutdown()


def test_no_model_is_a_clear_error(qtbot):
    from engine.errors import MaskLoopError
    svc, _ = make_service(qtbot)
    try:
        with pytest.raises(MaskLoopError, match="no model is trained yet"):
            svc.segment(FakeProject(), ["item0"])
    finally:
        svc.shutdown()


def test_classic_proposals_in_the_worker(qtbot):
    import cv2
    img = np.full((96, 96), 100, np.uint16)
    for c in ((20, 20), (60, 30), (40, 70)):
        cv2.circle(img, c, 9, 900, -1)
    proj = FakeProject()
    proj.images = {"a": img}
    svc, _ = make_service(qtbot)
    got = []
    svc.itemDone.connect(lambda j, i, insts, dt: got.append(insts))
    try:
        with qtbot.waitSignal(svc.jobFinished, timeout=10000):
            svc.propose(proj, ["a"], label="cell")
        assert len(got[0]) == 3
        assert all(i.source == "classic" and i.label == "cell" for i in got[0])
    finally:
        svc.shutdown()


# --------------------------------------------------------------------------------------
# training runner
# --------------------------------------------------------------------------------------

def script_cmd(tmp_path, body: str) -> list[str]:
    f = tmp_path / "child.py"
    f.write_text(textwrap.dedent(body))
    return [sys.executable, "-u", str(f)]


GOOD = """
import json, sys, time
def out(**kw):
    print(json.dumps(kw), flush=True)
out(event="start", epochs=2, iters_per_epoch=3, device="cpu", train_items=4, val_items=1)
print("some plain log line", flush=True)
for e in range(2):
    for i in range(3):
        out(event="iter", epoch=e, iter=i, loss=1.0 / (1 + e * 3 + i), losses={}, lr=0.01, eta_s=5.0)
    out(event="epoch", epoch=e, metrics={"mask_AP": 0.1 * (e + 1), "mask_AP50": 0.2, "acc50": 0.3},
        checkpoint="c.pt")
sys.stderr.write("a warning on stderr\\n")
out(event="done", run="run-x", model="models/run-x/model.pt", best={"mask_AP": 0.2})
"""


def test_runner_turns_json_lines_into_signals(qtbot, tmp_path):
    r = TrainingRunner()
    iters, epochs, logs = [], [], []
    r.iteration.connect(iters.append)
    r.epochEnded.connect(epochs.append)
    r.logLine.connect(logs.append)
    with qtbot.waitSignal(r.finished, timeout=20000) as blocker:
        r.start(tmp_path, command=script_cmd(tmp_path, GOOD))
    ok, kind, msg = blocker.args
    assert ok and kind == "done" and "run-x" in msg
    assert r.start_event["iters_per_epoch"] == 3
    assert len(iters) == 6 and len(epochs) == 2
    assert epochs[1]["metrics"]["mask_AP"] == pytest.approx(0.2)
    assert "some plain log line" in logs and "a warning on stderr" in logs
    assert not r.running


@pytest.mark.parametrize("body, kind, words", [
    ("import os, json; print(json.dumps({'event':'start','epochs':1,'iters_per_epoch':1}), flush=True); os.abort()",
     "crash", "crashed"),
    ("import sys; sys.stderr.write('RuntimeError: CUDA out of memory. Tried to allocate 2 GiB\\n'); sys.exit(1)",
     "oom", "out of memory"),
    ("import json, sys; print(json.dumps({'event':'error','kind':'data','message':'no reviewed items'})); sys.exit(1)",
     "data", "no reviewed items"),
    ("import json, sys; print(json.dumps({'event':'error','kind':'oom','message':'CUDA out of memory'})); sys.exit(1)",
     "oom", "ran out of memory"),
    ("import sys; sys.stderr.write('Traceback ...\\nValueError: boom\\n'); sys.exit(3)",
     "exit", "exit status 3: ValueError: boom"),
])
def test_runner_reports_failures_clearly(qtbot, tmp_path, body, kind, words):
    r = TrainingRunner()
    with qtbot.waitSignal(r.finished, timeout=20000) as blocker:
        r.start(tmp_path, command=script_cmd(tmp_path, body))
    ok, got_kind, msg = blocker.args
    assert not ok
    assert got_kind == kind, msg
    assert words in msg


def test_runner_killed_by_sigkill_is_reported(qtbot, tmp_path):
    if sys.platform == "win32":
        pytest.skip("POSIX signals")
    import signal
    body = """
    import json, time
    print(json.dumps({"event": "start", "epochs": 1, "iters_per_epoch": 100, "device": "cpu", "train_items": 1, "val_items": 0}), flush=True)
    time.sleep(60)
    """
    r = TrainingRunner()
    with qtbot.waitSignal(r.started, timeout=20000):
        r.start(tmp_path, command=script_cmd(tmp_path, body))
    with qtbot.waitSignal(r.finished, timeout=20000) as blocker:
        os.kill(r.pid(), signal.SIGKILL)
    ok, kind, msg = blocker.args
    assert not ok and kind == "killed" and "SIGKILL" in msg


def test_cancel_terminates_then_kills(qtbot, tmp_path):
    body = """
    import json, signal, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)   # a child that ignores the polite request
    print(json.dumps({"event": "start", "epochs": 1, "iters_per_epoch": 100, "device": "cpu", "train_items": 1, "val_items": 0}), flush=True)
    while True:
        time.sleep(0.05)
    """
    r = TrainingRunner()
    r.KILL_AFTER_MS = 500
    with qtbot.waitSignal(r.started, timeout=20000):
        r.start(tmp_path, command=script_cmd(tmp_path, body))
    t0 = time.monotonic()
    with qtbot.waitSignal(r.finished, timeout=20000) as blocker:
        r.cancel()
    assert time.monotonic() - t0 < 10
    ok, kind, msg = blocker.args
    assert not ok and kind == "cancelled"


def test_failed_to_start_is_reported(qtbot, tmp_path):
    r = TrainingRunner()
    with qtbot.waitSignal(r.finished, timeout=20000) as blocker:
        r.start(tmp_path, command=[str(tmp_path / "no-such-python"), "x"])
    ok, kind, msg = blocker.args
    assert not ok and "cannot start" in msg


def test_train_command_runs_the_cli_of_this_installation(tmp_path):
    cmd = train_command(tmp_path / "proj", arch="r18fpn", base="scratch", epochs=2, device="cpu")
    assert cmd[0] == sys.executable
    assert cmd[-2:] == ["--progress", "jsonl"]
    i = cmd.index("train")
    assert cmd[i + 1] == str(tmp_path / "proj")
    assert cmd[i + 2:i + 10] == ["--arch", "r18fpn", "--base", "scratch", "--epochs", "2", "--device", "cpu"]
    entry = entry_args()
    assert Path(entry[0]).name == "main.py" or entry[0] == "-c"


def test_describe_exit_without_events():
    kind, msg = describe_exit(1, False, "", None, cancelled=False)
    assert kind == "exit" and "exit status 1" in msg and "unchanged" in msg


def test_a_model_for_other_labels_is_refused(qtbot, model_file):
    class P(FakePredictor):
        label_names = ["nucleus", "mitochondrion"]

    class Proj(FakeProject):
        labels = ["nucleus"]

    svc = SegmentService(predictor_factory=lambda path, device: P(path, device))
    try:
        with qtbot.waitSignal(svc.failed, timeout=10000) as blocker:
            svc.segment(Proj(), ["item0"], model_path=str(model_file))
        assert "mitochondrion" in blocker.args[1]
    finally:
        svc.shutdown()


def test_cancel_waits_for_the_checkpoint_and_a_second_cancel_stops_at_once(qtbot, tmp_path):
    """A child that is saving its checkpoint gets time (the kill comes after KILL_AFTER_MS,
    a minute); the user's second Cancel ("Stop now") kills it without waiting."""
    from gui.dialogs.training_view import CANCEL, STOP_NOW, TrainingView
    body = """
    import json, signal, time
    signal.signal(signal.SIGTERM, lambda *a: time.sleep(3600))   # "saving" for a long time
    print(json.dumps({"event": "start", "epochs": 1, "iters_per_epoch": 100, "device": "cpu", "train_items": 1, "val_items": 0}), flush=True)
    while True:
        time.sleep(0.05)
    """
    r = TrainingRunner()
    assert r.KILL_AFTER_MS >= 30000
    view = TrainingView()
    qtbot.addWidget(view)
    view.attach(r)
    view.begin("test")
    with qtbot.waitSignal(r.started, timeout=20000):
        r.start(tmp_path, command=script_cmd(tmp_path, body))
    view.cancel_button.click()
    assert view.cancel_button.text() == STOP_NOW and view.cancel_button.isEnabled()
    assert "saving a checkpoint" in view.status.text()
    qtbot.wait(1000)
    assert r.running and r.cancelling  # not killed while it saves
    t0 = time.monotonic()
    with qtbot.waitSignal(r.finished, timeout=10000) as blocker:
        view.cancel_button.click()
    assert time.monotonic() - t0 < 5
    assert blocker.args[1] == "cancelled"
    assert view.cancel_button.text() == CANCEL and not view.cancel_button.isEnabled()
