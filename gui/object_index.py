"""Which 3-D objects lie on which slice of the current stack, and the neighbouring slices'
annotations, read on a worker thread so the window never waits for a 300-slice stack.

The current slice is always read from the controller (edits show at once); a slice the user
leaves is recorded as it was left, so the index follows edits made in this window without
rereading files. External changes and bulk operations call `refresh()`.
"""
from __future__ import annotations

from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

from PyQt5 import QtCore

from engine.errors import MaskLoopError

MAX_CACHED = 8  # neighbour annotations kept (previous/next slice of the last few slices)


class ObjectIndex(QtCore.QObject):
    changed = QtCore.pyqtSignal()        # extents or neighbour annotations became known
    _loaded = QtCore.pyqtSignal(object)  # internal: (generation, kind, payload) from the worker

    def __init__(self, controller, parent=None) -> None:
        super().__init__(parent)
        self.controller = controller
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="maskloop-objects")
        self._gen = 0
        self._ids: list[str] = []                        # slices of the indexed stack
        self._objects: dict[str, frozenset] = {}          # item id -> object ids on it
        self._anns: "OrderedDict[str, object]" = OrderedDict()  # item id -> ItemAnnotation
        self._asked: set[str] = set()
        self._leaving = None                              # (item id, annotation) shown now
        self._scanning = False
        self._loaded.connect(self._on_loaded, QtCore.Qt.QueuedConnection)
        controller.currentItemChanged.connect(self._on_item)
        controller.instancesChanged.connect(self._on_instances)
        controller.projectClosed.connect(self.clear)
        controller.itemsChanged.connect(self.refresh)
        controller.externalChange.connect(lambda *_a: self.refresh())

    # ------------------------------------------------------------------ state
    def clear(self) -> None:
        self._gen += 1
        self._ids, self._objects, self._asked = [], {}, set()
        self._anns.clear()
        self._leaving = None
        self._scanning = False

    def refresh(self) -> None:
        """Forget everything read from files and read the current stack again."""
        ids = self._ids
        self.clear()
        if self.controller.item_id:
            self._on_item(self.controller.item_id)
        elif ids:
            self.changed.emit()

    def shutdown(self) -> None:
        self._gen += 1
        self._executor.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ queries
    @property
    def complete(self) -> bool:
        return bool(self._ids) and all(i in self._objects for i in self._ids)

    def objects_on(self, item_id: str) -> Optional[frozenset]:
        ctl = self.controller
        if item_id == ctl.item_id and ctl.annotation is not None:
            return frozenset(i.object_id for i in ctl.annotation.instances if i.object_id)
        return self._objects.get(item_id)

    def extent(self, object_id: str) -> Optional[tuple[int, int, int]]:
        """(first slice, last slice, number of slices holding it), 0-based; None while the
        stack is still being read."""
        found = []
        for k, iid in enumerate(self._ids):
            objs = self.objects_on(iid)
            if objs is None:
                if not self._scanning:
                    self._scanning = True
                    self._scan(list(self._ids))
                return None
            if object_id in objs:
                found.append(k)
        return (found[0], found[-1], len(found)) if found else None

    def annotation(self, item_id: str):
        """A slice's annotation for display (the current one live, others as read); None
        while it is being read."""
        ctl = self.controller
        if item_id == ctl.item_id:
            return ctl.annotation
        ann = self._anns.get(item_id)
        if ann is None:
            self._ask(item_id)
        return ann

    # ------------------------------------------------------------------ updates
    def _remember(self, item_id: str, ann) -> None:
        self._anns[item_id] = ann
        self._anns.move_to_end(item_id)
        while len(self._anns) > MAX_CACHED:
            self._anns.popitem(last=False)
        self._objects[item_id] = frozenset(i.object_id for i in ann.instances if i.object_id)

    def _on_instances(self) -> None:
        ctl = self.controller
        if ctl.item_id and ctl.annotation is not None:
            self._leaving = (ctl.item_id, ctl.annotation)

    def _on_item(self, item_id: str) -> None:
        ctl = self.controller
        if self._leaving is not None and self._leaving[0] != item_id:
            self._remember(*self._leaving)  # its annotation object is not edited any more
        self._leaving = (item_id, ctl.annotation) if ctl.annotation is not None else None
        ids = ctl.slice_items(item_id)
        if len(ids) <= 1:
            if self._ids:
                self.clear()
            return
        if ids != self._ids:
            self._gen += 1
            self._ids, self._objects, self._asked = list(ids), {}, set()
            self._anns.clear()
            self._scanning = False  # read when an extent is first asked for
        k = ids.index(item_id)
        for j in (k - 1, k + 1):
            if 0 <= j < len(ids):
                self._ask(ids[j])

    def _ask(self, item_id: str) -> None:
        if item_id in self._asked or item_id in self._anns:
            return
        self._asked.add(item_id)
        self._submit("ann", lambda p: (item_id, p.load_annotation(item_id)))

    def _scan(self, ids: list[str]) -> None:
        def work(p):
            out = {}
            for iid in ids:
                if gen != self._gen:
                    return None  # superseded: another stack, or closed
                try:
                    ann = p.load_annotation(iid)
                except MaskLoopError:
                    ann = None
                out[iid] = frozenset() if ann is None else \
                    frozenset(i.object_id for i in ann.instances if i.object_id)
            return out
        gen = self._gen
        self._submit("scan", work)

    def _submit(self, kind: str, work) -> None:
        gen, project, emit = self._gen, self.controller.project, self._loaded.emit
        if project is None:
            return

        def run():
            try:
                payload = work(project)
            except MaskLoopError:
                payload = None
            try:
                emit((gen, kind, payload))
            except RuntimeError:  # the window is gone
                pass
        self._executor.submit(run)

    def _on_loaded(self, result) -> None:
        gen, kind, payload = result
        if gen != self._gen or payload is None:
            return
        if kind == "scan":
            for iid, objs in payload.items():
                self._objects.setdefault(iid, objs)  # slices visited meanwhile are newer
        else:
            item_id, ann = payload
            if item_id != self.controller.item_id:
                self._remember(item_id, ann)
        self.changed.emit()
