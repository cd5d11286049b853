"""Long work off the GUI thread (DESIGN.md section 7).

- `SegmentService` owns one QThread with a `PredictorWorker` in it. The worker keeps
  an engine `Predictor` warm between jobs and reloads it only when the model file
  changes (another run made active, or the same run retrained). A job segments a list
  of items one by one and emits each item's instances as soon as they exist, with
  progress and an ETA; `cancel()` stops it between items (and inside an item where the
  predictor polls its CancelToken). The worker never writes annotations: results go to
  the GUI thread, where `gui.workflow` applies them through the controller (so reviewed
  items and the item being edited are never overwritten behind the user's back).
  The same worker runs the model-free cold-start proposals (engine/classic_proposals).

- `TrainingRunner` runs `main.py train PROJECT ... --progress jsonl` as a child process
  (QProcess), turns its JSON lines into signals, cancels it (terminate, then kill after
  a grace period) and, when it dies, says why: a crash, out of memory, killed, or a
  non-zero exit, with the last lines of its stderr. A crash in training cannot take the
  GUI or the project with it, and GPU memory returns when the process ends.

No file-format or model logic lives here: the worker calls the engine, the runner the CLI.
"""
from __future__ import annotations

import json
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from PyQt5 import QtCore

from engine.errors import CancelledError, MaskLoopError
from engine.jobs import CancelToken

# --------------------------------------------------------------------------------------
# inference
# --------------------------------------------------------------------------------------


@dataclass
class SegmentJob:
    """One request: segment `item_ids` of `project` with a model (or classic proposals)."""

    project: Any                       # engine.project.Project (read only here: load_image)
    item_ids: list
    mode: str = "model"                # "model" | "classic"
    model_path: Optional[str] = None   # checkpoint file (mode "model")
    run_id: Optional[str] = None       # the run the instances are credited to
    score_threshold: float = 0.05      # keep low scores: the GUI's slider hides them live
    tile: Optional[int] = None
    classic: dict = field(default_factory=dict)   # ProposalParams fields (mode "classic")
    label: str = ""                    # label of classic proposals
    job_id: int = 0
    cancel: CancelToken = field(default_factory=CancelToken)


def default_predictor_factory(model_path: str, device: str = "auto"):
    """The engine's Predictor (torch is imported here, in the worker thread, not at GUI start)."""
    from engine.model.predict import Predictor
    return Predictor(model_path, device=device)


def _model_key(path: Optional[str], device: str) -> Optional[tuple]:
    if not path:
        return None
    p = Path(path)
    try:
        st = p.stat()
        return (str(p.resolve()), st.st_mtime_ns, st.st_size, device)
    except OSError:
        return (str(p), None, None, device)


class PredictorWorker(QtCore.QObject):
    """Lives in the SegmentService's thread; slots run there, signals reach the GUI queued."""

    jobStarted = QtCore.pyqtSignal(int, int)                 # job id, items
    modelLoading = QtCore.pyqtSignal(str)                    # model path
    modelLoaded = QtCore.pyqtSignal(str, float)              # model path, seconds
    itemDone = QtCore.pyqtSignal(int, str, object, float)    # job id, item id, list[Instance], seconds
    itemFailed = QtCore.pyqtSignal(int, str, str)            # job id, item id, message
    progress = QtCore.pyqtSignal(int, int, int, float, str)  # job id, done, total, eta_s (-1 unknown), message
    jobFinished = QtCore.pyqtSignal(int, dict)               # job id, summary
    failed = QtCore.pyqtSignal(int, str)                     # job id, message (the job stopped)

    def __init__(self, predictor_factory: Callable = default_predictor_factory, device: str = "auto") -> None:
        super().__init__()
        self._factory = predictor_factory
        self.device = device
        self._predictor = None
        self._key: Optional[tuple] = None
        self.loads = 0  # how many times a model was loaded (tests check warmth)

    # -- model --------------------------------------------------------------------------
    def _ensure_model(self, path: str):
        key = _model_key(path, self.device)
        if self._predictor is not None and key == self._key:
            return self._predictor
        self._release()
        self.modelLoading.emit(str(path))
        t0 = time.perf_counter()
        self._predictor = self._factory(str(path), self.device)
        self._key = key
        self.loads += 1
        self.modelLoaded.emit(str(path), time.perf_counter() - t0)
        return self._predictor

    def _release(self) -> None:
        if self._predictor is None:
            return
        self._predictor = None
        self._key = None
        torch = sys.modules.get("torch")
        if torch is not None:
            try:
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            except Exception:  # pragma: no cover - best effort
                pass

    @QtCore.pyqtSlot(object)
    def warm(self, model_path) -> None:
        """Load a model ahead of the next job (errors are reported when a job needs it)."""
        if not model_path:
            self._release()
            return
        try:
            self._ensure_model(str(model_path))
        except Exception:
            self._release()

    @QtCore.pyqtSlot()
    def release(self) -> None:
        self._release()

    # -- jobs ---------------------------------------------------------------------------
    @QtCore.pyqtSlot(object)
    def run(self, job: SegmentJob) -> None:
        total = len(job.item_ids)
        summary = {"items": total, "done": 0, "failed": 0, "cancelled": False, "seconds": 0.0,
                   "instances": 0, "mode": job.mode, "model": job.model_path, "run": job.run_id}
        t_start = time.perf_counter()
        if job.cancel.cancelled:
            summary["cancelled"] = True
            self.jobFinished.emit(job.job_id, summary)
            return
        self.jobStarted.emit(job.job_id, total)
        predictor = None
        if job.mode == "model":
            try:
                predictor = self._ensure_model(job.model_path)
            except MaskLoopError as e:
                self._release()
                self.failed.emit(job.job_id, f"cannot load the model: {e.one_line()}")
                return
            except Exception as e:  # torch errors, missing engine module
                self._release()
                self.failed.emit(job.job_id, f"cannot load the model {job.model_path}: "
                                             f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
                return
            names = list(getattr(predictor, "label_names", None) or [])
            labels = getattr(job.project, "labels", None)
            missing = [n for n in names if labels is not None and n not in labels]
            if missing:
                self.failed.emit(job.job_id, f"the model predicts label(s) this project does not have: "
                                             f"{', '.join(missing)}; add them (Labels panel) or choose "
                                             f"another model")
                return
        elif job.mode != "classic":
            self.failed.emit(job.job_id, f"unknown segment mode {job.mode!r}")
            return
        self.progress.emit(job.job_id, 0, total, -1.0, "starting")
        per_item: list[float] = []
        for k, item_id in enumerate(job.item_ids):
            if job.cancel.cancelled:
                summary["cancelled"] = True
                break
            t0 = time.perf_counter()
            try:
                image = job.project.load_image(item_id)
                if job.mode == "model":
                    insts = predictor.predict(image, score_threshold=job.score_threshold,
                                              tile=job.tile, cancel=job.cancel)
                    for inst in insts:  # credit the run the GUI knows the model by
                        if job.run_id and not inst.model:
                            inst.model = job.run_id
                else:
                    from engine.classic_proposals import propose
                    insts = propose(image, label=job.label, cancel=job.cancel, **job.classic)
            except CancelledError:
                summary["cancelled"] = True
                break
            except MaskLoopError as e:
                summary["failed"] += 1
                self.itemFailed.emit(job.job_id, item_id, e.one_line())
                continue
            except MemoryError:
                summary["failed"] += 1
                self.itemFailed.emit(job.job_id, item_id, "out of memory (try a smaller tile size)")
                continue
            except Exception as e:
                msg = str(e).splitlines()[0] if str(e) else ""
                if "out of memory" in msg.lower():
                    self._release()
                    self.failed.emit(job.job_id, f"{item_id}: out of memory on {self.device} "
                                                 f"(try a smaller tile size or the CPU)")
                    return
                summary["failed"] += 1
                self.itemFailed.emit(job.job_id, item_id, f"{type(e).__name__}: {msg}")
                continue
            dt = time.perf_counter() - t0
            per_item.append(dt)
            summary["done"] += 1
            summary["instances"] += len(insts)
            self.itemDone.emit(job.job_id, item_id, list(insts), dt)
            recent = per_item[-5:]
            eta = (sum(recent) / len(recent)) * (total - k - 1)
            self.progress.emit(job.job_id, k + 1, total, eta, item_id)
        summary["seconds"] = time.perf_counter() - t_start
        self.jobFinished.emit(job.job_id, summary)


class SegmentService(QtCore.QObject):
    """The GUI-side handle of the inference thread.

    segment(...) queues a job and returns its id; signals (re-emitted from the worker)
    arrive in the GUI thread. set_model(path) warms the new model in the background.
    """

    jobStarted = QtCore.pyqtSignal(int, int)
    modelLoading = QtCore.pyqtSignal(str)
    modelLoaded = QtCore.pyqtSignal(str, float)
    itemDone = QtCore.pyqtSignal(int, str, object, float)
    itemFailed = QtCore.pyqtSignal(int, str, str)
    progress = QtCore.pyqtSignal(int, int, int, float, str)
    jobFinished = QtCore.pyqtSignal(int, dict)
    failed = QtCore.pyqtSignal(int, str)
    busyChanged = QtCore.pyqtSignal(bool)

    _runRequested = QtCore.pyqtSignal(object)
    _warmRequested = QtCore.pyqtSignal(object)
    _releaseRequested = QtCore.pyqtSignal()

    def __init__(self, parent=None, predictor_factory: Callable = default_predictor_factory,
                 device: str = "auto") -> None:
        super().__init__(parent)
        self._thread = QtCore.QThread()
        self._thread.setObjectName("maskloop-predictor")
        self.worker = PredictorWorker(predictor_factory, device)
        self.worker.moveToThread(self._thread)
        self._runRequested.connect(self.worker.run)
        self._warmRequested.connect(self.worker.warm)
        self._releaseRequested.connect(self.worker.release)
        for name in ("jobStarted", "modelLoading", "modelLoaded", "itemDone", "itemFailed",
                     "progress", "failed"):
            getattr(self.worker, name).connect(getattr(self, name))
        self.worker.jobFinished.connect(self._on_finished)
        self.worker.failed.connect(self._on_failed)
        self._thread.start()
        self._next_id = 1
        self._pending: dict[int, SegmentJob] = {}
        self.model_path: Optional[str] = None

    def set_predictor_factory(self, factory: Callable) -> None:
        """Use another predictor factory from the next model load on (tests, benchmarks)."""
        self.worker._factory = factory
        self.worker._key = None

    # -- state --------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return bool(self._pending)

    def pending_items(self) -> set:
        out = set()
        for job in self._pending.values():
            out.update(job.item_ids)
        return out

    # -- requests -----------------------------------------------------------------------
    def set_model(self, model_path: Optional[str], warm: bool = True) -> None:
        """The model later jobs use by default; warmed now in the background."""
        self.model_path = str(model_path) if model_path else None
        if warm:
            self._warmRequested.emit(self.model_path)

    def segment(self, project, item_ids, *, model_path: Optional[str] = None, run_id: Optional[str] = None,
                score_threshold: float = 0.05, tile: Optional[int] = None) -> int:
        path = model_path or self.model_path
        if not path:
            raise MaskLoopError("no model is trained yet: use 'Auto-segment without a model' or train one")
        return self._submit(SegmentJob(project, list(item_ids), "model", str(path), run_id,
                                       float(score_threshold), tile))

    def propose(self, project, item_ids, *, label: str, **classic) -> int:
        return self._submit(SegmentJob(project, list(item_ids), "classic", label=label, classic=classic))

    def _submit(self, job: SegmentJob) -> int:
        job.job_id = self._next_id
        self._next_id += 1
        was_busy = self.busy
        self._pending[job.job_id] = job
        self._runRequested.emit(job)
        if not was_busy:
            self.busyChanged.emit(True)
        return job.job_id

    def cancel(self, job_id: Optional[int] = None) -> None:
        """Cancel one job, or every queued and running job."""
        for jid, job in list(self._pending.items()):
            if job_id is None or jid == job_id:
                job.cancel.cancel()

    def _on_finished(self, job_id: int, summary: dict) -> None:
        self._pending.pop(job_id, None)
        self.jobFinished.emit(job_id, summary)
        if not self._pending:
            self.busyChanged.emit(False)

    def _on_failed(self, job_id: int, message: str) -> None:
        self._pending.pop(job_id, None)
        if not self._pending:
            self.busyChanged.emit(False)

    def shutdown(self, timeout_ms: int = 10000) -> None:
        """Cancel everything, drop the model and stop the thread (call before quitting)."""
        if not self._thread.isRunning():
            return
        self.cancel()
        self._releaseRequested.emit()
        self._thread.quit()
        self._thread.wait(timeout_ms)


# --------------------------------------------------------------------------------------
# training in a child process
# --------------------------------------------------------------------------------------

OOM_MARKERS = ("out of memory", "outofmemoryerror", "cannot allocate memory", "memoryerror",
               "std::bad_alloc", "defaultcpuallocator: can't allocate memory")


def train_command(project_root, *, arch: Optional[str] = None, base: Optional[str] = None,
                  epochs: Optional[int] = None, device: Optional[str] = None,
                  extra: Optional[list] = None) -> list[str]:
    """[python, ..., "train", PROJECT, ..., "--progress", "jsonl"] for this installation.

    From a source checkout, main.py sits beside the engine package and is run by path;
    from an installed package (main is a py-module there too) the same holds in
    site-packages; otherwise the CLI is reached through `-c` and engine.cli.
    """
    args = ["train", str(project_root)]
    if arch:
        args += ["--arch", str(arch)]
    if base:
        args += ["--base", str(base)]
    if epochs:
        args += ["--epochs", str(int(epochs))]
    if device:
        args += ["--device", str(device)]
    args += list(extra or [])
    args += ["--progress", "jsonl"]
    return [sys.executable, "-u"] + entry_args() + args


def entry_args() -> list[str]:
    import engine
    root = Path(engine.__file__).resolve().parent.parent
    main_py = root / "main.py"
    if main_py.is_file():
        return [str(main_py)]
    return ["-c", "import sys; from engine.cli import run; sys.exit(run(sys.argv[1:]))"]


def describe_exit(exit_code: int, crashed: bool, stderr_tail: str, error_event: Optional[dict],
                  cancelled: bool) -> tuple[str, str]:
    """(kind, message) for a training process that ended without a `done` event.

    kind: "cancelled" | "oom" | "data" | "internal" | "crash" | "killed" | "exit".
    """
    tail = stderr_tail.strip()
    last = tail.splitlines()[-1].strip() if tail else ""
    low = tail.lower()
    if cancelled:
        hint = next((ln.strip() for ln in reversed(tail.splitlines()) if "--resume" in ln), "")
        return "cancelled", "training was cancelled; the project is unchanged" + (
            f" ({hint.split(': ', 1)[-1]})" if hint else "")
    if error_event:
        kind = str(error_event.get("kind") or "internal")
        msg = str(error_event.get("message") or last or "unknown error")
        if kind == "oom":
            return "oom", (f"training ran out of memory: {msg}. Try fewer or smaller images per "
                           f"batch, a lighter architecture (r18fpn) or the CPU")
        if kind == "cancelled":
            return "cancelled", "training was cancelled; the project is unchanged"
        if kind == "data":
            return "data", f"training could not use the data: {msg}"
        return kind, f"training failed: {msg}"
    if any(m in low for m in OOM_MARKERS):
        return "oom", (f"training ran out of memory ({last or 'out of memory'}). Try a lighter "
                       f"architecture (r18fpn), fewer epochs' worth of data in memory, or the CPU")
    if crashed:
        sig = ""
        if sys.platform != "win32" and exit_code in (signal.SIGKILL, 9):
            sig = " (SIGKILL: killed by the system, often for lack of memory, or by the user)"
        return "killed" if sig else "crash", (
            f"the training process crashed{sig}" + (f": {last}" if last else "")
            + "; the project is unchanged")
    if sys.platform != "win32" and exit_code in (128 + 9, 137):
        return "killed", "the training process was killed (SIGKILL, often out of memory); the project is unchanged"
    return "exit", (f"the training process stopped with exit status {exit_code}"
                    + (f": {last}" if last else "") + "; the project is unchanged")


class TrainingRunner(QtCore.QObject):
    """`main.py train ... --progress jsonl` in a QProcess, its JSON lines as signals.

    Signals carry the parsed events of DESIGN.md section 5. `finished(ok, kind, message)`
    comes exactly once per start: ok=True after a `done` event and exit status 0.
    """

    started = QtCore.pyqtSignal(dict)         # the "start" event
    iteration = QtCore.pyqtSignal(dict)       # "iter"
    epochEnded = QtCore.pyqtSignal(dict)      # "epoch"
    done = QtCore.pyqtSignal(dict)            # "done"
    errorEvent = QtCore.pyqtSignal(dict)      # "error" as reported by the child
    anyEvent = QtCore.pyqtSignal(dict)        # every event, including unknown kinds
    logLine = QtCore.pyqtSignal(str)          # a non-JSON stdout line or stderr line
    finished = QtCore.pyqtSignal(bool, str, str)   # ok, kind, message
    runningChanged = QtCore.pyqtSignal(bool)

    # After SIGTERM the child finishes its step and writes a resumable checkpoint (model and
    # optimizer state: ~1.3 GB for x101fpn) before it exits; killing it during that write
    # loses the partial epoch, so it gets a minute. A second cancel() kills at once.
    KILL_AFTER_MS = 60000

    def __init__(self, parent=None, command_factory: Callable = train_command) -> None:
        super().__init__(parent)
        self._command_factory = command_factory
        self.proc: Optional[QtCore.QProcess] = None
        self._buf = b""
        self._err_tail: deque = deque(maxlen=40)
        self._err_buf = b""
        self._done_event: Optional[dict] = None
        self._error_event: Optional[dict] = None
        self._cancelled = False
        self._reported = False
        self.start_event: Optional[dict] = None
        self.events: list[dict] = []
        self.started_at = 0.0
        self._kill_timer = QtCore.QTimer(self)
        self._kill_timer.setSingleShot(True)
        self._kill_timer.timeout.connect(self._kill)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.state() != QtCore.QProcess.NotRunning

    def pid(self) -> int:
        return int(self.proc.processId()) if self.proc is not None else 0

    def start(self, project_root, *, arch=None, base=None, epochs=None, device=None,
              extra=None, command: Optional[list] = None, cwd=None) -> None:
        if self.running:
            raise MaskLoopError("a training run is already in progress")
        cmd = command or self._command_factory(project_root, arch=arch, base=base, epochs=epochs,
                                               device=device, extra=extra)
        self._buf = b""
        self._err_buf = b""
        self._err_tail.clear()
        self._done_event = None
        self._error_event = None
        self._cancelled = False
        self._reported = False
        self.start_event = None
        self.events = []
        self.command = list(cmd)
        proc = QtCore.QProcess(self)
        env = QtCore.QProcessEnvironment.systemEnvironment()
        env.insert("PYTHONUNBUFFERED", "1")
        env.insert("PYTHONIOENCODING", "utf-8")
        proc.setProcessEnvironment(env)
        proc.setWorkingDirectory(str(cwd or project_root))
        proc.readyReadStandardOutput.connect(self._read_stdout)
        proc.readyReadStandardError.connect(self._read_stderr)
        proc.finished.connect(self._on_finished)
        proc.errorOccurred.connect(self._on_error)
        self.proc = proc
        self.started_at = time.monotonic()
        proc.start(cmd[0], cmd[1:])
        self.runningChanged.emit(True)

    @property
    def cancelling(self) -> bool:
        return self.running and self._cancelled

    def cancel(self) -> None:
        """Ask the child to stop (SIGTERM: it saves and reports `cancelled`); kill it if
        it has not ended after KILL_AFTER_MS, or at once when asked a second time."""
        if not self.running:
            return
        if self._cancelled:
            self._kill()
            return
        self._cancelled = True
        self.proc.terminate()
        self._kill_timer.start(self.KILL_AFTER_MS)

    def _kill(self) -> None:
        if self.running:
            self.proc.kill()

    def wait(self, msecs: int = 30000) -> bool:
        return self.proc.waitForFinished(msecs) if self.proc is not None else True

    # -- output -------------------------------------------------------------------------
    def _read_stdout(self) -> None:
        self._buf += bytes(self.proc.readAllStandardOutput())
        while b"\n" in self._buf:
            line, self._buf = self._buf.split(b"\n", 1)
            self._handle_line(line.decode("utf-8", "replace").strip())

    def _read_stderr(self) -> None:
        self._err_buf += bytes(self.proc.readAllStandardError())
        while b"\n" in self._err_buf:
            line, self._err_buf = self._err_buf.split(b"\n", 1)
            text = line.decode("utf-8", "replace").rstrip()
            if text.strip():
                self._err_tail.append(text)
                self.logLine.emit(text)

    def _handle_line(self, line: str) -> None:
        if not line:
            return
        ev = None
        if line.startswith("{"):
            try:
                ev = json.loads(line)
            except ValueError:
                ev = None
        if not isinstance(ev, dict) or "event" not in ev:
            self.logLine.emit(line)
            return
        self.events.append(ev)
        kind = ev.get("event")
        self.anyEvent.emit(ev)
        if kind == "start":
            self.start_event = ev
            self.started.emit(ev)
        elif kind == "iter":
            self.iteration.emit(ev)
        elif kind == "epoch":
            self.epochEnded.emit(ev)
        elif kind == "done":
            self._done_event = ev
            self.done.emit(ev)
        elif kind == "error":
            self._error_event = ev
            self.errorEvent.emit(ev)

    def _on_error(self, err) -> None:
        if err == QtCore.QProcess.FailedToStart:
            self._report(False, "exit", f"cannot start the training process ({self.proc.errorString()}): "
                                        f"{' '.join(self.command[:3])}")
            self.runningChanged.emit(False)

    def _on_finished(self, exit_code: int, exit_status) -> None:
        self._kill_timer.stop()
        self._read_stdout()
        self._read_stderr()
        if self._buf.strip():
            self._handle_line(self._buf.decode("utf-8", "replace").strip())
            self._buf = b""
        if self._err_buf.strip():
            self._err_tail.append(self._err_buf.decode("utf-8", "replace").rstrip())
            self._err_buf = b""
        crashed = exit_status == QtCore.QProcess.CrashExit
        if self._done_event is not None and exit_code == 0 and not crashed:
            self._report(True, "done", f"training finished: {self._done_event.get('run', '')}")
        else:
            cancelled = self._cancelled or (self._error_event or {}).get("kind") == "cancelled"
            kind, msg = describe_exit(exit_code, crashed, "\n".join(self._err_tail),
                                      self._error_event, cancelled)
            self._report(False, kind, msg)
        self.runningChanged.emit(False)

    def _report(self, ok: bool, kind: str, message: str) -> None:
        if self._reported:
            return
        self._reported = True
        self.finished.emit(ok, kind, message)

    def stderr_tail(self) -> str:
        return "\n".join(self._err_tail)
