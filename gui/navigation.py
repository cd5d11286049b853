"""Moving between items: what each item's status and instance count are (for the lists),
which items are slices of one stack, stepping (N, PageDown), and opening a large item
without freezing the window (its decode runs on the prefetch worker).

Stepping through a stack or list is the common way to move, so the neighbours of the
item on screen are decoded ahead (gui.prefetch); a jump to a large item that is not
decoded yet is decoded there while the status bar says "loading …" (request_item).
"""
from __future__ import annotations

from typing import Optional

from PyQt5 import QtCore

from engine.errors import MaskLoopError

from .prefetch import ImagePrefetcher


class Navigator(QtCore.QObject):
    """Item caches and switching for a Controller (which owns the item on screen)."""

    #: Items at least this large (pixels) that are not decoded yet open asynchronously.
    ASYNC_PIXELS = 4_000_000

    def __init__(self, controller, parent: Optional[QtCore.QObject] = None) -> None:
        super().__init__(parent)
        self.c = controller
        self.statuses: dict[str, str] = {}
        self.counts: dict[str, int] = {}
        self._slices: dict[int, list[str]] = {}
        self.prefetch = ImagePrefetcher()
        self.opening: Optional[str] = None  # the item request_item waits for
        self._count_queue: list[str] = []
        self._count_timer = QtCore.QTimer(self)
        self._count_timer.setInterval(0)
        self._count_timer.timeout.connect(self._count_some)

    # ------------------------------------------------------------------ project
    def reset(self, project) -> None:
        """A project opened (or None: closed)."""
        self.prefetch.set_project(project)
        self.opening = None
        self._count_timer.stop()
        self.statuses = project.statuses() if project is not None else {}
        self.counts = {}
        self._slices = {}
        if project is None:
            return
        self.index_slices()
        self._count_queue = [it.id for it in project.items if project.annotation_path(it.id).exists()]
        for it in project.items:
            if it.id not in self._count_queue:
                self.counts[it.id] = 0
        self._count_timer.start()

    def index_slices(self) -> None:
        groups: dict[int, list] = {}
        for it in self.c.project.items:
            groups.setdefault(it.source, []).append(it)
        self._slices = {s: [it.id for it in sorted(v, key=lambda i: i.slice)] for s, v in groups.items()}

    def items_added(self, new: list) -> None:
        for it in new:
            self.statuses.setdefault(it.id, "new")
            self.counts.setdefault(it.id, 0)
        self.index_slices()

    # ------------------------------------------------------------------ what the lists show
    def status_of(self, item_id: str) -> str:
        return self.statuses.get(item_id, "new")

    def count_of(self, item_id: str) -> Optional[int]:
        return self.counts.get(item_id)

    def note(self, item_id: str, status: Optional[str] = None, count: Optional[int] = None) -> None:
        """An item's status or count changed (an edit, a save, a result written elsewhere)."""
        if status is not None and self.statuses.get(item_id) != status:
            self.statuses[item_id] = status
            self.c.statusChanged.emit(item_id, status)
        if count is not None and self.counts.get(item_id) != count:
            self.counts[item_id] = count
            self.c.countChanged.emit(item_id, count)

    def _count_some(self) -> None:
        """Instance counts of not-yet-visited items, a few per event-loop turn."""
        project = self.c.project
        if project is None or not self._count_queue:
            self._count_timer.stop()
            return
        timer = QtCore.QElapsedTimer()
        timer.start()
        while self._count_queue and timer.elapsed() < 15:
            item_id = self._count_queue.pop(0)
            if item_id in self.counts:
                continue
            try:
                n = len(project.load_annotation(item_id).instances)
            except MaskLoopError:
                continue
            self.note(item_id, count=n)

    # ------------------------------------------------------------------ order
    def slice_items(self, item_id: Optional[str]) -> list[str]:
        """Item ids of the same source as `item_id`, in slice order."""
        if not item_id or self.c.project is None:
            return []
        return self._slices.get(self.c.project.item(item_id).source, [item_id])

    def neighbours(self, item_id: str) -> list[str]:
        """Next and previous slice, then next and previous item: where users step to."""
        out = []
        for ids in (self.slice_items(item_id), [it.id for it in self.c.project.items]):
            if item_id in ids:
                k = ids.index(item_id)
                out += [ids[j] for j in (k + 1, k - 1) if 0 <= j < len(ids)]
        return [i for i in dict.fromkeys(out) if i != item_id]

    def step(self, step: int, items: Optional[list[str]] = None) -> bool:
        """Next (+1) / previous (-1) item in `items` (default: all, in project order)."""
        ids = items if items is not None else [it.id for it in self.c.items]
        if not ids:
            return False
        here = self.opening if self.opening in ids else self.c.item_id  # N N N: from the pending one
        if here not in ids:
            return self.request(ids[0 if step > 0 else -1])
        k = ids.index(here) + step
        if not 0 <= k < len(ids):
            return False
        return self.request(ids[k])

    # ------------------------------------------------------------------ opening
    def take_image(self, item_id: str):
        """The image (from the prefetch worker when it is ready, else read now)."""
        image = self.prefetch.take(item_id)
        return image if image is not None else self.c.project.load_image(item_id, mapped=True)

    def shown(self, item_id: str) -> None:
        """The item is on screen: decode its neighbours ahead."""
        self.prefetch.want(self.neighbours(item_id))

    def cancel_opening(self) -> None:
        if self.opening is not None:
            self.prefetch.drop(self.opening)
            self.opening = None
            self.c.itemLoading.emit("")  # nothing is loading any more

    def request(self, item_id: str) -> bool:
        """Open an item because the user asked for it (list click, N, PageDown, slider).

        Small or already decoded items open at once. A large item that is not decoded yet
        is decoded on the prefetch worker: itemLoading is emitted now, currentItemChanged
        when it is shown; the current item stays usable meanwhile, and a newer request
        replaces this one. False when the item cannot be opened now."""
        c = self.c
        if c.project is None:
            return False
        if self.opening is not None and self.opening != item_id:
            self.cancel_opening()
        if item_id == c.item_id:
            return True
        try:
            item = c.project.item(item_id)
        except MaskLoopError as e:
            c.error.emit(e.one_line())
            return False
        if item.width * item.height < self.ASYNC_PIXELS or self.prefetch.ready(item_id):
            return c.set_current_item(item_id)
        fut = self.prefetch.fetch(item_id)
        if fut is None:
            return c.set_current_item(item_id)
        self.opening = item_id
        c.itemLoading.emit(item_id)
        fut.add_done_callback(lambda _f, iid=item_id: self.prefetch.worker.post(lambda: self._decoded(iid)))
        return True

    def _decoded(self, item_id: str) -> None:
        if item_id != self.opening:
            return  # superseded by a newer request, or the project was closed
        self.opening = None
        c = self.c
        if not c.set_current_item(item_id):
            c.itemLoading.emit("")
            if c.item_id:
                c.currentItemChanged.emit(c.item_id)  # views go back to the item shown

    def stop_counting(self) -> None:
        """Stop counting the instances of unvisited items (benchmarks measure without it)."""
        self._count_timer.stop()

    def shutdown(self) -> None:
        self._count_timer.stop()
        self.prefetch.shutdown()
