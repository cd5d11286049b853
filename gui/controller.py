"""The controller: owns the open Project, the current item and the undo history.

Widgets never edit an annotation themselves: they call a method here (an "intent":
paint a stroke, add a polygon, merge the selection ...). The controller turns it into
engine calls, records the change as an undoable command of bbox-cropped patches
(gui.edits), emits signals so views repaint only what changed, and autosaves the item
within AUTOSAVE_MS through Project.save_annotation (an atomic write).

It also watches the current item's annotation file: a change made by another program is
never overwritten silently (see `conflict_resolver`).

Signals are the extension point for other panels (the model workflow connects here too).
"""
from __future__ import annotations

import itertools
import os
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Optional

import numpy as np
from PyQt5 import QtCore, QtWidgets

from engine.annotations import Instance, ItemAnnotation
from engine.errors import MaskLoopError
from engine import masks as emasks

from .prefetch import ImagePrefetcher
from .edits import (Change, Op, Region, StatusOp, build_and_apply, inst_region,
                    intersect_region, window_of)

AUTOSAVE_MS = 1000          # an edit reaches disk at most this long (plus the write) after it
RETRY_MS = 5000             # after a failed save
MAX_UNDO_STACKS = 16        # items whose undo history is kept (most recently visited)
UNDO_LIMIT = 300            # commands per item
DEFAULT_LABEL = "object"    # created on the first edit of a project without labels

Stamp = Optional[tuple[int, int, int]]


def _stamp(path: Path) -> Stamp:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class EditCommand(QtWidgets.QUndoCommand):
    """One undo step: ops already applied when pushed (the first redo does nothing)."""

    def __init__(self, controller: "Controller", item_id: str, text: str, ops: list[Op]) -> None:
        super().__init__(text)
        self.controller, self.item_id, self.ops = controller, item_id, ops
        self._pushed = False

    def redo(self) -> None:
        if not self._pushed:
            self._pushed = True
            return
        self.controller._replay(self.item_id, self.ops, forward=True)

    def undo(self) -> None:
        self.controller._replay(self.item_id, self.ops, forward=False)


class Controller(QtCore.QObject):
    # project and items
    projectOpened = QtCore.pyqtSignal(object)       # Project
    projectClosed = QtCore.pyqtSignal()
    itemsChanged = QtCore.pyqtSignal()              # items added to the project
    currentItemChanged = QtCore.pyqtSignal(str)     # image + annotation of that item are loaded
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
    _writeDone = QtCore.pyqtSignal(object)          # internal: a background autosave finished
    itemLoading = QtCore.pyqtSignal(str)            # a large item is decoded off the GUI thread ("": none)
    _decoded = QtCore.pyqtSignal(str)               # internal: the prefetch worker decoded an item

    #: Items at least this large (pixels) that are not decoded yet open asynchronously
    #: (request_item): the window stays live while the worker decodes them.
    ASYNC_PIXELS = 4_000_000

    def __init__(self, parent: Optional[QtCore.QObject] = None) -> None:
        super().__init__(parent)
        self.project = None
        self.item_id: Optional[str] = None
        self.image: Optional[np.ndarray] = None
        self.annotation: Optional[ItemAnnotation] = None
        self.selection: list[str] = []
        self.current_label: Optional[str] = None
        self.undo_group = QtWidgets.QUndoGroup(self)
        self._stacks: "OrderedDict[str, QtWidgets.QUndoStack]" = OrderedDict()
        self._dirty = False
        self._conflict = False
        self._stamp: Stamp = None
        self._statuses: dict[str, str] = {}
        self._counts: dict[str, int] = {}
        self._slices: dict[int, list[str]] = {}
        self._windows: dict[int, Optional[tuple[float, float]]] = {}
        self._display: Optional[np.ndarray] = None
        #: Called with the item id when its file changed on disk while there are unsaved
        #: edits; returns "reload" (take theirs), "overwrite" (keep mine) or "later".
        self.conflict_resolver: Optional[Callable[[str], str]] = None

        self._autosave = QtCore.QTimer(self)
        self._autosave.setSingleShot(True)
        self._autosave.timeout.connect(self._on_autosave)
        self._watcher = QtCore.QFileSystemWatcher(self)
        self._watcher.fileChanged.connect(self._on_disk_change)
        self._watcher.directoryChanged.connect(self._on_disk_change)
        self._count_timer = QtCore.QTimer(self)
        self._count_timer.setInterval(0)
        self._count_timer.timeout.connect(self._count_some)
        self._count_queue: list[str] = []
        # Autosave writes a snapshot on a worker thread, so the window never stalls on
        # PNG encoding; explicit saves (Ctrl+S, switching items, closing) are synchronous.
        self.background_autosave = True
        self._edit_seq = 0
        self._pending = None  # (token, Future) of the write in flight
        self._tokens = itertools.count(1)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="maskloop-autosave")
        self._writeDone.connect(self._on_write_done, QtCore.Qt.QueuedConnection)
        self._prefetch = ImagePrefetcher()
        self._opening: Optional[str] = None  # the item request_item waits for
        self._decoded.connect(self._on_decoded, QtCore.Qt.QueuedConnection)

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
        self._set_project(project)
        return True

    def create_project(self, root, paths: Iterable = (), labels=None, progress=None, cancel=None) -> bool:
        """A new project at root (or the existing one there) with `paths` added."""
        from engine.project import MANIFEST, Project
        if not self.close_project():
            return False
        try:
            root = Path(root)
            project = Project.open(root) if (root / MANIFEST).exists() else Project.create(root, labels)
            if paths:
                project.add(list(paths), progress=progress, cancel=cancel)
        except MaskLoopError as e:
            self.error.emit(e.one_line())
            return False
        self._set_project(project)
        return True

    def add_paths(self, paths, progress=None, cancel=None) -> list:
        """Add files/folders/stacks/series to the open project (on this thread)."""
        if self.project is None:
            return []
        try:
            new = self.project.add(list(paths), progress=progress, cancel=cancel)
        except MaskLoopError as e:
            self.error.emit(e.one_line())
            return []
        self.on_items_added(new)
        return new

    def on_items_added(self, new: list) -> None:
        """Tell the views about items that Project.add created (e.g. on a worker thread)."""
        for it in new:
            self._statuses.setdefault(it.id, "new")
            self._counts.setdefault(it.id, 0)
        self._index_slices()
        self.itemsChanged.emit()
        if self.item_id is None and self.project.items:
            self.set_current_item(self.project.items[0].id)

    def _set_project(self, project) -> None:
        self.project = project
        self._prefetch.set_project(project)
        self._opening = None
        self._statuses = project.statuses()
        self._counts = {}
        self._windows = {}
        self._index_slices()
        names = project.labels.names()
        self.current_label = names[0] if names else None
        self._watcher.addPath(str(project.annotations_dir)) if project.annotations_dir.is_dir() else None
        self.projectOpened.emit(project)
        self.labelsChanged.emit()
        if self.current_label:
            self.currentLabelChanged.emit(self.current_label)
        self._count_queue = [it.id for it in project.items
                             if project.annotation_path(it.id).exists()]
        for it in project.items:
            if it.id not in self._count_queue:
                self._counts[it.id] = 0
        self._count_timer.start()
        if project.items:
            self.set_current_item(project.items[0].id)

    def _index_slices(self) -> None:
        self._slices = {}
        for it in self.project.items:
            self._slices.setdefault(it.source, []).append(it)
        self._slices = {s: [it.id for it in sorted(v, key=lambda i: i.slice)] for s, v in self._slices.items()}

    def close_project(self, force: bool = False) -> bool:
        """Save and close; False (still open) when an edit could not be saved, unless force."""
        if self.project is None:
            return True
        if not self.flush() and not force:
            return False
        self._count_timer.stop()
        dirs = self._watcher.directories() + self._watcher.files()
        if dirs:
            self._watcher.removePaths(dirs)
        for stack in self._stacks.values():
            self.undo_group.removeStack(stack)
            stack.deleteLater()
        self._stacks.clear()
        self._prefetch.set_project(None)
        self._opening = None
        self.project = None
        self.item_id = None
        self.image = self.annotation = self._display = None
        self.selection = []
        self._set_dirty(False)
        self._conflict = False
        self.projectClosed.emit()
        return True

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
        return self._statuses.get(item_id, "new")

    def count_of(self, item_id: str) -> Optional[int]:
        return self._counts.get(item_id)

    def slice_items(self, item_id: Optional[str] = None) -> list[str]:
        """Item ids of the same source as `item_id` (default: current), in slice order."""
        item_id = item_id or self.item_id
        if not item_id or self.project is None:
            return []
        return self._slices.get(self.project.item(item_id).source, [item_id])

    def set_current_item(self, item_id: str) -> bool:
        if self.project is None:
            return False
        if self._opening is not None and self._opening != item_id:  # a program switch wins
            self._cancel_opening()
        if item_id == self.item_id:
            return True
        if not self.flush():
            self.error.emit("the current item's edits could not be saved; staying on it")
            return False
        try:
            item = self.project.item(item_id)
            image = self._prefetch.take(item_id)
            if image is None:
                image = self.project.load_image(item_id)
            ann = self.project.load_annotation(item_id)
            stamp = _stamp(self.project.annotation_path(item_id))
        except MaskLoopError as e:
            self.error.emit(e.one_line())
            return False
        old_file = [f for f in self._watcher.files()]
        if old_file:
            self._watcher.removePaths(old_file)
        self.item_id, self.image, self.annotation, self._stamp = item_id, image, ann, stamp
        self._conflict = False
        self._display = None
        self.selection = []
        self._watch_current()
        stack = self._stack_for(item_id)
        self.undo_group.setActiveStack(stack)
        self._counts[item_id] = len(ann.instances)
        if item.source not in self._windows:
            self._windows[item.source] = self._default_window(image)
        self._prefetch.want(self._neighbours(item_id))
        self.currentItemChanged.emit(item_id)
        self.selectionChanged.emit([])
        self.instancesChanged.emit()
        self.windowChanged.emit(self.window)
        return True

    def request_item(self, item_id: str) -> bool:
        """Open an item because the user asked for it (list click, N, PageDown, slider).

        Small or already decoded items open at once (as set_current_item). A large item
        that is not decoded yet is decoded on the prefetch worker: itemLoading is emitted
        now, currentItemChanged when it is shown; the current item stays usable meanwhile,
        and a newer request replaces this one. False when the item cannot be opened now."""
        if self.project is None:
            return False
        if self._opening is not None and self._opening != item_id:
            self._cancel_opening()
        if item_id == self.item_id:
            return True
        try:
            item = self.project.item(item_id)
        except MaskLoopError as e:
            self.error.emit(e.one_line())
            return False
        if item.width * item.height < self.ASYNC_PIXELS or self._prefetch.ready(item_id):
            return self.set_current_item(item_id)
        fut = self._prefetch.fetch(item_id)
        if fut is None:
            return self.set_current_item(item_id)
        self._opening = item_id
        self.itemLoading.emit(item_id)

        def done(_fut, iid=item_id, emit=self._decoded.emit):
            try:
                emit(iid)  # queued: _on_decoded runs on the GUI thread
            except RuntimeError:  # the controller is gone (window closed meanwhile)
                pass
        fut.add_done_callback(done)
        return True

    def _cancel_opening(self) -> None:
        self._prefetch.drop(self._opening)
        self._opening = None
        self.itemLoading.emit("")  # nothing is loading any more

    @property
    def opening(self) -> Optional[str]:
        """The item request_item is decoding (None when nothing is pending)."""
        return self._opening

    def _on_decoded(self, item_id: str) -> None:
        if item_id != self._opening:
            return  # superseded by a newer request, or the project was closed
        self._opening = None
        if not self.set_current_item(item_id):
            self.itemLoading.emit("")
            if self.item_id:
                self.currentItemChanged.emit(self.item_id)  # views go back to the item shown

    def _neighbours(self, item_id: str) -> list[str]:
        """Next and previous slice, then next and previous item: where users step to."""
        out = []
        for ids in (self.slice_items(item_id), [it.id for it in self.project.items]):
            if item_id in ids:
                k = ids.index(item_id)
                out += [ids[j] for j in (k + 1, k - 1) if 0 <= j < len(ids)]
        return [i for i in dict.fromkeys(out) if i != item_id]

    def step_item(self, step: int, items: Optional[list[str]] = None) -> bool:
        """Next (+1) / previous (-1) item in `items` (default: all, in project order)."""
        ids = items if items is not None else [it.id for it in self.items]
        if not ids:
            return False
        here = self._opening if self._opening in ids else self.item_id  # N N N: steps from the pending one
        if here not in ids:
            return self.request_item(ids[0 if step > 0 else -1])
        k = ids.index(here) + step
        if not 0 <= k < len(ids):
            return False
        return self.request_item(ids[k])

    def step_slice(self, step: int) -> bool:
        return self.step_item(step, self.slice_items())

    def _stack_for(self, item_id: str) -> QtWidgets.QUndoStack:
        stack = self._stacks.get(item_id)
        if stack is None:
            stack = QtWidgets.QUndoStack(self)
            stack.setUndoLimit(UNDO_LIMIT)
            self.undo_group.addStack(stack)
            self._stacks[item_id] = stack
            while len(self._stacks) > MAX_UNDO_STACKS:
                old_id, old = self._stacks.popitem(last=False)
                self.undo_group.removeStack(old)
                old.deleteLater()
        else:
            self._stacks.move_to_end(item_id)
        return stack

    @property
    def undo_stack(self) -> Optional[QtWidgets.QUndoStack]:
        return self._stacks.get(self.item_id) if self.item_id else None

    def _count_some(self) -> None:
        """Instance counts of not-yet-visited items, a few per event-loop turn."""
        if self.project is None or not self._count_queue:
            self._count_timer.stop()
            return
        timer = QtCore.QElapsedTimer()
        timer.start()
        while self._count_queue and timer.elapsed() < 15:
            item_id = self._count_queue.pop(0)
            if item_id in self._counts:
                continue
            try:
                n = len(self.project.load_annotation(item_id).instances)
            except MaskLoopError:
                continue
            self._counts[item_id] = n
            self.countChanged.emit(item_id, n)

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
        if item is None:
            return
        win = (float(center), max(1e-6, float(width)))
        if self._windows.get(item.source) == win:
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

    # ------------------------------------------------------------------ labels
    @property
    def labels(self):
        return self.project.labels if self.project is not None else None

    def label_color(self, name: str) -> tuple[int, int, int]:
        lab = self.labels.get(name) if self.labels is not None else None
        return tuple(lab.color) if lab is not None else (255, 0, 0)

    def hidden_labels(self) -> set:
        return {l.name for l in self.labels if not l.visible} if self.labels is not None else set()

    def set_current_label(self, name: str) -> None:
        if self.labels is None or name not in self.labels or name == self.current_label:
            return
        self.current_label = name
        self.currentLabelChanged.emit(name)

    def set_label_index(self, index: int) -> None:
        names = self.labels.names() if self.labels is not None else []
        if 0 <= index < len(names):
            self.set_current_label(names[index])

    def ensure_label(self) -> str:
        """The label for new instances; creates DEFAULT_LABEL in an empty label set."""
        if self.current_label and self.current_label in self.labels:
            return self.current_label
        names = self.labels.names()
        if not names:
            self.add_label(DEFAULT_LABEL)
            names = self.labels.names()
        self.set_current_label(names[0])
        return self.current_label

    def _save_manifest(self) -> bool:
        try:
            self.project.save()
        except (MaskLoopError, OSError) as e:
            self.error.emit(f"could not save the project manifest: {e}")
            return False
        return True

    def add_label(self, name: str, color=None) -> Optional[str]:
        if self.project is None:
            return None
        try:
            lab = self.labels.add(name, color)
        except MaskLoopError as e:
            self.error.emit(e.one_line())
            return None
        self._save_manifest()
        self.labelsChanged.emit()
        if not self.current_label:
            self.set_current_label(lab.name)
        return lab.name

    def recolor_label(self, name: str, color: tuple[int, int, int]) -> None:
        lab = self.labels.require(name)
        lab.color = tuple(int(c) for c in color[:3])
        self._save_manifest()
        self.labelsChanged.emit()

    def set_label_visible(self, name: str, visible: bool) -> None:
        lab = self.labels.require(name)
        if lab.visible == bool(visible):
            return
        lab.visible = bool(visible)
        self._save_manifest()
        self.labelsChanged.emit()

    def rename_label(self, old: str, new: str) -> bool:
        """Rename in the label set and in every annotation file that uses it."""
        if self.project is None or old == new.strip():
            return False
        if not self.flush():
            return False
        try:  # the engine renames in the manifest and in every file but the one held here
            failures = self.project.rename_label(old, new, skip_items=[self.item_id])
        except MaskLoopError as e:
            self.error.emit(e.one_line())
            return False
        new = new.strip()
        if self.annotation is not None:
            touched = False
            for i in self.annotation.instances:
                if i.label == old:
                    i.label = new
                    touched = True
            # undo history names the old label: relabel it too
            for stack in self._stacks.values():
                for k in range(stack.count()):
                    for op in getattr(stack.command(k), "ops", []):
                        for attr in ("before", "after"):
                            if getattr(op, "name", None) == "label" and getattr(op, attr) == old:
                                setattr(op, attr, new)
                        inst = getattr(op, "inst", None)
                        if inst is not None and inst.label == old:
                            inst.label = new
            if touched:
                self._write_current()
        if self.current_label == old:
            self.current_label = new
            self.currentLabelChanged.emit(new)
        self._save_manifest()
        self.labelsChanged.emit()
        self.instancesChanged.emit()
        if failures:
            self.error.emit("label renamed, but some files were not updated: " + "; ".join(failures[:3]))
        return True

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
            if inst.label in hidden:
                continue
            lx, ly = x - inst.x0, y - inst.y0
            if 0 <= lx < inst.width and 0 <= ly < inst.height and inst.mask[ly, lx]:
                out.append(inst.id)
        return out

    # ------------------------------------------------------------------ edits
    def commit(self, text: str, changes: list[Change], select: Optional[list[str]] = None) -> bool:
        """Apply changes as one undo step. The generic entry for every edit."""
        if self.annotation is None or not changes:
            return False
        ops, region, structural = build_and_apply(self.annotation, changes)
        if not ops:
            return False
        cmd = EditCommand(self, self.item_id, text, ops)
        self.undo_stack.push(cmd)
        self._after_edit(region, structural)
        if select is not None:
            self.set_selection(select)
        else:
            self._prune_selection()
        return True

    def _replay(self, item_id: str, ops: list[Op], forward: bool) -> None:
        if item_id != self.item_id or self.annotation is None:
            return  # stacks of other items are never active
        region, structural = None, False
        from .edits import union_region
        for op in (ops if forward else reversed(ops)):
            region = union_region(region, op.apply(self.annotation, forward))
            structural = structural or op.structural
        self._after_edit(region, structural, full=any(isinstance(o, StatusOp) for o in ops))
        self._prune_selection()

    def _after_edit(self, region: Optional[Region], structural: bool, full: bool = False) -> None:
        self._edit_seq += 1
        self._set_dirty(True)
        if not self._autosave.isActive():
            self._autosave.start(AUTOSAVE_MS)
        if region is not None:
            self.annotationEdited.emit(self.item_id, region)
        self.instancesChanged.emit()
        n = len(self.annotation.instances)
        if self._counts.get(self.item_id) != n:
            self._counts[self.item_id] = n
            self.countChanged.emit(self.item_id, n)

    def _prune_selection(self) -> None:
        present = {i.id for i in self.annotation.instances}
        if any(i not in present for i in self.selection):
            self.set_selection([i for i in self.selection if i in present])

    def _new_instance(self, mask: np.ndarray, x0: int, y0: int, **kw) -> Instance:
        return Instance(mask=mask, x0=x0, y0=y0, label=kw.pop("label", None) or self.ensure_label(),
                        source="manual", **kw)

    def _clip(self, mask: np.ndarray, x0: int, y0: int) -> Optional[tuple[np.ndarray, int, int]]:
        """Cut a cropped mask to the image."""
        H, W = self.annotation.shape
        h, w = mask.shape
        cx0, cy0, cx1, cy1 = max(0, x0), max(0, y0), min(W, x0 + w), min(H, y0 + h)
        if cx1 <= cx0 or cy1 <= cy0:
            return None
        return mask[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0], cx0, cy0

    def _union_change(self, target: Instance, mask: np.ndarray, x0: int, y0: int) -> Change:
        h, w = mask.shape
        region = (x0, y0, x0 + w, y0 + h)
        box = (min(target.x0, x0), min(target.y0, y0),
               max(target.x0 + target.width, x0 + w), max(target.y0 + target.height, y0 + h))
        new_mask = window_of(target, box)
        new_mask[y0 - box[1]:y0 - box[1] + h, x0 - box[0]:x0 - box[0] + w] |= mask
        return Change(target, target.copy(mask=new_mask, x0=box[0], y0=box[1]), hint=region)

    def add_mask(self, mask: np.ndarray, x0: int, y0: int, text: str = "Add region",
                 new: bool = False) -> bool:
        """Add a cropped mask: onto the one selected instance, else as a new instance."""
        if self.annotation is None:
            return False
        clipped = self._clip(np.asarray(mask, bool), int(x0), int(y0))
        if clipped is None or not clipped[0].any():
            return False
        mask, x0, y0 = clipped
        sel = self.selected_instances()
        if len(sel) == 1 and not new:
            return self.commit(text, [self._union_change(sel[0], mask, x0, y0)])
        inst = self._new_instance(mask.copy(), x0, y0).tight()
        return self.commit(text, [Change(None, inst)], select=[inst.id])

    def paint_stroke(self, mask: np.ndarray, x0: int, y0: int, erase: bool = False) -> bool:
        """A finished brush (or eraser) stroke as one undo step.

        Brush: onto the one selected instance, else a new instance of the current label.
        Eraser: from the selected instances, else from every visible instance it touches.
        """
        if self.annotation is None:
            return False
        clipped = self._clip(np.asarray(mask, bool), int(x0), int(y0))
        if clipped is None or not clipped[0].any():
            return False
        mask, x0, y0 = clipped
        if not erase:
            return self.add_mask(mask, x0, y0, text="Brush stroke")
        h, w = mask.shape
        region = (x0, y0, x0 + w, y0 + h)
        hidden = self.hidden_labels()
        targets = self.selected_instances() or [i for i in self.annotation.instances
                                                if i.label not in hidden]
        changes = []
        for inst in targets:
            inter = intersect_region(region, inst_region(inst))
            if inter is None:
                continue
            ix0, iy0, ix1, iy1 = inter
            cut = mask[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0]
            sub = inst.mask[iy0 - inst.y0:iy1 - inst.y0, ix0 - inst.x0:ix1 - inst.x0]
            if not (sub & cut).any():
                continue
            new = inst.copy()
            new.mask[iy0 - inst.y0:iy1 - inst.y0, ix0 - inst.x0:ix1 - inst.x0] &= ~cut
            new.tight()
            changes.append(Change(inst, new, hint=region if not new.is_empty() else None))
        return self.commit("Eraser stroke", changes)

    def add_polygon(self, points_xy, new: bool = False) -> bool:
        """A polygon in pixel coordinates (pixel centres are integers)."""
        pts = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)
        if len(pts) < 3 or self.annotation is None:
            return False
        x0, y0 = np.floor(pts.min(axis=0)).astype(int) - 1
        x1, y1 = np.ceil(pts.max(axis=0)).astype(int) + 2
        mask = emasks.fill_polygon(pts - (x0, y0), int(y1 - y0), int(x1 - x0))
        return self.add_mask(mask, int(x0), int(y0), text="Polygon", new=new)

    def magic_wand(self, x: int, y: int, tolerance: float, new: bool = False) -> bool:
        from engine.classic import flood_fill
        if self.image is None:
            return False
        H, W = self.image.shape[:2]
        roi = None if H * W <= 4096 * 4096 else (x - 2048, y - 2048, x + 2048, y + 2048)
        res = flood_fill(self.image, (x, y), tolerance, roi=roi)
        if res is None:
            return False
        return self.add_mask(res[0], res[1], res[2], text="Magic wand", new=new)

    def delete_selected(self) -> bool:
        sel = self.selected_instances()
        return self.commit("Delete", [Change(i, None) for i in sel], select=[])

    def relabel_selected(self, label: str) -> bool:
        if self.labels is None or label not in self.labels:
            return False
        sel = self.selected_instances()
        return self.commit("Relabel", [Change(i, i.copy(label=label)) for i in sel if i.label != label])

    def fill_holes_selected(self) -> bool:
        sel = self.selected_instances()
        return self.commit("Fill holes", [Change(i, i.copy(mask=emasks.fill_holes(i.mask))) for i in sel])

    def merge_selected(self) -> bool:
        sel = self.selected_instances()
        if len(sel) < 2:
            self.message.emit("select two or more instances to merge (Shift+click)")
            return False
        merged = emasks.merge_instances(sel)
        return self.commit("Merge", [Change(i, None) for i in sel] + [Change(None, merged)],
                           select=[merged.id])

    def split_line(self, points_xy, thickness: int = 1) -> bool:
        """Cut the selected instances (else every instance the line crosses) along a polyline."""
        if self.annotation is None:
            return False
        pts = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)
        if len(pts) < 2:
            return False
        lx0, ly0 = np.floor(pts.min(axis=0)).astype(int)
        lx1, ly1 = np.ceil(pts.max(axis=0)).astype(int) + 1
        hidden = self.hidden_labels()
        targets = self.selected_instances() or [i for i in self.annotation.instances
                                                if i.label not in hidden]
        changes, pieces_ids = [], []
        for inst in targets:
            if intersect_region((lx0, ly0, lx1, ly1), inst_region(inst)) is None:
                continue
            pieces = emasks.split_instance(inst, pts, thickness=thickness)
            if len(pieces) < 2:
                continue
            first = pieces[0]
            first = inst.copy(mask=first.mask, x0=first.x0, y0=first.y0)  # same id (a prediction becomes manual)
            changes.append(Change(inst, first))
            changes += [Change(None, p) for p in pieces[1:]]
            pieces_ids += [inst.id] + [p.id for p in pieces[1:]]
        if not changes:
            self.message.emit("the line does not cut an instance in two")
            return False
        return self.commit("Split", changes, select=pieces_ids)

    def set_status(self, status: str) -> bool:
        """Item status (new / predicted / reviewed) as an undoable edit."""
        ann = self.annotation
        if ann is None or status == ann.status:
            return False
        op = StatusOp(ann.status, status)
        op.apply(ann, True)
        self.undo_stack.push(EditCommand(self, self.item_id, f"Mark {status}", [op]))
        self._after_edit(None, False)
        return True

    # ------------------------------------------------------------------ saving
    @property
    def dirty(self) -> bool:
        return self._dirty

    @property
    def in_conflict(self) -> bool:
        return self._conflict

    def _set_dirty(self, value: bool) -> None:
        if value != self._dirty:
            self._dirty = value
            self.dirtyChanged.emit(value)

    def _on_autosave(self) -> None:
        if not self._dirty or self.annotation is None or self._conflict:
            return
        if not self.background_autosave:
            if not self.save() and not self._conflict:
                self._autosave.start(RETRY_MS)
            return
        if self._pending is not None:  # one write at a time; this edit goes next
            self._autosave.start(200)
            return
        path = self.project.annotation_path(self.item_id)
        if _stamp(path) != self._stamp:
            self._resolve_conflict()
            return
        project, item_id, seq = self.project, self.item_id, self._edit_seq
        snapshot = self.annotation.copy()
        token = next(self._tokens)

        def write():
            try:
                project.save_annotation(snapshot)
            except (MaskLoopError, OSError) as e:
                return (token, item_id, seq, None, e.one_line() if isinstance(e, MaskLoopError) else str(e),
                        snapshot.status, len(snapshot.instances))
            return (token, item_id, seq, _stamp(project.annotation_path(item_id)), None, snapshot.status,
                    len(snapshot.instances))

        future = self._executor.submit(write)
        self._pending = (token, future)
        future.add_done_callback(lambda f: self._writeDone.emit(f.result()))

    def _wait_pending(self) -> None:
        """Let a background write finish and take its result (before any other save)."""
        if self._pending is not None:
            self._on_write_done(self._pending[1].result())

    def _on_write_done(self, result) -> None:
        token, item_id, seq, stamp, err, status, count = result
        if self._pending is None or self._pending[0] != token:
            return  # already taken by _wait_pending
        self._pending = None
        if err is not None:
            self.saveFailed.emit(item_id, err)
            if item_id == self.item_id and self._dirty and not self._autosave.isActive():
                self._autosave.start(RETRY_MS)
            return
        if item_id == self.item_id:
            self._stamp = stamp
            self._watch_current()
            if seq == self._edit_seq:
                self._set_dirty(False)
            elif not self._autosave.isActive():
                self._autosave.start(AUTOSAVE_MS)
        if self._statuses.get(item_id) != status:
            self._statuses[item_id] = status
            self.statusChanged.emit(item_id, status)
        self.saved.emit(item_id)
        if item_id == self.item_id:
            self._on_disk_change("")  # anything written by others meanwhile?

    def save(self) -> bool:
        """Write the current item if it has unsaved edits; True when nothing is unsaved."""
        self._wait_pending()
        self._autosave.stop()
        if not self._dirty or self.annotation is None:
            return True
        if self._conflict:
            return False
        path = self.project.annotation_path(self.item_id)
        if _stamp(path) != self._stamp:
            return self._resolve_conflict()
        return self._write_current()

    flush = save

    def _write_current(self, overwrite: bool = False) -> bool:
        item_id, ann = self.item_id, self.annotation
        try:
            self.project.save_annotation(ann, overwrite=overwrite)
        except (MaskLoopError, OSError) as e:
            msg = e.one_line() if isinstance(e, MaskLoopError) else str(e)
            self.saveFailed.emit(item_id, msg)
            return False
        self._stamp = _stamp(self.project.annotation_path(item_id))
        self._watch_current()
        self._set_dirty(False)
        if self._statuses.get(item_id) != ann.status:
            self._statuses[item_id] = ann.status
            self.statusChanged.emit(item_id, ann.status)
        self.saved.emit(item_id)
        return True

    def _watch_current(self) -> None:
        path = str(self.project.annotation_path(self.item_id))
        if path not in self._watcher.files() and os.path.exists(path):
            self._watcher.addPath(path)
        ad = str(self.project.annotations_dir)
        if ad not in self._watcher.directories() and os.path.isdir(ad):
            self._watcher.addPath(ad)

    # ------------------------------------------------------------------ changes on disk
    def check_disk(self) -> None:
        """Compare the current item's file with what was loaded or saved last."""
        self._on_disk_change("")

    def _on_disk_change(self, _path: str) -> None:
        if self.project is None or self.item_id is None or self._pending is not None:
            return  # (our own write in flight: checked again when it is done)
        path = self.project.annotation_path(self.item_id)
        if os.path.exists(path) and str(path) not in self._watcher.files():
            self._watcher.addPath(str(path))  # replaced files drop out of the watch list
        if _stamp(path) == self._stamp or self._conflict:
            return
        if not self._dirty:
            self.reload_current()
            self.externalChange.emit(self.item_id, "reloaded")
            self.message.emit(f"{self.item_id}: changed on disk by another program; reloaded")
        else:
            self._resolve_conflict()

    def _resolve_conflict(self) -> bool:
        """The file changed under unsaved edits: ask; never overwrite without an answer."""
        item_id = self.item_id
        self._conflict = True
        answer = self.conflict_resolver(item_id) if self.conflict_resolver else "later"
        if item_id != self.item_id:
            return False
        if answer == "reload":
            self._conflict = False
            self.reload_current()
            self.externalChange.emit(item_id, "reloaded")
            return True
        if answer == "overwrite":
            self._conflict = False
            ok = self._write_current(overwrite=True)
            if ok:
                self.externalChange.emit(item_id, "overwritten")
            return ok
        self.externalChange.emit(item_id, "conflict")
        self.message.emit(f"{item_id}: changed on disk by another program; your edits are not saved "
                          "until you choose (File > Resolve conflict)")
        return False

    def resolve_conflict(self, answer: str) -> bool:
        """Answer a held conflict later: "reload" or "overwrite"."""
        if not self._conflict:
            return True
        self._conflict = False
        if answer == "reload":
            self.reload_current()
            self.externalChange.emit(self.item_id, "reloaded")
            return True
        if answer == "overwrite":
            return self._write_current(overwrite=True)
        self._conflict = True
        return False

    def reload_current(self) -> bool:
        """Read the current item's annotation from disk again; its undo history goes."""
        if self.project is None or self.item_id is None:
            return False
        self._wait_pending()
        try:
            ann = self.project.load_annotation(self.item_id)
        except MaskLoopError as e:
            self.error.emit(e.one_line())
            return False
        self.annotation = ann
        self._stamp = _stamp(self.project.annotation_path(self.item_id))
        self._conflict = False
        self._autosave.stop()
        self._set_dirty(False)
        stack = self.undo_stack
        if stack is not None:
            stack.clear()
        self.selection = []
        self.selectionChanged.emit([])
        self.annotationEdited.emit(self.item_id, None)
        self.instancesChanged.emit()
        n = len(ann.instances)
        self._counts[self.item_id] = n
        self.countChanged.emit(self.item_id, n)
        if self._statuses.get(self.item_id) != ann.status:
            self._statuses[self.item_id] = ann.status
            self.statusChanged.emit(self.item_id, ann.status)
        return True
