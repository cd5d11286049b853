"""Decode images on a worker thread: the neighbours of the current item, and an item the
user jumped to.

Stepping through a stack or a list (N, PageDown) is the common way to move, so while the
user works on one item its neighbours are decoded in the background and the switch takes
no decode time on the GUI thread. A jump to another large item (`fetch`) is decoded on the
same worker ahead of the neighbours, while the window stays responsive. Reads go through
the engine (Project.load_image); a failed read is not cached, so the normal synchronous
load reports the error.
"""
from __future__ import annotations

from concurrent.futures import Future
from typing import Iterable, Optional

import numpy as np

from .background import Background


def _load(project, item_id: str) -> np.ndarray:
    # mapped: a large uncompressed TIFF page is a view of the file, read as it is shown
    return project.load_image(item_id, mapped=True)


class ImagePrefetcher:
    def __init__(self, max_items: int = 4) -> None:
        self.max_items = max_items
        self._project = None
        self._futures: dict[str, Future] = {}
        self._fetched: set[str] = set()  # asked for by fetch(): kept until taken
        self.worker = Background("prefetch")

    def set_project(self, project) -> None:
        self.clear()
        self._project = project

    def clear(self) -> None:
        for fut in self._futures.values():
            fut.cancel()
        self._futures.clear()
        self._fetched.clear()

    def ready(self, item_id: str) -> bool:
        """True when this item's image is decoded and waiting to be taken."""
        fut = self._futures.get(item_id)
        return fut is not None and fut.done() and not fut.cancelled()

    def fetch(self, item_id: str) -> Optional[Future]:
        """Decode this item next: neighbour decodes that have not started are dropped
        (the switch asks for new ones). The image stays until take() or drop()."""
        if self._project is None:
            return None
        for iid in [i for i in self._futures if i != item_id and i not in self._fetched]:
            if self._futures[iid].cancel():
                del self._futures[iid]
        fut = self._futures.get(item_id)
        if fut is None or fut.cancelled():
            fut = self._futures[item_id] = self.worker.submit(_load, self._project, item_id)
        self._fetched.add(item_id)
        return fut

    def drop(self, item_id: str) -> None:
        """Forget a fetched item the user no longer waits for."""
        self._fetched.discard(item_id)
        fut = self._futures.pop(item_id, None)
        if fut is not None:
            fut.cancel()

    def want(self, item_ids: Iterable[str]) -> None:
        """Keep (or start) decoding these items; forget the others (bounded memory)."""
        if self._project is None:
            return
        wanted = list(dict.fromkeys(item_ids))[: self.max_items]
        for iid in list(self._futures):
            if iid not in wanted and iid not in self._fetched:
                self._futures.pop(iid).cancel()
        project = self._project
        for iid in wanted:
            if iid not in self._futures:
                self._futures[iid] = self.worker.submit(_load, project, iid)

    def take(self, item_id: str) -> Optional[np.ndarray]:
        """The decoded image when it was prefetched (waiting if it is under way), else None."""
        self._fetched.discard(item_id)
        fut = self._futures.pop(item_id, None)
        if fut is None or fut.cancelled():
            return None
        try:
            return fut.result()
        except Exception:  # the synchronous load repeats it and reports the error properly
            return None

    def future(self, item_id: str) -> Optional[Future]:
        """The decode under way (or done) for this item, if any."""
        return self._futures.get(item_id)

    def shutdown(self) -> None:
        self.clear()
        self.worker.shutdown()
