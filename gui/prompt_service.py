"""Prompts off the GUI thread: the prompt worker and its GUI-side handle (DESIGN.md section 7).

- `PromptService` follows the item on screen and the project's active model (the one
  Auto-segment uses). When an item is shown and a model is active, its worker computes
  the item's feature cache (engine.model.prompts.PromptEngine.prepare) in the background;
  a box or click prompt then costs only the model's heads. Without a model (or when it
  cannot be loaded) the same requests are answered by the cold-start rules
  (engine.prompt_classic: GrabCut in a box, the wand for a click). Every answer says which
  rule made it.
- One Background thread (gui.background) of its own, so a long Auto-segment job never
  queues a prompt behind it; its Predictor is loaded there and kept warm (reloaded when
  the active model or its file changes). Prompt work runs with ONE torch thread on the
  CPU: the heads are a few dozen small ops, and with two threads on a shared 2-core
  machine each op waits at a barrier (about 900 ms a prompt instead of about 90 ms,
  docs/benchmarks.md).
- Answers come back as `answered(PromptResult)` on the GUI thread. Stale ones are dropped
  here: a request made for another item, model or project (a generation counter), a hover
  preview that a newer preview replaced, and a prompt the user cancelled (Esc) while it
  waited for its answer. Hover previews are throttled by keeping at most one in the worker
  and one waiting (the newest), so moving the mouse never queues work behind a click.
- Propagation through a stack (engine.stack_edits.propagate_changes) runs in the same
  worker: with a model, each slice's answer is the model's box prompt, so every slice's
  features are computed here with the warm model (never on the GUI thread); without one,
  GrabCut answers. `PropagationResult` says which did.

No model, format or editing rule lives here: the worker calls the engine, the canvas tool
(gui.canvas.tools.box_prompt) turns answers into controller edits.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from PyQt5 import QtCore

from engine.errors import CancelledError, MaskLoopError
from engine.prompt_classic import grabcut_box, wand_click

from .background import Background


def default_predictor_factory(model_path: str, device: str = "auto"):
    """The engine's Predictor (torch is imported here, in the worker thread)."""
    from engine.model.predict import Predictor
    return Predictor(model_path, device=device)


def model_key(path: Optional[str]) -> Optional[tuple]:
    """Identity of a model file: a retrained run (same path, new file) is another model."""
    if not path:
        return None
    try:
        st = Path(path).stat()
        return (str(Path(path).resolve()), st.st_mtime_ns, st.st_size)
    except OSError:
        return (str(path), None, None)


@dataclass
class PromptRequest:
    kind: str                              # "box" | "click"
    item_id: str
    image: Any                             # raw pixels of the item (model, wand)
    display: Any = None                    # 8-bit display image (GrabCut)
    box: Optional[tuple] = None            # (x0, y0, x1, y1) image pixels
    point: Optional[tuple] = None          # (x, y) pixel
    label: Optional[str] = None
    tolerance: Optional[float] = None      # wand tolerance in raw units (click without a model)
    mode: str = "new"                      # what the tool does with the answer: new | add | subtract
    preview: bool = False
    model_path: Optional[str] = None
    generation: int = 0
    seq: int = 0


@dataclass
class PromptResult:
    request: PromptRequest
    answer: Any = None                     # engine.prompt_classic.PromptAnswer or None
    rule: str = ""                         # "model" | "GrabCut" | "wand"
    error: str = ""                        # why nothing was answered (for the status bar)
    note: str = ""                         # e.g. why the model was not used
    seconds: float = 0.0                   # the engine call alone (benchmarks)
    run: Optional[str] = None              # the model's run id when it answered
    extra: dict = field(default_factory=dict)


@dataclass
class PropagationResult:
    changes: dict                          # {item id: [Change]} for one stack step (engine.stack_edits)
    rule: str                              # "model" | "GrabCut"
    run: Optional[str] = None              # the model's run id when it answered
    note: str = ""                         # why the model was not used

    def describe(self) -> str:
        """Which rule answered, for the status bar."""
        if self.rule == "model":
            return "the model" + (f" (run {self.run})" if self.run else "")
        return f"{self.rule} ({self.note or 'no model'})"


def _model_answer_for(eng, project, label: Optional[str]) -> Callable:
    """answer_for(ids) of engine.stack_edits.propagate_changes: the model's box prompt on
    slice k (its raw pixels, its item id as the feature cache's key)."""
    from engine.model.prompts import model_answerer

    def answer_for(ids: list[str]):
        return model_answerer(eng, lambda k: project.load_image(ids[k]), key_of=lambda k: ids[k], label=label)
    return answer_for


class PromptWorker:
    """Used only on the PromptService's thread."""

    def __init__(self, predictor_factory: Callable = default_predictor_factory, device: str = "auto") -> None:
        self._factory = predictor_factory
        self.device = device
        self._engine = None
        self._key: Optional[tuple] = None
        self.loads = 0          # models loaded (tests)
        self.prepared = 0       # feature caches computed (tests)

    # -- model ----------------------------------------------------------------------------
    def _engine_for(self, path: Optional[str]):
        key = model_key(path)
        if key is None:
            self.release()
            return None
        if self._engine is not None and key == self._key:
            return self._engine
        self.release()
        from engine.model.prompts import PromptEngine
        predictor = self._factory(str(path), self.device)
        self._engine, self._key = PromptEngine(predictor), key
        self.loads += 1
        return self._engine

    def release(self) -> None:
        """Drop the model and its cached features."""
        if self._engine is not None:
            self._engine.cache.clear()
        self._engine, self._key = None, None

    @contextlib.contextmanager
    def _one_thread(self):
        """One torch thread for this worker's work on the CPU, restored afterwards (torch's
        setting is shared by threads that start meanwhile, so it is held only while working)."""
        torch = sys.modules.get("torch")
        eng = self._engine
        on_cpu = eng is not None and str(getattr(eng.predictor, "device", "cpu")).startswith("cpu")
        if torch is None or not on_cpu:
            yield
            return
        n = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(n)

    # -- jobs ---------------------------------------------------------------------------------
    def prepare(self, item_id: str, image, model_path: Optional[str], wanted: Callable[[], bool]) -> float:
        """Cache the item's features (skipped when the GUI has moved on); seconds spent."""
        if not wanted():
            return -1.0
        eng = self._engine_for(model_path)
        if eng is None or not wanted():
            return -1.0
        t0 = time.perf_counter()
        with self._one_thread():
            eng.prepare(item_id, image)
        self.prepared += 1
        return time.perf_counter() - t0

    def _try_engine(self, path: Optional[str]):
        """(engine or None, note): a model that cannot be loaded leaves the cold-start rule."""
        if not path:
            return None, ""
        try:
            return self._engine_for(path), ""
        except Exception as e:   # a broken checkpoint: the cold-start rule still answers
            msg = e.one_line() if isinstance(e, MaskLoopError) else f"{type(e).__name__}: {e}"
            self.release()
            return None, f"the model could not be loaded ({msg})"

    def propagate(self, project, item_id: str, start, direction: int, model_path: Optional[str], *,
                  window=None, max_slices: Optional[int] = None, progress=None, cancel=None
                  ) -> PropagationResult:
        """engine.stack_edits.propagate_changes answered by the model's box prompt on each
        slice (its features computed here, one slice after another; the cache then holds the
        last one, so the caller asks for the shown item's features again) or by GrabCut."""
        from engine.stack_edits import propagate_changes
        eng, note = self._try_engine(model_path)
        answer_for = None if eng is None else _model_answer_for(eng, project, start.label)
        with self._one_thread():
            changes = propagate_changes(project, item_id, start, direction, window=window, answer_for=answer_for,
                                        max_slices=max_slices, progress=progress, cancel=cancel)
        if eng is None:
            return PropagationResult(changes, "GrabCut", note=note)
        return PropagationResult(changes, "model", run=getattr(eng.predictor, "run", None))

    def answer(self, req: PromptRequest, wanted: Callable[[], bool]) -> Optional[PromptResult]:
        if not wanted():
            return None            # a newer preview replaced it, or the item changed
        res = PromptResult(req)
        eng, res.note = self._try_engine(req.model_path)
        t0 = time.perf_counter()
        try:
            if eng is not None:
                with self._one_thread():
                    if req.kind == "box":
                        res.answer = eng.box(req.item_id, req.image, req.box, label=req.label)
                    else:
                        res.answer = eng.click(req.item_id, req.image, req.point, label=req.label)
                res.rule, res.run = "model", getattr(eng.predictor, "run", None)
            elif req.kind == "box":
                res.rule = "GrabCut"
                res.answer = grabcut_box(req.display, req.box, label=req.label or "")
            else:
                res.rule = "wand"
                res.answer = wand_click(req.image, req.point, tolerance=req.tolerance, label=req.label or "")
        except MaskLoopError as e:
            res.error = e.one_line()
        res.seconds = time.perf_counter() - t0
        return res


class PromptService(QtCore.QObject):
    """The GUI-side handle: `ask(...)` queues a prompt; `answered` brings it back."""

    answered = QtCore.pyqtSignal(object)           # PromptResult (current, not stale)
    prepared = QtCore.pyqtSignal(str, float)       # item id, seconds: its features are cached
    failed = QtCore.pyqtSignal(str)                # a worker error, one line

    def __init__(self, controller, parent: Optional[QtCore.QObject] = None,
                 predictor_factory: Callable = default_predictor_factory, device: str = "auto") -> None:
        super().__init__(parent)
        self.controller = controller
        self.worker = PromptWorker(predictor_factory, device)
        self._background = Background("prompts")
        self._generation = 0
        self._seq = 0
        self._preview_busy = False
        self._preview_next: Optional[PromptRequest] = None
        self._latest_preview = 0
        self.pending = 0                 # non-preview requests in the worker
        self._waiting: set[int] = set()  # ... of those, the ones whose answer is still wanted
        self._cancelled_to = 0           # prompts up to this seq were cancelled (Esc)
        self.dropped = 0                 # answers dropped because they came after Esc (tests)
        self._model: Optional[tuple] = None      # identity of the model the features were asked for
        self.enabled = True              # False: never load a model (cold-start rules only)
        c = controller
        c.currentItemChanged.connect(self._on_item)
        c.projectClosed.connect(self._on_closed)
        c.projectOpened.connect(lambda _p: self._bump())

    # -- state --------------------------------------------------------------------------------
    def model_path(self) -> Optional[str]:
        """The active model's checkpoint (the one Auto-segment uses), None without one."""
        p = self.controller.project
        if not self.enabled or p is None or not p.active_model:
            return None
        try:
            return str(p.resolve_model(p.active_model))
        except MaskLoopError:
            return None

    @property
    def busy(self) -> bool:
        """A prompt is in the worker (perhaps one the user cancelled)."""
        return self.pending > 0

    @property
    def waiting(self) -> bool:
        """A prompt waits for an answer the user still wants (the busy cursor shows)."""
        return bool(self._waiting)

    def _bump(self) -> None:
        self._generation += 1
        self._preview_next = None

    def _current(self, generation: int) -> bool:
        return generation == self._generation

    def is_current(self, req: PromptRequest) -> bool:
        """The request was made for the item and model still on screen."""
        return self._current(req.generation) and req.item_id == self.controller.item_id

    # -- features -----------------------------------------------------------------------------
    def _on_item(self, item_id: str) -> None:
        self._bump()
        self.refresh()

    def _on_closed(self) -> None:
        self._bump()
        self._background.submit(self.worker.release)

    def refresh(self) -> None:
        """Cache the features of the item on screen for the active model (call it when the
        active model changes; item changes call it themselves)."""
        c = self.controller
        path = self.model_path()
        if model_key(path) != self._model:       # another active model: answers in flight are stale
            self._model = model_key(path)
            self._bump()
        if c.image is None or c.item_id is None:
            return
        if path is None:
            self._background.submit(self.worker.release)
            return
        gen, item_id = self._generation, c.item_id
        self._background.submit(self.worker.prepare, item_id, c.image, path, lambda: self._current(gen),
                                on_done=lambda secs: self._prepared(gen, item_id, secs),
                                on_error=self._on_error)

    def _prepared(self, gen: int, item_id: str, seconds: float) -> None:
        if seconds >= 0 and self._current(gen):
            self.prepared.emit(item_id, seconds)

    def _on_error(self, exc: BaseException) -> None:
        msg = exc.one_line() if isinstance(exc, MaskLoopError) else f"{type(exc).__name__}: {exc}"
        self.failed.emit(f"prompt: {msg}")

    # -- prompts ------------------------------------------------------------------------------
    def ask(self, kind: str, *, box=None, point=None, mode: str = "new", preview: bool = False,
            tolerance: Optional[float] = None) -> Optional[PromptRequest]:
        """Queue a box or click prompt on the item on screen; None when there is none."""
        c = self.controller
        if c.image is None or c.item_id is None:
            return None
        self._seq += 1
        path = self.model_path()
        display = c.display_image() if kind == "box" else None   # GrabCut's input, also when the model fails
        req = PromptRequest(kind, c.item_id, c.image, display=display,
                            box=box, point=point, label=c.ensure_label(), tolerance=tolerance, mode=mode,
                            preview=preview, model_path=path, generation=self._generation, seq=self._seq)
        if preview:
            self._latest_preview = req.seq
            if self._preview_busy:
                self._preview_next = req        # the newest waits; older ones are forgotten
                return req
            self._preview_busy = True
        else:
            self.pending += 1
            self._waiting.add(req.seq)
        self._submit(req)
        return req

    def cancel_waiting(self) -> int:
        """Esc: the prompts waiting for their answer are cancelled; one not yet started is
        skipped, a late answer is dropped. Returns how many were waiting."""
        n = len(self._waiting)
        self._waiting.clear()
        self._cancelled_to = self._seq
        return n

    def _cancelled(self, req: PromptRequest) -> bool:
        return not req.preview and req.seq <= self._cancelled_to

    def cancel_previews(self) -> None:
        self._latest_preview = self._seq + 1   # whatever is in flight is stale now
        self._preview_next = None

    def _submit(self, req: PromptRequest) -> None:
        def wanted() -> bool:   # read from the worker: a stale view only costs one computed answer
            return (self._current(req.generation) and not self._cancelled(req)
                    and (not req.preview or req.seq == self._latest_preview))
        self._background.submit(self.worker.answer, req, wanted,
                                on_done=lambda res: self._done(req, res),
                                on_error=lambda e: self._failed(req, e))

    def _finished(self, req: PromptRequest) -> None:
        if req.preview:
            self._preview_busy = False
            nxt, self._preview_next = self._preview_next, None
            if nxt is not None and self._current(nxt.generation):
                self._preview_busy = True
                self._submit(nxt)
        else:
            self.pending = max(0, self.pending - 1)
            self._waiting.discard(req.seq)

    def _done(self, req: PromptRequest, res: Optional[PromptResult]) -> None:
        self._finished(req)
        if self._cancelled(req):
            self.dropped += 1
            return
        if res is None or not self._current(req.generation) or req.item_id != self.controller.item_id:
            return
        if req.preview and req.seq != self._latest_preview:
            return
        self.answered.emit(res)

    def _failed(self, req: PromptRequest, exc: BaseException) -> None:
        self._finished(req)
        res = PromptResult(req, error=f"{type(exc).__name__}: {exc}")
        if self._current(req.generation) and not self._cancelled(req):
            self.answered.emit(res)

    # -- propagation ----------------------------------------------------------------------------
    def propagate(self, item_id: str, start, direction: int, *, window=None, max_slices: Optional[int] = None,
                  progress=None, cancel=None, on_done=None, on_error=None):
        """Queue a propagation from `start` on slice `item_id` in the worker (the active
        model answers, else GrabCut on the display through `window`); on_done(PropagationResult)
        or on_error(exception) runs on the GUI thread. The caller saved the slice first (the
        engine reads the stack from disk)."""
        return self._background.submit(self.worker.propagate, self.controller.project, item_id, start, direction,
                                       self.model_path(), window=window, max_slices=max_slices,
                                       progress=progress, cancel=cancel, on_done=on_done, on_error=on_error)

    def propagation_job(self, item_id: str, start, direction: int, *, window=None) -> Callable:
        """job(project, progress=, cancel=) -> PropagationResult, for a task already off the
        GUI thread (StackEdits.compute's progress dialog): it runs the propagation in this
        worker and waits for it. The active model is read now, on the GUI thread; a worker
        shut down meanwhile reads as cancelled."""
        path = self.model_path()

        def job(project, *, progress=None, cancel=None) -> PropagationResult:
            fut = self._background.submit(self.worker.propagate, project, item_id, start, direction, path,
                                          window=window, progress=progress, cancel=cancel)
            try:
                return fut.result()
            except concurrent.futures.CancelledError:
                raise CancelledError("the prompt worker stopped") from None
        return job

    def shutdown(self) -> None:
        """Stop the worker (queued prompts are dropped); call it on the GUI thread."""
        self._bump()
        self._background.submit(self.worker.release)
        self._background.shutdown(wait=False)


def install(window) -> PromptService:
    """The window's prompt service (`window.prompts`), given to the canvas's prompt tool;
    it follows the active model the loop's Models panel sets."""
    svc = PromptService(window.controller, window)
    window.prompts = svc
    window.canvas.tools["box_prompt"].attach(svc)
    svc.failed.connect(lambda m: window.show_message(m, 8000))
    loop = getattr(window, "loop", None)
    if loop is not None:
        loop.models_panel.activeModelChanged.connect(lambda *_: svc.refresh())
    app = QtCore.QCoreApplication.instance()
    if app is not None:
        app.aboutToQuit.connect(svc.shutdown)
    window.destroyed.connect(lambda *_: svc.shutdown())
    return svc
