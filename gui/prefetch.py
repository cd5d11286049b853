"""Decode the images next to the current one on a worker thread.

Stepping through a stack or a list (N, PageDown) is the common way to move, so while the
user works on one item its neighbours are decoded in the background and the switch takes
no decode time on the GUI thread. Reads go through the engine (Project.load_image); a
failed read is not cached, so the normal synchronous load reports the error.
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Iterable, Optional

import numpy as np


class ImagePrefetcher:
    def __init__(self, max_items: int = 4) -> None:
        self.max_items = max_items
        self._project = None
        self._futures: dict[str, Future] = {}
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="maskloop-prefetch")

    def set_project(self, project) -> None:
        self.clear()
        self._project = project

    def clear(self) -> None:
        for fut in self._futures.values():
            fut.cancel()
        self._futures.clear()

    def want(self, item_ids: Iterable[str]) -> None:
        """Keep (or start) decoding these items; forget the others (bounded memory)."""
        if self._project is None:
            return
        wanted = list(dict.fromkeys(item_ids))[: self.max_items]
        for iid in list(self._futures):
            if iid not in wanted:
                self._futures.pop(iid).cancel()
        project = self._project
        for iid in wanted:
            if iid not in self._futures:
                self._futures[iid] = self._executor.submit(project.load_image, iid)

    def take(self, item_id: str) -> Optional[np.ndarray]:
        """The decoded image when it was prefetched (waiting if it is under way), else None."""
        fut = self._futures.pop(item_id, None)
        if fut is None or fut.cancelled():
            return None
        try:
            return fut.result()
        except Exception:  # the synchronous load repeats it and reports the error properly
            return None

    def shutdown(self) -> None:
        self.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)
