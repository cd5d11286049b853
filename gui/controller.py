"""The controller: the open Project, the item on screen, the selection and the labels.

Widgets never edit an annotation themselves: they call an intent here (paint a stroke,
add a polygon, merge the selection …; gui.edit_intents): engine.editing turns it into
changes, engine.history applies them as bbox-cropped patches, gui.undo records the step,
and the signals below tell the views what changed. Item switching and the per-item caches
are in gui.navigation, saving and changes on disk in gui.autosave, labels in
gui.label_intents: this class is the facade the panels, the canvas and the loop (gui.loop)
talk to.
"""
from __future__ import annotations

from typing import Iterable, Optional

import numpy as np
from PyQt5 import QtCore

from engine.annotations import Instance, ItemAnnotation
from engine.errors import MaskLoopError

from .autosave import Autosave
from .display import Display
from .edit_intents import EditIntents
from .label_intents import LabelIntents
from .navigation import Navigator
from .undo import UndoHistory

class Controller(QtCore.QObject, LabelIntents, EditIntents, Display):
    # project and items
    projectOpened = QtCore.pyqtSignal(object)       # Project
    projectClosed = QtCore.pyqtSignal()
    itemsChanged = QtCore.pyqtSignal()              # items added to the project
    currentItemChanged = QtCore.pyqtSignal(str)     # image + annotation of that item are loaded
    itemLoading = QtCore.pyqtSignal(str)            # a large item is decoded off the GUI thread ("": none)
    statusChanged = QtCore.pyqtSignal(str, str)     # item id, status (as saved)
    countChanged = QtCore.pyqtSignal(str, int)      # item id, instance count
    # the current annotation
    annotationEdited = QtCore.pyqtSignal(str, object)   # item id, region (x0, y0, x1, y1) or None = all
    instancesChanged = QtCore.pyqtSignal()
    selectionChanged = QtCore.pyqtSignal(list)      # instance ids
    # labels and display
    labelsChanged = QtCore.pyqtSignal()
    currentLabelChanged = QtCore.pyqtSignal(str)
    windowChanged = QtCore.pyqtSignal(object)       # (center, width) or None
    # saving
    dirtyChanged = QtCore.pyqtSignal(bool)
    saved = QtCore.pyqtSignal(str)
    saveFailed = QtCore.pyqtSignal(str, str)        # item id, one-line reason
    externalChange = QtCore.pyqtSignal(str, str)    # item id, "reloaded" | "conflict" | "overwritten"
    message = QtCore.pyqtSignal(str)                # for the status bar
    error = QtCore.pyqtSignal(str)                  # for a message box

    def __init__(self, parent: Optional[QtCore.QObject] = None) -> None:
        super().__init__(parent)
        self.project = None
        self.item_id: Optional[str] = None
        self.image: Optional[np.ndarray] = None
        self.annotation: Optional[ItemAnnotation] = None
        self.selection: list[str] = []
        self.current_label: Optional[str] = None
        self.history = UndoHistory(self._replay, self)
        self.undo_group = self.history.group
        self.nav = Navigator(self, self)
        self.autosave = Autosave(self, self)
        self._windows: dict[int, Optional[tuple[float, float]]] = {}
        self._display: Optional[np.ndarray] = None

    # ------------------------------------------------------------------ project
    def open_project(self, root) -> bool:
        from engine.project import Project
        if not self.close_project():
            return False
        try:
            project = Project.open(root)
        except MaskLoopError as e:
            self.error.emit(e.one_line())
            return False
        self.project = project
        self._windows = {}
        self.nav.reset(project)
        names = project.labels.names()
        self.current_label = names[0] if names else None
        self.projectOpened.emit(project)
        self.labelsChanged.emit()
        if self.current_label:
            self.currentLabelChanged.emit(self.current_label)
        if project.items:
            self.set_current_item(project.items[0].id)
        return True

    def on_items_added(self, new: list) -> None:
        """Tell the views about items that Project.add created (e.g. on a worker thread)."""
        self.nav.items_added(new)
        self.itemsChanged.emit()
        if self.item_id is None and self.project.items:
            self.set_current_item(self.project.items[0].id)

    def close_project(self, force: bool = False) -> bool:
        """Save and close; False (still open) when an edit could not be saved, unless force."""
        if self.project is None:
            return True
        if not self.flush() and not force:
            return False
        self.autosave.closed()
        self.history.clear()
        self.project = None
        self.nav.reset(None)
        self.item_id = None
        self.image = self.annotation = self._display = None
        self.selection = []
        self.projectClosed.emit()
        return True

    def shutdown(self) -> None:
        self.autosave.shutdown()
        self.nav.shutdown()

    # ------------------------------------------------------------------ items
    @property
    def items(self) -> list:
        return self.project.items if self.project is not None else []

    @property
    def item(self):
        return self.project.item(self.item_id) if (self.project and self.item_id) else None

    @property
    def source(self):
        return self.project.item_source(self.item_id) if (self.project and self.item_id) else None

    def status_of(self, item_id: str) -> str:
        return self.nav.status_of(item_id)

    def count_of(self, item_id: str) -> Optional[int]:
        return self.nav.count_of(item_id)

    def slice_items(self, item_id: Optional[str] = None) -> list[str]:
        return self.nav.slice_items(item_id or self.item_id)

    @property
    def opening(self) -> Optional[str]:
        """The item request_item is decoding (None when nothing is pending)."""
        return self.nav.opening

    def request_item(self, item_id: str) -> bool:
        return self.nav.request(item_id)

    def step_item(self, step: int, items: Optional[list[str]] = None) -> bool:
        return self.nav.step(step, items)

    def step_slice(self, step: int) -> bool:
        return self.nav.step(step, self.slice_items())

    def set_current_item(self, item_id: str) -> bool:
        """Show this item now (a program switch: wins over a pending user request)."""
        if self.project is None:
            return False
        if self.nav.opening is not None and self.nav.opening != item_id:
            self.nav.cancel_opening()
        if item_id == self.item_id:
            return True
        if not self.flush():
            self.error.emit("the current item's edits could not be saved; staying on it")
            return False
        try:
            item = self.project.item(item_id)
            image = self.nav.take_image(item_id)
            ann = self.project.load_annotation(item_id)
        except MaskLoopError as e:
            self.error.emit(e.one_line())
            return False
        self.item_id, self.image, self.annotation = item_id, image, ann
        self._display = None
        self.selection = []
        self.autosave.loaded()
        self.history.activate(item_id)
        self.nav.note(item_id, count=len(ann.instances))
        if item.source not in self._windows:
            self._windows[item.source] = self._default_window(image)
        self.nav.shown(item_id)
        self.currentItemChanged.emit(item_id)
        self.selectionChanged.emit([])
        self.instancesChanged.emit()
        self.windowChanged.emit(self.window)
        return True

    def item_written(self, item_id: str, ann: ItemAnnotation, current: bool = False) -> None:
        """An item's annotation file was written. For another item than the one on screen
        (e.g. auto-segment results), its undo history no longer matches the file and goes."""
        if not current and item_id != self.item_id:
            self.history.forget(item_id)
        self.nav.note(item_id, status=ann.status, count=len(ann.instances))

    def has_session_edits(self, item_id: str) -> bool:
        """The item was edited in this session (undo history, or unsaved on screen)."""
        return self.history.has_edits(item_id) or (item_id == self.item_id and self.dirty)

    @property
    def undo_stack(self):
        return self.history.stack(self.item_id)

    # ------------------------------------------------------------------ selection
    def set_selection(self, ids: Iterable[str]) -> None:
        ann = self.annotation
        if ann is None:
            return
        present = {i.id for i in ann.instances}
        ids = [i for i in dict.fromkeys(ids) if i in present]
        if ids == self.selection:
            return
        self.selection = ids
        self.selectionChanged.emit(list(ids))

    def selected_instances(self) -> list[Instance]:
        if self.annotation is None:
            return []
        out = [self.annotation.find(i) for i in self.selection]
        return [i for i in out if i is not None]

    def instances_at(self, x: int, y: int) -> list[str]:
        """Ids of visible instances covering pixel (x, y), topmost first."""
        if self.annotation is None:
            return []
        hidden = self.hidden_labels()
        out = []
        for inst in reversed(self.annotation.instances):
            lx, ly = x - inst.x0, y - inst.y0
            if inst.label not in hidden and 0 <= lx < inst.width and 0 <= ly < inst.height and inst.mask[ly, lx]:
                out.append(inst.id)
        return out

    # ------------------------------------------------------------------ saving (gui.autosave)
    @property
    def dirty(self) -> bool:
        return self.autosave.dirty

    @property
    def in_conflict(self) -> bool:
        return self.autosave.conflict

    @property
    def conflict_resolver(self):
        return self.autosave.conflict_resolver

    @conflict_resolver.setter
    def conflict_resolver(self, fn) -> None:
        self.autosave.conflict_resolver = fn

    def save(self) -> bool:
        """Write the current item if it has unsaved edits; True when nothing is unsaved."""
        return self.autosave.save()

    flush = save

    def check_disk(self) -> None:
        self.autosave.check_disk()

    def resolve_conflict(self, answer: str) -> bool:
        """Answer a held conflict later: "reload" or "overwrite"."""
        return self.autosave.resolve(answer)

    def reload_current(self, keep_history: bool = False) -> bool:
        """Read the current item's annotation from disk again; its undo history goes, unless
        `keep_history` (the caller wrote the file as a step of that history: gui.stack_undo)."""
        if self.project is None or self.item_id is None:
            return False
        self.autosave.finish_pending()
        try:
            ann = self.project.load_annotation(self.item_id)
        except MaskLoopError as e:
            self.error.emit(e.one_line())
            return False
        self.annotation = ann
        self.autosave.loaded()
        if not keep_history:
            self.history.forget(self.item_id)
        self.selection = [i for i in self.selection if keep_history and ann.find(i) is not None]
        self.selectionChanged.emit(list(self.selection))
        self.annotationEdited.emit(self.item_id, None)
        self.instancesChanged.emit()
        self.item_written(self.item_id, ann, current=True)
        return True
