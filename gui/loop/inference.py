"""Auto-segment off the GUI thread (DESIGN.md section 7).

- `SegmentService` owns one Background worker (gui.background) with a `PredictorWorker`
  used only there. The worker keeps
  an engine `Predictor` warm between jobs and reloads it only when the model file
  changes (another run made active, or the same run retrained). A job segments a list
  of items one by one and emits each item's instances as soon as they exist, with
  progress and an ETA; `cancel()` stops it between items (and inside an item where the
  predictor polls its CancelToken). The worker never writes annotations: results go to
  the GUI thread, where `gui.loop.review` applies them through the controller (so reviewed
  items and the item being edited are never overwritten behind the user's back).
  The same worker runs the model-free cold-start proposals (engine/classic_proposals).


No file-format or model logic lives here: the worker calls the engine, the runner the CLI.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from PyQt5 import QtCore

from engine.errors import CancelledError, MaskLoopError
from engine.jobs import CancelToken
from engine.results import check_labels

from ..background import Background


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


class _Signal:
    """`worker.name.emit(*args)` → report(name, *args) (delivered on the GUI thread)."""

    def __init__(self, report: Callable, name: str) -> None:
        self.report, self.name = report, name

    def emit(self, *args) -> None:
        self.report(self.name, *args)


class PredictorWorker:
    """Used only on the SegmentService's worker thread; what it reports goes to `report`
    (name, *args), which the service delivers as its signals on the GUI thread."""

    SIGNALS = ("jobStarted", "modelLoading", "modelLoaded", "itemDone", "itemFailed", "progress",
               "jobFinished", "failed")

    def __init__(self, report: Callable, predictor_factory: Callable = default_predictor_factory,
                 device: str = "auto") -> None:
        for name in self.SIGNALS:
            setattr(self, name, _Signal(report, name))
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

    def set_factory(self, factory: Callable) -> None:
        """Another predictor factory from the next model load on (tests, benchmarks)."""
        self._factory = factory
        self._key = None

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

    def warm(self, model_path) -> None:
        """Load a model ahead of the next job (errors are reported when a job needs it)."""
        if not model_path:
            self._release()
            return
        try:
            self._ensure_model(str(model_path))
        except Exception:
            self._release()

    def release(self) -> None:
        self._release()

    # -- jobs ---------------------------------------------------------------------------
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
            try:   # engine.results: the one label check (as `maskloop segment`)
                check_labels(predictor.label_names, job.project.labels, path=job.model_path)
            except MaskLoopError as e:
                self.failed.emit(job.job_id, f"{e.one_line()} (Labels panel, or another model)")
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
    """The GUI-side handle of the inference worker.

    segment(...) queues a job and returns its id; signals arrive in the GUI thread.
    set_model(path) warms the new model in the background.
    """

    jobStarted = QtCore.pyqtSignal(int, int)                 # job id, items
    modelLoading = QtCore.pyqtSignal(str)                    # model path
    modelLoaded = QtCore.pyqtSignal(str, float)              # model path, seconds
    itemDone = QtCore.pyqtSignal(int, str, object, float)    # job id, item id, list[Instance], seconds
    itemFailed = QtCore.pyqtSignal(int, str, str)            # job id, item id, message
    progress = QtCore.pyqtSignal(int, int, int, float, str)  # job id, done, total, eta_s (-1 unknown), message
    jobFinished = QtCore.pyqtSignal(int, dict)               # job id, summary
    failed = QtCore.pyqtSignal(int, str)                     # job id, message (the job stopped)
    busyChanged = QtCore.pyqtSignal(bool)

    def __init__(self, parent=None, predictor_factory: Callable = default_predictor_factory,
                 device: str = "auto") -> None:
        super().__init__(parent)
        self._background = Background("predictor")
        self.worker = PredictorWorker(self._report, predictor_factory, device)
        self._next_id = 1
        self._pending: dict[int, SegmentJob] = {}
        self.model_path: Optional[str] = None
        self._stopped = False

    def _report(self, name: str, *args) -> None:
        """From the worker thread: deliver as this service's signal on the GUI thread."""
        self._background.post(lambda: self._deliver(name, args))

    def _deliver(self, name: str, args: tuple) -> None:
        if name == "jobFinished":
            self._on_finished(*args)
        elif name == "failed":
            self.failed.emit(*args)
            self._on_failed(*args)
        else:
            getattr(self, name).emit(*args)

    def set_predictor_factory(self, factory: Callable) -> None:
        """Use another predictor factory from the next model load on (tests, benchmarks)."""
        self.worker.set_factory(factory)

    # -- state --------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return bool(self._pending)

    # -- requests -----------------------------------------------------------------------
    def set_model(self, model_path: Optional[str], warm: bool = True) -> None:
        """The model later jobs use by default; warmed now in the background."""
        self.model_path = str(model_path) if model_path else None
        if warm:
            self._background.submit(self.worker.warm, self.model_path)

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
        self._background.submit(self.worker.run, job, on_error=lambda e, jid=job.job_id: self._deliver(
            "failed", (jid, f"auto-segment stopped: {type(e).__name__}: {e}")))
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
        if self._stopped:
            return
        self._stopped = True
        self.cancel()
        self._background.shutdown(wait=True)   # the running job stops at its next cancel check
        self.worker.release()


