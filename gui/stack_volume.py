"""The current stack as a volume for the orthogonal views: slices decoded on a worker thread
(through Project.load_image / load_annotation, the project's public loading), nearest the
current slice first, filled in as they arrive. The GUI thread only copies finished slices
into the array and cuts planes out of it.
"""
from __future__ import annotations

import threading
from typing import Optional

import numpy as np
from PyQt5 import QtCore

from engine.errors import MaskLoopError
from engine.jobs import CancelToken

MAX_BYTES = 2 << 30   # a larger stack is not cached whole (the views say so)
BATCH = 8             # slices handed to the GUI thread at a time


def outward(n: int, start: int) -> list[int]:
    """0..n-1 ordered by distance from start (start, start+1, start-1, ...)."""
    order = [start]
    for d in range(1, n):
        order += [k for k in (start + d, start - d) if 0 <= k < n]
    return order


class StackVolume(QtCore.QObject):
    progressed = QtCore.pyqtSignal(int, int)   # slices read, total
    updated = QtCore.pyqtSignal()              # new slices or annotations are in
    _batch = QtCore.pyqtSignal(object)         # internal: (generation, [(k, image, ann)])

    def __init__(self, controller, parent=None) -> None:
        super().__init__(parent)
        self.controller = controller
        self.ids: list[str] = []
        self.source: Optional[int] = None
        self.volume: Optional[np.ndarray] = None
        self.filled = np.zeros(0, bool)
        self.anns: list = []
        self.error = ""
        self._shown: Optional[str] = None   # the slice on the canvas, and its annotation
        self._shown_ann = None
        self._slice_boxes: list = []  # per slice: (instances, (m, 4) boxes x0 y0 x1 y1) or None
        self._boxes = None            # all of them but the canvas slice's, joined
        self._gen = 0
        self._cancel: Optional[CancelToken] = None
        self._batch.connect(self._on_batch, QtCore.Qt.QueuedConnection)
        controller.currentItemChanged.connect(self._on_item)
        controller.projectClosed.connect(self.stop)

    # ------------------------------------------------------------------ loading
    @property
    def n(self) -> int:
        return len(self.ids)

    @property
    def done(self) -> int:
        return int(self.filled.sum())

    def spacing(self) -> tuple[float, float, float]:
        """(dz, dy, dx) of the stack; 1 where the data carries none."""
        ctl = self.controller
        if self.source is None or ctl.project is None:
            return (1.0, 1.0, 1.0)
        geom = getattr(ctl.project.sources[self.source], "geometry", None)
        return tuple(geom.spacing) if geom is not None else (1.0, 1.0, 1.0)

    def load(self, item_id: Optional[str] = None) -> None:
        """Start reading the stack of `item_id` (default: current) unless it is loaded."""
        ctl = self.controller
        item_id = item_id or ctl.item_id
        if item_id is None or ctl.project is None:
            return
        ids = ctl.slice_items(item_id)
        if len(ids) <= 1:
            self.stop()
            return
        if ids == self.ids and (self._cancel is not None or self.done == self.n or self.error):
            return
        self.stop()
        item = ctl.project.item(item_id)
        self.ids, self.source, self.error = list(ids), item.source, ""
        self.filled = np.zeros(len(ids), bool)
        self.anns = [None] * len(ids)
        self._slice_boxes, self._boxes = [None] * len(ids), None
        self.volume = None
        channels = 1 if ctl.image is None or ctl.image.ndim == 2 else ctl.image.shape[2]
        nbytes = len(ids) * item.height * item.width * channels * (ctl.image.itemsize if ctl.image is not None else 2)
        if nbytes > MAX_BYTES:
            self.error = f"stack too large to view across slices here ({nbytes / 2**30:.1f} GiB)"
            self.updated.emit()
            return
        self._gen += 1
        gen, cancel, project, emit = self._gen, CancelToken(), ctl.project, self._batch.emit
        self._cancel = cancel
        order = outward(len(ids), ids.index(item_id))

        def work():
            batch = []
            for k in order:
                if cancel.cancelled:
                    return
                try:
                    batch.append((k, project.load_image(ids[k]), project.load_annotation(ids[k])))
                except MaskLoopError as e:
                    batch.append((k, None, e.one_line()))
                if len(batch) >= BATCH:
                    if not _emit(emit, (gen, batch)):
                        return
                    batch = []
            _emit(emit, (gen, batch + [None]))  # None: the end
        threading.Thread(target=work, name="maskloop-stack-volume", daemon=True).start()

    def stop(self) -> None:
        if self._cancel is not None:
            self._cancel.cancel()
            self._cancel = None
        self._gen += 1
        self.ids, self.source, self.volume = [], None, None
        self.filled, self.anns = np.zeros(0, bool), []
        self._slice_boxes, self._boxes = [], None

    def _on_batch(self, payload) -> None:
        gen, batch = payload
        if gen != self._gen:
            return
        for entry in batch:
            if entry is None:
                self._cancel = None
                continue
            k, image, ann = entry
            if image is None:
                self.error = ann
                continue
            if self.volume is None:
                self.volume = np.zeros((self.n,) + image.shape, image.dtype)
            if image.shape != self.volume.shape[1:]:
                self.error = f"slice {k + 1} is {image.shape}, not {self.volume.shape[1:]}"
                continue
            self.volume[k] = image
            self.filled[k] = True
            if self.anns[k] is None:  # a slice visited meanwhile is newer than its file
                self._set_ann(k, ann)
        self.progressed.emit(self.done, self.n)
        self.updated.emit()

    def _on_item(self, item_id: str) -> None:
        """The slice just left keeps its annotation as edited here."""
        if self._shown in self.ids and self._shown_ann is not None:
            self._set_ann(self.ids.index(self._shown), self._shown_ann)
        self._boxes = None  # the slice on the canvas is read live, the others from here
        self._shown = item_id
        self._shown_ann = self.controller.annotation

    # ------------------------------------------------------------------ planes
    def annotation(self, k: int):
        ctl = self.controller
        if self.ids and self.ids[k] == ctl.item_id:
            return ctl.annotation
        return self.anns[k]

    def plane(self, axis: str, pos: int) -> Optional[np.ndarray]:
        """Raw values of the XZ plane at row y=pos (axis 'xz') or the YZ plane at column
        x=pos ('yz'): shape (slices, width or height); None before the first slice."""
        if self.volume is None:
            return None
        return self.volume[:, pos, :] if axis == "xz" else self.volume[:, :, pos]

    def _set_ann(self, k: int, ann) -> None:
        self.anns[k] = ann
        boxes = [(i.x0, i.y0, i.x0 + i.mask.shape[1], i.y0 + i.mask.shape[0]) for i in ann.instances]
        self._slice_boxes[k] = ([(k, i) for i in ann.instances], np.array(boxes, np.int64).reshape(-1, 4))
        self._boxes = None

    def _stored_boxes(self) -> tuple[list, np.ndarray]:
        """Every instance of the slices not on the canvas, with its box in one array, so a
        plane finds the instances it cuts with one vectorised test (not a loop per slice)."""
        if self._boxes is None:
            insts, arrays = [], [np.zeros((0, 4), np.int64)]
            for k, entry in enumerate(self._slice_boxes):
                if entry is not None and self.ids[k] != self.controller.item_id:
                    insts += entry[0]
                    arrays.append(entry[1])
            self._boxes = (insts, np.concatenate(arrays))
        return self._boxes

    def mask_plane(self, axis: str, pos: int, color_of, hidden=frozenset()) -> np.ndarray:
        """Colour numbers (color_of(instance) + 1; 0 = none) of the masks cut by the plane."""
        length = self.volume.shape[2] if axis == "xz" else self.volume.shape[1]
        out = np.zeros((self.n, length), np.int32)
        insts, boxes = self._stored_boxes()
        lo, hi = (1, 3) if axis == "xz" else (0, 2)
        hits = [insts[j] for j in np.flatnonzero((boxes[:, lo] <= pos) & (pos < boxes[:, hi])).tolist()]
        if self.controller.item_id in self.ids and self.controller.annotation is not None:
            k = self.ids.index(self.controller.item_id)
            hits += [(k, inst) for inst in self.controller.annotation.instances]  # live edits
        for k, inst in sorted(hits, key=lambda h: h[0]):  # (stable: the list order within a slice)
            if inst.label in hidden:
                continue
            if axis == "xz":
                if not inst.y0 <= pos < inst.y0 + inst.height:
                    continue
                row, start = inst.mask[pos - inst.y0], inst.x0
            else:
                if not inst.x0 <= pos < inst.x0 + inst.width:
                    continue
                row, start = inst.mask[:, pos - inst.x0], inst.y0
            seg = out[k, max(0, start):start + len(row)]
            seg[row[max(0, -start):max(0, -start) + len(seg)]] = color_of(inst) + 1
        return out


def _emit(emit, payload) -> bool:
    try:
        emit(payload)
        return True
    except RuntimeError:  # the receiver is gone
        return False
