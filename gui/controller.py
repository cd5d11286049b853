"""The controller: the open Project, the item on screen, the selection and the labels.

Widgets never edit an annotation themselves: they call an intent here (paint a stroke,
add a polygon, merge the selection …). engine.editing turns it into changes,
engine.history applies them as bbox-cropped patches, gui.undo records the step, and the
signals below tell the views what changed. Item switching and the per-item caches are in
gui.navigation, saving and changes on disk in gui.autosave: this class is the facade the
panels, the canvas and the loop (gui.loop) talk to.
"""
from __future__ import annotations

from typing import Iterable, Optional

import numpy as np
from PyQt5 import QtCore

from engine import editing
from engine.annotations import Instance, ItemAnnotation
from engine.errors import MaskLoopError
from engine.history import Change, StatusOp, build_and_apply, replay, touches_status

from .autosave import Autosave
from .label_intents import LabelIntents
from .navigation import Navigator
from .undo import UndoHistory

class Controller(QtCore.QObject, LabelIntents):
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

    # ------------------------------------------------------------------ display
    @property
    def window(self) -> Optional[tuple[float, float]]:
        item = self.item
        return self._windows.get(item.source) if item is not None else None

    def _default_window(self, image: np.ndarray) -> Optional[tuple[float, float]]:
        if image.dtype == np.uint8:
            return None  # shown as stored
        from engine.imageio import auto_window
        return tuple(float(v) for v in auto_window(image))

    def set_window(self, center: float, width: float) -> None:
        item = self.item
        win = (float(center), max(1e-6, float(width)))
        if item is None or self._windows.get(item.source) == win:
            return
        self._windows[item.source] = win
        self._display = None
        self.windowChanged.emit(win)

    def auto_window(self) -> None:
        if self.image is not None:
            from engine.imageio import auto_window
            self.set_window(*auto_window(self.image))

    def apply_preset(self, name: str) -> None:
        from engine.imageio import WINDOW_PRESETS
        self.set_window(*WINDOW_PRESETS[name])

    def display_image(self) -> Optional[np.ndarray]:
        """The current image as uint8 for the screen (cached until the window changes)."""
        if self.image is None:
            return None
        if self._display is None:
            win = self.window
            if win is None and self.image.dtype == np.uint8:
                self._display = self.image
            else:
                from engine.imageio import to_uint8
                self._display = to_uint8(self.image, window=win)
        return self._display

    def pixel_value(self, x: int, y: int):
        if self.image is None or not (0 <= y < self.image.shape[0] and 0 <= x < self.image.shape[1]):
            return None
        v = self.image[y, x]
        return tuple(v.tolist()) if np.ndim(v) else v.item()

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

    def _targets(self) -> list[Instance]:
        """The selection, else every instance of a visible label (eraser, split)."""
        hidden = self.hidden_labels()
        return self.selected_instances() or [i for i in self.annotation.instances if i.label not in hidden]

    # ------------------------------------------------------------------ edits
    def commit(self, text: str, changes: list[Change], select: Optional[list[str]] = None) -> bool:
        """Apply changes as one undo step. The generic entry for every edit."""
        if self.annotation is None or not changes:
            return False
        ops, region, structural = build_and_apply(self.annotation, changes)
        if not ops:
            return False
        self.history.push(self.item_id, text, ops)
        self._after_edit(region)
        if select is not None:
            self.set_selection(select)
        else:
            self._prune_selection()
        return True

    def apply(self, edit: editing.Edit) -> bool:
        if not edit.changes:
            if edit.message:
                self.message.emit(edit.message)
            return False
        return self.commit(edit.text, edit.changes, edit.select)

    def macro(self, text: str):
        """`with controller.macro("Accept item"):` several commits as one undo step."""
        return self.history.macro(self.item_id, text)

    def _replay(self, item_id: str, ops: list, forward: bool) -> None:
        if item_id != self.item_id or self.annotation is None:
            return  # stacks of other items are never active
        region, _structural = replay(self.annotation, ops, forward)
        self._after_edit(None if touches_status(ops) else region, full=touches_status(ops))
        self._prune_selection()

    def _after_edit(self, region, full: bool = False) -> None:
        self.autosave.edited()
        if region is not None:
            self.annotationEdited.emit(self.item_id, region)
        self.instancesChanged.emit()
        self.nav.note(self.item_id, count=len(self.annotation.instances))

    def _prune_selection(self) -> None:
        present = {i.id for i in self.annotation.instances}
        if any(i not in present for i in self.selection):
            self.set_selection([i for i in self.selection if i in present])

    def add_mask(self, mask: np.ndarray, x0: int, y0: int, text: str = "Add region", new: bool = False) -> bool:
        """Add a cropped mask: onto the one selected instance, else as a new instance."""
        if self.annotation is None:
            return False
        return self.apply(editing.add_region(self.annotation, self.selected_instances(), mask, x0, y0,
                                             self.ensure_label(), text=text, new=new))

    def paint_stroke(self, mask: np.ndarray, x0: int, y0: int, erase: bool = False, extend: bool = False) -> bool:
        """A finished brush (or eraser) stroke as one undo step (rules: engine.editing)."""
        if self.annotation is None:
            return False
        if erase:
            return self.apply(editing.erase_stroke(self.annotation, self._targets(), mask, x0, y0))
        return self.apply(editing.brush_stroke(self.annotation, self.selected_instances(), mask, x0, y0,
                                               self.ensure_label(), extend=extend))

    def add_polygon(self, points_xy, new: bool = False) -> bool:
        """A polygon in pixel coordinates (pixel centres are integers)."""
        shape = editing.polygon_mask(points_xy)
        return shape is not None and self.add_mask(*shape, text="Polygon", new=new)

    def magic_wand(self, x: int, y: int, tolerance: float, new: bool = False) -> bool:
        """Flood fill within `tolerance` raw units (see wand_tolerance for a relative one)."""
        if self.image is None or self.annotation is None:
            return False
        return self.apply(editing.magic_wand(self.annotation, self.image, self.selected_instances(), x, y,
                                             tolerance, self.ensure_label(), new=new))

    def wand_tolerance(self, fraction: float) -> float:
        """A tolerance given as a fraction of the displayed range, in raw units."""
        return editing.wand_tolerance(fraction, self.window, self.image) if self.image is not None else 0.0

    def delete_selected(self) -> bool:
        return self.apply(editing.delete(self.selected_instances()))

    def relabel_selected(self, label: str) -> bool:
        if self.labels is None or label not in self.labels:
            return False
        return self.apply(editing.relabel(self.selected_instances(), label))

    def fill_holes_selected(self) -> bool:
        return self.apply(editing.fill_holes(self.selected_instances()))

    def merge_selected(self) -> bool:
        return self.apply(editing.merge(self.selected_instances()))

    def split_line(self, points_xy, thickness: int = 1) -> bool:
        """Cut the selected instances (else every instance the line crosses) along a polyline."""
        if self.annotation is None:
            return False
        return self.apply(editing.split(self._targets(), points_xy, thickness))

    def set_status(self, status: str) -> bool:
        """Item status (new / predicted / reviewed) as an undoable edit."""
        ann = self.annotation
        if ann is None or status == ann.status:
            return False
        op = StatusOp(ann.status, status)
        op.apply(ann, True)
        self.history.push(self.item_id, f"Mark {status}", [op])
        self._after_edit(None)
        return True

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

    def reload_current(self) -> bool:
        """Read the current item's annotation from disk again; its undo history goes."""
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
        self.history.forget(self.item_id)
        self.selection = []
        self.selectionChanged.emit([])
        self.annotationEdited.emit(self.item_id, None)
        self.instancesChanged.emit()
        self.item_written(self.item_id, ann, current=True)
        return True
