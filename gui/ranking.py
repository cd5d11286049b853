"""'Correct this next' in the main window (an extension: `install(window)`).

- Model › Rank by uncertainty: the active model scores every unreviewed item
  (engine.model.uncertainty.rank_and_store: flip disagreement) on a background thread
  behind a progress dialog with Cancel; the scores are kept with the model
  (models/<run>/uncertainty.json, where `maskloop rank` keeps them too), so they come back
  when the project is reopened, and the items scored before a Cancel are kept.
- The image list's Doubt column shows them (sortable); after a ranking the list is sorted
  by it, most uncertain first.
- Item › Next most uncertain (Shift+U): the unreviewed item with the highest score; pressed
  again on that item, the next one down. Reviewed items are skipped.
- The Instances panel's Doubt column: each instance that is one of the model's detections
  gets that detection's doubt (engine.model.uncertainty.instance_doubts; no model run).

The scores shown are always those of the project's active model: another model made
active (Models panel, or a training run) shows its own scores, or none.
"""
from __future__ import annotations

from typing import Callable, Optional

from PyQt5 import QtCore

from engine.errors import CancelledError, MaskLoopError
from engine.model.uncertainty import (DEFAULT_MEASURE, Uncertainty, instance_doubts, load_scores,
                                      rank_and_store)


def default_predictor_factory(project, model_path: str):
    """The engine's Predictor, built on the ranking thread (torch is imported there)."""
    from engine.model.predictor import Predictor
    return Predictor(model_path, device="auto", expected_labels=project.labels)


class Ranking(QtCore.QObject):
    scoresChanged = QtCore.pyqtSignal()

    def __init__(self, window) -> None:
        super().__init__(window)
        self.window = window
        self.controller = c = window.controller
        self.measure = DEFAULT_MEASURE
        self.scores: dict[str, Uncertainty] = {}
        #: (project, model path) -> an object with predict_many (tests, benchmarks swap it)
        self.predictor_factory: Callable = default_predictor_factory
        A = window.add_action
        self.act_rank = A("model", "Rank by uncertainty", lambda: self.rank(), name="rank uncertainty",
                          icon="rank_uncertainty",
                          tip="Score every unreviewed item by how unsure the active model is about it "
                              "(its prediction against the prediction of the mirror image)")
        self.act_next = A("item", "Next most &uncertain item", self.next_most_uncertain,
                          name="next most uncertain", icon="next_uncertain",
                          tip="Go to the unreviewed item the model is least sure about (rank first)")
        self.act_next.setIconText("Most uncertain")
        if "model" in window.toolbars:
            window.add_to_toolbar("model", self.act_next, text_beside=True)
        window.images_panel.set_uncertainty({})
        window.instances_panel.doubt_provider = self.doubts_of
        c.projectOpened.connect(lambda _p: self.reload())
        c.projectClosed.connect(self.reload)
        c.statusChanged.connect(lambda *_: self._update_enabled())
        loop = getattr(window, "loop", None)
        if loop is not None:
            loop.models_panel.activeModelChanged.connect(lambda _run: self.reload())
        self.reload()

    # ------------------------------------------------------------------ state
    def model_path(self) -> Optional[str]:
        p = self.controller.project
        if p is None or not p.active_model:
            return None
        try:
            return str(p.resolve_model(None))
        except MaskLoopError:
            return None

    def reload(self) -> None:
        """The active model's stored scores into the views."""
        p, path = self.controller.project, self.model_path()
        self.scores = load_scores(p, path) if p is not None and path else {}
        self.window.images_panel.set_uncertainty({k: u.score(self.measure) for k, u in self.scores.items()})
        self.window.instances_panel.schedule_refresh()
        self._update_enabled()
        self.scoresChanged.emit()

    def _update_enabled(self) -> None:
        self.act_rank.setEnabled(self.model_path() is not None)
        self.act_next.setEnabled(self.controller.project is not None and bool(self.scores))

    def doubts_of(self, annotation) -> dict[str, float]:
        """{instance id: doubt} of an annotation's instances (the Instances panel asks)."""
        if annotation is None:
            return {}
        return instance_doubts(self.scores.get(annotation.item_id), annotation.instances)

    # ------------------------------------------------------------------ intents
    def rank(self, item_ids: Optional[list] = None) -> Optional[list]:
        """Score the unreviewed items (or `item_ids`) with the active model; None when it
        could not run or was cancelled (what was scored is kept either way)."""
        from .background import run_with_progress
        c, path = self.controller, self.model_path()
        if c.project is None or path is None:
            self.window.show_message("Rank by uncertainty needs an active model: train one first")
            return None
        c.flush()
        project, factory, measure = c.project, self.predictor_factory, self.measure

        def job(progress, cancel):
            predictor = factory(project, path)
            return rank_and_store(project, predictor, path, item_ids, by=measure,
                                  progress=progress, cancel=cancel)
        try:
            ranked = run_with_progress(self.window, "Ranking by uncertainty", job)
        except CancelledError:
            self.reload()
            self.window.show_message(f"Ranking cancelled; {len(self.scores)} scored items are kept")
            return None
        except Exception as e:   # noqa: BLE001 - a model that fails must not take the window down
            self.reload()
            text = e.one_line() if isinstance(e, MaskLoopError) else f"{type(e).__name__}: {e}"
            self.window.notify(f"Ranking stopped: {text}", error=True)
            return None
        self.reload()
        self.window.images_panel.sort_by_uncertainty()
        if ranked:
            top, score, _ = ranked[0]
            self.window.show_message(f"Ranked {len(ranked)} items; most uncertain: "
                                     f"{project.item(top).name} ({score:.2f})")
        else:
            self.window.show_message("No unreviewed items to rank")
        return ranked

    def order(self) -> list[str]:
        """Ranked unreviewed items, most uncertain first (ties: the project's order)."""
        c = self.controller
        pos = {it.id: k for k, it in enumerate(c.items)}
        ids = [i for i in self.scores if i in pos and c.status_of(i) != "reviewed"]
        return sorted(ids, key=lambda i: (-self.scores[i].score(self.measure), pos[i]))

    def next_most_uncertain(self) -> bool:
        c = self.controller
        order = self.order()
        if not order:
            self.window.show_message("No ranked unreviewed items: Model › Rank by uncertainty first"
                                     if not self.scores else "Every ranked item is reviewed")
            return False
        k = order.index(c.item_id) + 1 if c.item_id in order else 0
        target = order[k % len(order)]
        if target == c.item_id:
            self.window.show_message("This is the only ranked item not reviewed yet")
            return False
        return c.set_current_item(target)


def install(window) -> Ranking:
    existing = getattr(window, "ranking", None)
    if isinstance(existing, Ranking):
        return existing
    window.ranking = Ranking(window)
    return window.ranking
